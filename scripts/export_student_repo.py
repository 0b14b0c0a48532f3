#!/usr/bin/env python
"""Export the student-facing repository: everything committed here except the instructor material.

    python scripts/export_student_repo.py DEST        # or: make student-repo DEST=../gradlab-public

The secrecy model (see the instructor guide, book/instructors.md): this repository, with the solutions and
hidden tests in ``solutions/``, the grading configuration and tools, is the *instructor* repository and stays
private. Students get the repository this script writes: the book, the student notebooks in ``labs/``, the
``gradlab`` package and its tests. It is what gets published at the repository URL of ``_config.yml``, which is
where every Colab badge and install cell points.

DEST must not exist or be empty. Only files tracked by git are exported (``git ls-files``), so nothing
generated or ignored (gradebook, submissions, grades) can leak either.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Paths (files, or folders ending in "/") that only instructors get.
INSTRUCTOR_ONLY = (
    "solutions/",
    "nbgrader_config.py",
    "scripts/make_labs.py",
    "scripts/grade.py",
    "scripts/gradlab_nbgrader.py",
    "scripts/export_student_repo.py",
    "tests/test_labs.py",
    "tests/test_grading.py",
    "tests/test_secrecy.py",
    "tests/test_colab.py",
)
# Written into the export, so that its own tests know they run on the student repository.
MARKER = "STUDENT_REPOSITORY.md"
MARKER_TEXT = """# Student repository

This repository is exported from the course's instructor repository by `scripts/export_student_repo.py`.
It holds the book, the lab notebooks in `labs/` and the `gradlab` package; the solutions, the hidden tests
and the grading tools stay with the instructors.
"""


def instructor_only(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in INSTRUCTOR_ONLY)


def tracked_files(root: Path = ROOT) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and (root / p).is_file())


def student_makefile(text: str) -> str:
    """The Makefile without the targets that run instructor scripts."""
    blocks = text.split("\n\n")
    kept = [b for b in blocks if not any(f"scripts/{Path(p).name}" in b for p in INSTRUCTOR_ONLY if p.startswith("scripts/"))]
    dropped = {m.group(1) for b in blocks if b not in kept for m in re.finditer(r"^([\w-]+):", b, re.M)}
    result = "\n\n".join(kept)
    return re.sub(r"^(\.PHONY:.*)$", lambda m: " ".join(w for w in m.group(1).split() if w not in dropped),
                  result, flags=re.M)


def export(dest: Path, root: Path = ROOT) -> list[str]:
    """Write the student repository into ``dest``; return the exported paths."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"DEST {dest} is not empty")
    exported = []
    for path in tracked_files(root):
        if instructor_only(path):
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path == "Makefile":
            target.write_text(student_makefile((root / path).read_text()))
        else:
            shutil.copy2(root / path, target)
        exported.append(path)
    (dest / MARKER).write_text(MARKER_TEXT)
    return exported + [MARKER]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="an empty or new folder")
    args = parser.parse_args(argv)
    try:
        paths = export(args.dest)
    except FileExistsError as error:
        parser.error(str(error))
    print(f"exported {len(paths)} files to {args.dest} (without {', '.join(INSTRUCTOR_ONLY)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
