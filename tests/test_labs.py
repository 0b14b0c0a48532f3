"""The nbgrader pipeline: solutions/<lab>/<lab>.md -> labs/<lab>/<lab>.ipynb -> autograded scores.

Every test is parametrized over every lab under solutions/, so a new lab is covered as soon as its
source exists. Each lab gets one temporary course directory (config + its source, generated with
scripts/make_labs.py), shared by that lab's tests; autograding and validation execute the lab's
solution and student notebooks there. The labs' courses are independent, so two labs can run on two
workers at once (one xdist group per lab).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import types
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_labs  # noqa: E402

LABS = make_labs.find_labs()
# One course per lab, one xdist group per course (tests/conftest.py): its tests run on one worker.
LAB_COURSES = [pytest.param(lab, id=lab, marks=[pytest.mark.nbgrader, pytest.mark.xdist_group(f"labs-{lab}")])
               for lab in LABS]
REGION = re.compile(
    r"^[ \t]*### BEGIN (SOLUTION|HIDDEN TESTS)[ \t]*\n(.*?)^[ \t]*### END \1[ \t]*$", re.M | re.S
)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
# Lines nbgrader writes in place of a solution.
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()"}
COLAB_URL = "gradlab @ git+https://github.com/gradlab/gradlab"


@contextlib.contextmanager
def venv_on_path():
    """nbgrader's Gradebook runs the `alembic` executable: put this interpreter's bin/ first on PATH."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = make_labs.venv_env()["PATH"]
    try:
        yield
    finally:
        os.environ["PATH"] = old


def notebook_lines(nb: nbformat.NotebookNode) -> set[str]:
    return {line.strip() for cell in nb.cells for line in cell.source.splitlines() if line.strip()}


def protected_lines(md_text: str) -> set[str]:
    """Stripped lines inside SOLUTION / HIDDEN TESTS regions that appear nowhere else in the source."""
    inside = {line.strip() for m in REGION.finditer(md_text) for line in m.group(2).splitlines()}
    outside = {line.strip() for line in REGION.sub("", md_text).splitlines()}
    return {line for line in inside - outside - STUB_LINES if line}


def leaked_lines(md_text: str, nb: nbformat.NotebookNode) -> list[str]:
    return sorted(protected_lines(md_text) & notebook_lines(nb))


