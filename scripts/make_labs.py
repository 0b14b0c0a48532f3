#!/usr/bin/env python
"""Regenerate the student labs from the instructor sources.

For every lab (``solutions/<lab>/<lab>.md``, jupytext MyST with nbgrader cell metadata):

1. jupytext turns the MyST source into ``solutions/<lab>/<lab>.ipynb`` (git-ignored), keeping
   the nbgrader metadata of every cell;
2. ``nbgrader generate_assignment <lab> --force`` runs from the course root (the repository
   root, see ``nbgrader_config.py``) and writes the student version ``labs/<lab>/<lab>.ipynb``,
   with solutions replaced by ``raise NotImplementedError()`` and hidden tests removed;
3. the student notebook is normalised (no outputs, no execution counts, cell ids derived from
   the cell position, no jupytext metadata) so that regenerating gives a byte-identical file.

Usage::

    python scripts/make_labs.py            # every lab under solutions/
    python scripts/make_labs.py lab1       # only lab1
    python scripts/make_labs.py --check    # exit 1 if the committed labs/ are out of date
"""
from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = "solutions"
RELEASE_DIR = "labs"
# Instructor scripts a course directory needs (nbgrader_config.py loads the plug-ins; grading runs grade.py).
COURSE_SCRIPTS = ("gradlab_nbgrader.py", "make_labs.py", "grade.py")
# Notebook-level metadata kept in generated notebooks; everything else (jupytext's
# text_representation, editor state) is dropped.
KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")


def find_labs(root: Path = ROOT) -> list[str]:
    """Names of the labs under ``root/solutions``: every ``<lab>/<lab>.md``."""
    return sorted(p.parent.name for p in (root / SOURCE_DIR).glob("*/*.md") if p.stem == p.parent.name)


def source_md(lab: str, root: Path = ROOT) -> Path:
    return root / SOURCE_DIR / lab / f"{lab}.md"


def source_ipynb(lab: str, root: Path = ROOT) -> Path:
    return root / SOURCE_DIR / lab / f"{lab}.ipynb"


def release_ipynb(lab: str, root: Path = ROOT) -> Path:
    return root / RELEASE_DIR / lab / f"{lab}.ipynb"


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Make ``nb`` deterministic: stable cell ids, no outputs, minimal notebook metadata."""
    nb.metadata = nbformat.from_dict({k: nb.metadata[k] for k in KEEP_NOTEBOOK_METADATA if k in nb.metadata})
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index:03d}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return nb


def build_source(lab: str, root: Path = ROOT) -> Path:
    """Convert ``solutions/<lab>/<lab>.md`` into the instructor notebook ``solutions/<lab>/<lab>.ipynb``."""
    md = source_md(lab, root)
    if not md.is_file():
        raise FileNotFoundError(f"lab {lab!r}: no source {md}")
    nb = normalise(jupytext.read(md, fmt="md:myst"))
    out = source_ipynb(lab, root)
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin directory first on PATH: nbgrader's gradebook
    runs the ``alembic`` executable, which lives there even when the venv is not activated."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def nbgrader(*args: str, root: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader <args>`` with this interpreter, from the course root ``root``."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    return subprocess.run(cmd, cwd=root, env=env or venv_env(), capture_output=True, text=True)


def generate_assignment(lab: str, root: Path = ROOT) -> Path:
    """Run ``nbgrader generate_assignment`` from the course root and normalise the result."""
    result = nbgrader("generate_assignment", lab, "--force", "--log-level=WARN", root=root)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"nbgrader generate_assignment {lab} failed (exit {result.returncode})")
    out = release_ipynb(lab, root)
    if not out.is_file():
        raise RuntimeError(f"nbgrader generate_assignment {lab} did not write {out}")
    nb = normalise(nbformat.read(out, as_version=4))
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out


def make_lab(lab: str, root: Path = ROOT) -> Path:
    """Source → instructor notebook → student notebook; returns the student notebook's path."""
    build_source(lab, root)
    return generate_assignment(lab, root)


def make_course(labs: list[str], dest: Path, root: Path = ROOT) -> None:
    """Lay out a fresh course directory in ``dest`` (config + lab sources) and generate ``labs``."""
    shutil.copy2(root / "nbgrader_config.py", dest / "nbgrader_config.py")
    (dest / "scripts").mkdir(exist_ok=True)
    for script in COURSE_SCRIPTS:
        shutil.copy2(root / "scripts" / script, dest / "scripts" / script)
    for lab in labs:
        shutil.copytree(root / SOURCE_DIR / lab, dest / SOURCE_DIR / lab, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
        make_lab(lab, dest)


def check(labs: list[str], root: Path = ROOT) -> list[str]:
    """Regenerate ``labs`` in a temporary course directory; return the labs whose committed
    student notebook differs (printing a diff for each)."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="gradlab-labs-") as tmp:
        make_course(labs, Path(tmp), root)
        for lab in labs:
            fresh, committed = release_ipynb(lab, Path(tmp)), release_ipynb(lab, root)
            want = fresh.read_text(encoding="utf-8")
            got = committed.read_text(encoding="utf-8") if committed.is_file() else ""
            if want != got:
                stale.append(lab)
                diff = difflib.unified_diff(got.splitlines(), want.splitlines(), str(committed), "regenerated",
                                            lineterm="", n=2)
                print("\n".join(list(diff)[:80]))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labs", nargs="*", help="labs to build (default: every lab under solutions/)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary directory and fail if labs/ is out of date")
    args = parser.parse_args(argv)
    known = find_labs()
    labs = args.labs or known
    unknown = sorted(set(labs) - set(known))
    if unknown:
        parser.error(f"unknown lab(s) {unknown}; known: {known}")
    if args.check:
        stale = check(labs)
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make labs` and commit labs/", file=sys.stderr)
            return 1
        print(f"labs up to date: {', '.join(labs)}")
        return 0
    for lab in labs:
        print(f"{source_md(lab).relative_to(ROOT)} -> {make_lab(lab).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
