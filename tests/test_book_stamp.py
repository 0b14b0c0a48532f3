"""scripts/book_stamp.py: the book is built once, and a build is reused only while its sources are unchanged."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import book_stamp  # noqa: E402


@pytest.fixture
def tree(tmp_path) -> Path:
    """A miniature repository with one file of every kind the build reads, and some it does not."""
    files = {
        "book/intro.md": "# intro", "book/_ext/ext.py": "x = 1", "_config.yml": "title: t", "_toc.yml": "root: i",
        "gradlab/__init__.py": "", "gradlab/score.py": "a = 1", "references.bib": "@book{a,}",
        "benchmarks/results/es.md": "| a |", "requirements.txt": "torch", "pyproject.toml": "[project]",
        "tests/test_x.py": "", "README.md": "readme", "labs/lab1/lab1.ipynb": "{}",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def stamped(root: Path) -> None:
    (root / "_build" / "html").mkdir(parents=True, exist_ok=True)
    (root / "_build" / "html" / "index.html").write_text("<html></html>")
    book_stamp.stamp_path(root).write_text(book_stamp.digest(root) + "\n")


@pytest.mark.parametrize("name", ["book/intro.md", "book/_ext/ext.py", "_config.yml", "_toc.yml", "gradlab/score.py",
                                  "references.bib", "benchmarks/results/es.md", "requirements.txt", "pyproject.toml"])
def test_an_edit_to_any_source_makes_the_build_stale(tree, name):
    stamped(tree)
    assert book_stamp.is_current(tree)
    (tree / name).write_text((tree / name).read_text() + " ")
    assert not book_stamp.is_current(tree), f"an edit to {name} must force a rebuild"


def test_new_and_renamed_sources_count_but_other_files_and_caches_do_not(tree):
    stamped(tree)
    for name in ("tests/test_x.py", "README.md", "labs/lab1/lab1.ipynb", "gradlab/__pycache__/score.cpython-311.pyc",
                 "book/.ipynb_checkpoints/intro-checkpoint.md"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("changed")
    assert book_stamp.is_current(tree), "files the build does not read must not force a rebuild"
    (tree / "gradlab" / "new.py").write_text("")
    assert not book_stamp.is_current(tree)
    (tree / "gradlab" / "new.py").unlink()
    assert book_stamp.is_current(tree)
    (tree / "gradlab" / "score.py").rename(tree / "gradlab" / "scores.py")
    assert not book_stamp.is_current(tree), "a renamed module changes the build"


def test_no_stamp_or_no_html_is_not_current(tree):
    assert not book_stamp.is_current(tree)
    stamped(tree)
    (tree / "_build" / "html" / "index.html").unlink()
    assert not book_stamp.is_current(tree)


def test_a_failed_build_leaves_no_stamp_and_a_good_one_stamps_the_sources_it_started_from(tree, monkeypatch):
    stamped(tree)
    calls = []

    def failing(command, **kwargs):
        calls.append(command)
        return 1

    monkeypatch.setattr(subprocess, "call", failing)
    assert book_stamp.build(tree) == 1
    assert not book_stamp.stamp_path(tree).exists(), "a failed build must remove the old stamp"
    assert calls and calls[0][1:] == ["build", str(tree), "-W", "-n", "--keep-going"], calls

    before = book_stamp.digest(tree)

    def succeeding_while_a_page_is_edited(command, **kwargs):
        (tree / "book" / "intro.md").write_text("# edited during the build")
        return 0

    monkeypatch.setattr(subprocess, "call", succeeding_while_a_page_is_edited)
    assert book_stamp.build(tree, log=tree / "_build" / "log.txt") == 0
    assert book_stamp.stamp_path(tree).read_text().strip() == before
    assert not book_stamp.is_current(tree), "an edit during the build must leave the build stale"


def test_make_builds_the_book_with_the_stamp_and_test_reuses_it():
    makefile = (ROOT / "Makefile").read_text()
    book = makefile.split("\nbook: setup\n", 1)[1].split("\n\n", 1)[0]
    assert "scripts/book_stamp.py build" in book, book
    test = makefile.split("\ntest: setup\n", 1)[1].split("\n\n", 1)[0]
    assert "jupyter-book" not in test and "--dist loadgroup" in makefile, test
    fast = makefile.split("\ntest-fast: setup\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(r'-m "not slow"', fast), fast


def test_files_the_build_writes_into_the_sources_do_not_make_it_stale(tree):
    """The build saves the explorers' frames under book/_static/frames: its own output, not a source."""
    stamped(tree)
    frame = tree / "book" / "_static" / "frames" / "ch3" / "frame0.png"
    frame.parent.mkdir(parents=True)
    frame.write_bytes(b"\x89PNG")
    assert book_stamp.is_current(tree)
    (tree / "book" / "_static" / "gradlab.css").write_text("a {}")  # a real static source still counts
    assert not book_stamp.is_current(tree)