def grade_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def cell_summary(nb_path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(nb_path, as_version=4)
    return [(c.metadata.get("nbgrader", {}).get("grade_id", c.cell_type), c.source) for c in nb.cells]


@pytest.fixture(autouse=True)
def one_thread_kernels(monkeypatch):
    """Kernels started by nbgrader inherit this: on a busy 2-core machine torch's thread pool only
    adds contention for the lab's tiny tensors (the same reason as conftest.py's set_num_threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module", params=LAB_COURSES)
def lab_course(request, tmp_path_factory) -> tuple[str, Path]:
    """(lab, a fresh nbgrader course with the config and that lab's source, the lab generated)."""
    lab = request.param
    root = tmp_path_factory.mktemp(f"course-{lab}")
    make_labs.make_course([lab], root)
    return lab, root


def test_there_are_labs():
    assert "lab1" in LABS, LABS


def test_config_ignores_myst_sources():
    """The MyST sources hold the solutions: nbgrader must never copy them into a release."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert isinstance(config, Config)
    assert "*.md" in config.CourseDirectory.ignore
    assert config.CourseDirectory.source_directory == "solutions"
    assert config.CourseDirectory.release_directory == "labs"
    assert Path(config.CourseDirectory.root) == ROOT


# ----------------------------------------------------------------- (1) up to date


def test_committed_lab_is_up_to_date(lab_course):
    lab, course = lab_course
    committed, fresh = make_labs.release_ipynb(lab), make_labs.release_ipynb(lab, course)
    assert committed.is_file(), f"{committed} is missing: run `make labs`"
    assert sorted(p.name for p in fresh.parent.iterdir()) == [f"{lab}.ipynb"], "only the notebook is released"
    if committed.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"):
        return
    got, want = cell_summary(committed), cell_summary(fresh)
    for index, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{committed} is stale at cell {index} ({w[0]}): run `make labs`"
    assert len(got) == len(want), f"{committed} has {len(got)} cells, regenerated {len(want)}: run `make labs`"
    pytest.fail(f"{committed} differs from the regenerated notebook (metadata): run `make labs`")


@pytest.mark.nbgrader  # make_labs.check runs nbgrader generate_assignment
def test_check_mode_detects_a_stale_lab(tmp_path):
    lab = LABS[0]
    shutil.copy2(ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "solutions" / lab, tmp_path / "solutions" / lab,
                    ignore=shutil.ignore_patterns("*.ipynb"))
    stale = make_labs.release_ipynb(lab, tmp_path)
    stale.parent.mkdir(parents=True)
    nb = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    nb.cells[-1].source += "\n"
    nbformat.write(nb, stale)
    assert make_labs.check([lab], root=tmp_path) == [lab]


# -------------------------------------------------------------------- (2) leaks


@pytest.mark.parametrize("lab", LABS)
def test_no_solution_or_hidden_test_leaks(lab):
    md_text = make_labs.source_md(lab).read_text(encoding="utf-8")
    regions = [m.group(1) for m in REGION.finditer(md_text)]
    assert "SOLUTION" in regions and "HIDDEN TESTS" in regions, "a lab has solutions and hidden tests"
    # The check must be able to fail: the instructor notebook itself is full of protected lines.
    instructor = jupytext.reads(md_text, fmt="md:myst")
    assert leaked_lines(md_text, instructor), "protected_lines() finds nothing: the leak check is broken"

    student = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    leaks = leaked_lines(md_text, student)
    assert not leaks, f"labs/{lab}/{lab}.ipynb contains solution or hidden-test lines: {leaks[:5]}"
    text = make_labs.release_ipynb(lab).read_text(encoding="utf-8")
    for marker in MARKERS:
        assert marker not in text, f"labs/{lab}/{lab}.ipynb still contains '{marker}'"
    for cell in student.cells:
        assert cell.cell_type != "code" or not cell.outputs, "student notebooks are committed without outputs"


@pytest.mark.parametrize("lab", LABS)
def test_every_solution_cell_is_stubbed_and_every_test_cell_locked(lab):
    student = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in student.cells]
    solutions = [c for c, m in zip(student.cells, meta) if m.get("solution")]
    tests = [c for c, m in zip(student.cells, meta) if m.get("grade") and not m.get("solution")]
    assert solutions and tests
    for cell in solutions:
        if cell.cell_type == "markdown":  # a written answer: graded by hand, so it must carry points
            assert cell.metadata.nbgrader.get("grade") and cell.metadata.nbgrader.points > 0, cell.metadata
            continue
        # Code answers are stubbed with a NotImplementedError; written answers (manually graded
        # markdown cells) with nbgrader's placeholder.
        stub = "raise NotImplementedError()" if cell.cell_type == "code" else "YOUR ANSWER HERE"
        assert stub in cell.source, cell.metadata.nbgrader.grade_id
    for cell in tests:
        grade_id = cell.metadata.nbgrader.grade_id
        assert cell.metadata.nbgrader.locked and cell.metadata.nbgrader.points > 0, grade_id
        assert grade_id.startswith("test-") and grade_id[5:] in {c.metadata.nbgrader.grade_id for c in solutions}


# ------------------------------------------------------------------ (3) Colab cell


@pytest.mark.parametrize("lab", LABS)
def test_colab_install_cell_first_and_inert_outside_colab(lab, monkeypatch):
    from IPython.core.inputtransformer2 import TransformerManager

    first = nbformat.read(make_labs.release_ipynb(lab), as_version=4).cells[0]
    assert first.cell_type == "code", "the first cell of a lab is the Colab install cell"
    assert "google.colab" in first.source and COLAB_URL in first.source, first.source
    code = TransformerManager().transform_cell(first.source)

    def run(in_colab: bool, override: str | None = None) -> list:
        """The pip commands the cell runs, with IPython's {name} expansion done from the cell's namespace."""
        calls, namespace = [], {}
        shell = types.SimpleNamespace(run_line_magic=lambda *args: calls.append(args),
                                      system=lambda *args: calls.append(args))
        if in_colab:
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        if override is None:
            monkeypatch.delenv("GRADLAB_INSTALL", raising=False)
        else:
            monkeypatch.setenv("GRADLAB_INSTALL", override)
        namespace["get_ipython"] = lambda: shell
        exec(compile(code, "colab-cell", "exec"), namespace)
        return [(name, line.format(**namespace)) for name, line in calls]

    assert run(in_colab=False) == [], "outside Colab the install cell must do nothing"
    calls = run(in_colab=True)
    assert len(calls) == 1 and calls[0][0] == "pip" and COLAB_URL in calls[0][1], calls
    calls = run(in_colab=False, override="/some/checkout")
    assert len(calls) == 1 and '"/some/checkout"' in calls[0][1] and COLAB_URL not in calls[0][1], calls


# ----------------------------------------------------------- (4) autograde end to end


def test_autograde_solution_full_marks_student_version_zero(lab_course):
    from nbgrader.api import Gradebook

    lab, course = lab_course

    db_url = f"sqlite:///{course / 'gradebook.db'}"
    submissions = {"good": make_labs.source_ipynb(lab, course), "bad": make_labs.release_ipynb(lab, course)}
    with venv_on_path(), Gradebook(db_url, course_id="gradlab") as gb:
        for student in submissions:
            gb.update_or_create_student(student)
    for student, notebook in submissions.items():
        dest = course / "submitted" / student / lab / f"{lab}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, dest)

    result = make_labs.nbgrader("autograde", lab, "--force", root=course)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for student in submissions:
        assert (course / "autograded" / student / lab / f"{lab}.ipynb").is_file(), f"{student} was not autograded"

    released = grade_cells(nbformat.read(make_labs.release_ipynb(lab, course), as_version=4))
    manual = {c.metadata.nbgrader.grade_id for c in released if c.cell_type == "markdown"}
    with venv_on_path(), Gradebook(db_url, course_id="gradlab") as gb:
        max_score = gb.find_assignment(lab).max_score
        good, bad = (gb.find_submission(lab, s) for s in ("good", "bad"))
        good_grades = [g for nb in good.notebooks for g in nb.grades]
        good_lost = [(g.name, g.score, g.max_score) for g in good_grades
                     if g.name not in manual and g.score != g.max_score]
        # Written answers wait for a human: flagged for manual grading, no automatic score.
        waiting = {g.name for g in good_grades if g.needs_manual_grade and g.auto_score is None}
        bad_won = [(g.name, g.score) for nb in bad.notebooks for g in nb.grades if g.score]
        bad_waiting = [g.name for nb in bad.notebooks for g in nb.grades if g.needs_manual_grade]
        auto_score = good.score
        # What the instructor does in formgrader: give the written answers their marks.
        for g in good_grades:
            if g.name in manual:
                g.manual_score = g.max_score
        gb.db.commit()
        graded_score = gb.find_submission(lab, "good").score
        scores = auto_score, bad.score
    expected_max = sum(c.metadata.nbgrader.points for c in released)
    manual_points = sum(c.metadata.nbgrader.points for c in released if c.cell_type == "markdown")
    assert max_score == expected_max > 0
    assert not good_lost and scores[0] == max_score - manual_points, f"solution lost points: {good_lost}"
    assert waiting == manual, f"written answers should await manual grading: {waiting} vs {manual}"
    assert graded_score == max_score, "after manual grading the solution should have full marks"
    # An unanswered written answer is scored 0 automatically (nbgrader compares it with the release).
    assert not bad_won and scores[1] == 0 and not bad_waiting, f"unmodified student notebook scored: {bad_won}"


# --------------------------------------------------------------- (5) nbgrader validate


def test_validator_passes_solution_and_fails_student_version(lab_course):
    from nbgrader.validator import Validator
    from traitlets.config import Config

    lab, course = lab_course

    config = Config()
    config.Execute.timeout = 300
    solution = Validator(config=config).validate(str(make_labs.source_ipynb(lab, course)))
    assert solution == {}, f"the solution notebook does not validate: {solution}"

    student_nb = make_labs.release_ipynb(lab, course)
    student = Validator(config=config).validate(str(student_nb))
    assert set(student) == {"failed"}, student.keys()
    num_tests = len(grade_cells(nbformat.read(student_nb, as_version=4)))
    assert len(student["failed"]) == num_tests, "every test cell fails on the unmodified student notebook"
