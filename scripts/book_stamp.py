#!/usr/bin/env python
"""Build the book strictly once, and say whether a finished build still matches its sources.

    python scripts/book_stamp.py build    # strict build (as `make book`), then write the stamp
    python scripts/book_stamp.py check    # exit 0 when _build/html is a strict build of the current sources
    python scripts/book_stamp.py ensure   # build only when the check fails (what `make test` runs)
    python scripts/book_stamp.py digest   # print the sources' hash

The stamp (``_build/.gradlab-book-stamp``) holds a SHA-256 of every file the build reads: the book's
pages, configuration and extension (``book/``, ``_config.yml``, ``_toc.yml``), the package it imports and
documents (``gradlab/``), the bibliography, the benchmark tables it includes and the pinned toolchain
(``requirements.txt``, ``pyproject.toml``). It is removed before a build and written only after a build
that succeeded with ``-W -n --keep-going`` (every warning an error), so a stamp that matches means: this
HTML is what a strict build of these sources gives. A failed build leaves no stamp and exits non-zero.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("book", "_config.yml", "_toc.yml", "gradlab", "references.bib", "benchmarks/results",
           "requirements.txt", "pyproject.toml")
SKIP = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
# Written BY the build (explorer frames saved as files, git-ignored): not a source of it.
GENERATED = ("book/_static/frames",)
STRICT = ["-W", "-n", "--keep-going"]


def html_dir(root: Path = ROOT) -> Path:
    return root / "_build" / "html"


def stamp_path(root: Path = ROOT) -> Path:
    return root / "_build" / ".gradlab-book-stamp"


def source_files(root: Path = ROOT) -> list[Path]:
    files = []
    for name in SOURCES:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and not SKIP & set(p.relative_to(root).parts)
                      and p.suffix != ".pyc" and not p.relative_to(root).as_posix().startswith(GENERATED)]
    return sorted(files)


def digest(root: Path = ROOT) -> str:
    """SHA-256 over the relative path and the bytes of every source file of the build."""
    h = hashlib.sha256()
    for path in source_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def is_current(root: Path = ROOT) -> bool:
    stamp = stamp_path(root)
    return (stamp.is_file() and (html_dir(root) / "index.html").is_file()
            and stamp.read_text().strip() == digest(root))


def build(root: Path = ROOT, log: Path | None = None) -> int:
    """Strict build into root/_build/html; the stamp is written only when it succeeded.

    The build's output goes to the terminal, or to ``log`` when one is given (the test suite's build)."""
    stamp_path(root).unlink(missing_ok=True)
    want = digest(root)  # hashed before the build: an edit made during the build makes the stamp stale
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(root), *STRICT]
    print("book:", " ".join(command), flush=True)
    start = time.perf_counter()
    if log is None:
        code = subprocess.call(command, cwd=root)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            code = subprocess.call(command, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    if code != 0 or not (html_dir(root) / "index.html").is_file():
        print(f"book: the strict build FAILED (exit status {code}); no stamp written", file=sys.stderr)
        return code or 1
    stamp_path(root).write_text(want + "\n")
    print(f"book: built in {time.perf_counter() - start:.0f} s; stamp {want[:12]} -> {stamp_path(root)}")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "digest":
        print(digest())
        return 0
    if command == "check":
        return 0 if is_current() else 1
    if command == "ensure":
        if is_current():
            print(f"book: {html_dir()} is a strict build of the current sources (stamp matches); not rebuilt")
            return 0
        return build()
    if command == "build":
        return build()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
