"""The secrecy model (book/instructors.md): what students get contains no solution, no hidden test and no
instructor command.

* the student repository written by scripts/export_student_repo.py has no instructor material, no line of
  a solution or a hidden test anywhere, and a Makefile that only runs what it contains;
* the student-facing pages (the lab pages of the book, the student notebooks) never tell students to run an
  instructor command.
(Feedback without hidden-test code and hidden tests that detect delegation to gradlab's reference are
checked by tests/test_grading.py.)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import export_student_repo  # noqa: E402
import make_labs  # noqa: E402

REGION = re.compile(r"^[ \t]*### BEGIN (SOLUTION|HIDDEN TESTS)[ \t]*\n(.*?)^[ \t]*### END \1[ \t]*$", re.M | re.S)
INSTRUCTOR_COMMANDS = re.compile(
    r"make labs|make grade|make student-repo|nbgrader (autograde|generate_assignment|generate_feedback|"
    r"release_assignment|collect|export|db)|scripts/(make_labs|grade|export_student_repo)\.py|solutions/"
)


def protected_lines(kind: str) -> set[str]:
    """Lines of the ``kind`` regions (SOLUTION or HIDDEN TESTS) of every lab that appear nowhere else in its source."""
    lines = set()
    for lab in make_labs.find_labs():
        text = make_labs.source_md(lab).read_text(encoding="utf-8")
        inside = {line.strip() for m in REGION.finditer(text) if m.group(1) == kind for line in m.group(2).splitlines()}
        outside = {line.strip() for line in REGION.sub("", text).splitlines()}
        lines |= {line for line in inside - outside if len(line) > 25}
    return lines


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("student-repo") / "gradlab"
    export_student_repo.export(dest)
    return dest


def test_export_has_the_student_material_and_nothing_of_the_instructors(exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    for lab in make_labs.find_labs():
        assert f"labs/{lab}/{lab}.ipynb" in files
    assert "gradlab/__init__.py" in files and "book/intro.md" in files and "_config.yml" in files
    leaked = sorted(f for f in files if export_student_repo.instructor_only(f))
    assert not leaked, leaked
    assert not (exported / "solutions").exists() and not (exported / "nbgrader_config.py").exists()


def region_runs(kind: str, length: int) -> set[tuple[str, ...]]:
    """Runs of ``length`` consecutive non-blank lines of every lab's solutions (single lines are often idioms
    that a chapter shares, like ``losses.append(loss.item())``; four in a row are the solution)."""
    runs = set()
    for lab in make_labs.find_labs():
        text = make_labs.source_md(lab).read_text(encoding="utf-8")
        for m in REGION.finditer(text):
            if m.group(1) == kind:
                lines = [line.strip() for line in m.group(2).splitlines() if line.strip() and not line.strip().startswith("#")]
                runs |= {tuple(lines[i:i + length]) for i in range(len(lines) - length + 1)}
    return runs


def test_export_contains_no_solution_or_hidden_test_line(exported):
    """No three consecutive hidden-test lines appear anywhere, and no four solution lines outside gradlab:
    the labs rebuild pieces of the public package, whose code students may read (the guide says so; calling
    it earns no points)."""
    hidden, solutions = region_runs("HIDDEN TESTS", 3), region_runs("SOLUTION", 4)
    assert len(hidden) > 20 and len(solutions) > 20, "the check must be able to fail"
    for path in exported.rglob("*"):
        if not path.is_file() or path.suffix not in {".md", ".ipynb", ".py", ".txt", ".yml", ".toml", ""}:
            continue
        name = path.relative_to(exported).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c.get("source", "")) for c in nbformat.reads(text, as_version=4).cells)
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        found = [run for run in zip(lines, lines[1:], lines[2:]) if run in hidden]
        assert not found, f"{name} contains hidden-test code: {found[:1]}"
        if not name.startswith(("gradlab/", "tests/")):
            found = [run for run in zip(lines, lines[1:], lines[2:], lines[3:]) if run in solutions]
            assert not found, f"{name} contains solution code: {found[:1]}"


def test_export_makefile_only_runs_scripts_it_has(exported):
    makefile = (exported / "Makefile").read_text()
    for script in re.findall(r"scripts/[\w.]+\.(?:py|sh)", makefile):
        assert (exported / script).is_file(), f"the student Makefile runs {script}, which is not exported"
    assert "grade" not in re.findall(r"^([\w-]+):", makefile, re.M)
    assert re.search(r"^test: setup$", makefile, re.M) and re.search(r"^book: setup$", makefile, re.M)


def test_export_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_student_repo.export(tmp_path)


def student_texts():
    for page in sorted((ROOT / "book" / "labs").glob("*.md")):
        yield page.relative_to(ROOT).as_posix(), page.read_text(encoding="utf-8")
    for lab in make_labs.find_labs():
        nb = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
        yield f"labs/{lab}", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name,text", list(student_texts()), ids=lambda v: v if "/" in str(v)[:12] else "")
def test_student_pages_name_no_instructor_command(name, text):
    found = sorted({m.group(0) for m in INSTRUCTOR_COMMANDS.finditer(text)})
    assert not found, f"{name} tells students to run instructor commands: {found} (move them to book/instructors.md)"


def test_instructor_command_pattern_can_fail():
    assert INSTRUCTOR_COMMANDS.search("run `make labs` first") and INSTRUCTOR_COMMANDS.search("nbgrader autograde lab1")
