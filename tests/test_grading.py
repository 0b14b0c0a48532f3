"""scripts/grade.py on synthetic submissions, for every lab under solutions/.

For each lab, one temporary course (config, plug-ins, the lab's sources, a real gradebook) receives a batch
of submissions, and ONE run of the grading command grades them all, with short timeouts by configuration.

Most submissions are generic transformations of the lab's solution or student notebook (built here, so a
new lab gets them for free); what only a lab's author can write (a partial solution with its exact score,
a correct solution written differently, correct code that warns or draws a progress bar, an answer that
delegates to gradlab's reference) lives in ``solutions/<lab>/cases.py``.
"""
from __future__ import annotations

import ast
import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_labs  # noqa: E402

LABS = make_labs.find_labs()
# One grading run per lab, one xdist group per lab (tests/conftest.py): a lab's tests share its run.
GRADED_LABS = [pytest.param(lab, id=lab, marks=[pytest.mark.nbgrader, pytest.mark.xdist_group(f"grading-{lab}")])
               for lab in LABS]
REQUIRED_KINDS = {"partial", "alternative", "noisy", "delegation"}
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n(.*?)^[ \t]*### END HIDDEN TESTS", re.M | re.S)
# Short timeouts for the looping cell (the solution runs it in 0.1 s: 4 s + 10 x 0.1 s), and room for the
# slow cells on a machine several times busier than when cell_times.json was measured.
FAST = ["--BoundedExecute.min_timeout=4", "--BoundedExecute.timeout_factor=10"]
STUB = "raise NotImplementedError()"

# Injected into every answer cell by the "attack" submission: replace every helper the test cells name
# (functions and classes, imported or defined in the notebook, except the answers themselves) by an
# object that accepts everything, compares equal to everything and is always true.
SHADOW = '''
class _Anything:
    def __call__(self, *args, **kwargs): return self
    def __getattr__(self, name): return self
    def __getitem__(self, key): return self
    def __iter__(self): return iter(())
    def __bool__(self): return True
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __float__(self): return 1.0
    def __int__(self): return 1
    def __index__(self): return 1
    def __len__(self): return 1
    def __format__(self, spec): return "anything"
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __call__
    __truediv__ = __rtruediv__ = __pow__ = __matmul__ = __rmatmul__ = __call__
    def __abs__(self): return self
    def __neg__(self): return self


for _name, _value in list(globals().items()):
    if (_name in {names!r} and callable(_value) and not isinstance(_value, type(__import__("sys")))):
        globals()[_name] = _Anything()
'''


# ------------------------------------------------------------------------------------------- helpers


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def answer_ids(nb) -> list[str]:
    """Autograded answer cells: code the tests run (written answers, graded by hand, are left out)."""
    return [meta(c)["grade_id"] for c in nb.cells
            if meta(c).get("solution") and not meta(c).get("grade") and c.cell_type == "code"]


def graded_test_ids(nb) -> dict[str, float]:
    return {meta(c)["grade_id"]: meta(c)["points"] for c in nb.cells if meta(c).get("grade") and not meta(c).get("solution")}


def cell(nb, grade_id):
    return next(c for c in nb.cells if meta(c).get("grade_id") == grade_id)


def load_cases(lab: str) -> dict:
    path = ROOT / "solutions" / lab / "cases.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"cases_{lab}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SUBMISSIONS


def defined_names(source: str) -> set[str]:
    """Top-level names a cell binds (functions, classes, assignments)."""
    tree = ast.parse(source.replace(STUB, "pass"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


class Submissions:
    """Builds the generic and the lab-specific submissions of one lab, with what each must score."""

    def __init__(self, lab: str, course: Path):
        self.lab = lab
        self.solution = nbformat.read(make_labs.source_ipynb(lab, course), as_version=4)
        self.student = nbformat.read(make_labs.release_ipynb(lab, course), as_version=4)
        self.answers = answer_ids(self.student)
        self.tests = graded_test_ids(self.student)
        self.max_score = sum(self.tests.values())
        # Answers graded by a person (written answers): a submission that answers them needs manual grading,
        # and its score so far counts the tests only.
        self.manual = {meta(c)["grade_id"]: meta(c)["points"] for c in self.student.cells
                       if meta(c).get("grade") and meta(c).get("solution")}
        self.done = "needs manual grading" if self.manual else "graded"
        self.max_score += sum(self.manual.values())
        self.test_points = sum(self.tests.values())
        self.files: dict[str, bytes] = {}
        self.expected: dict[str, dict] = {}

    def add(self, name: str, nb_or_bytes, **expected) -> None:
        data = nb_or_bytes if isinstance(nb_or_bytes, bytes) else nbformat.writes(nb_or_bytes).encode("utf-8")
        self.files[name] = data
        self.expected[name] = expected

    def copy(self, which: str):
        return nbformat.from_dict(__import__("copy").deepcopy(getattr(self, which)))

    def generic(self) -> None:
        first, second, last = self.answers[0], self.answers[1], self.answers[-1]
        self.add("solution", self.solution, score=self.test_points, failed=[], status=self.done)
        self.add("student", self.student, score=0, failed=sorted(self.tests), status="graded")

        # An answer cell that raises after its definitions, one that loops forever after them, and the
        # last one killing its kernel: the first two cost nothing, the kill only the last task.
        nb = self.copy("solution")
        cell(nb, first).source += '\nraise RuntimeError("a stray error after the definitions")\n'
        cell(nb, second).source += "\nwhile True:\n    pass\n"
        cell(nb, last).source = "import os\n\nos._exit(1)\n" + cell(nb, last).source
        self.add("faults", nb, score=self.test_points - self.tests[f"test-{last}"], failed=[f"test-{last}"],
                 status=self.done, notes=[f"timed out: {second}", f"killed the kernel (isolated): {last}"])

        # Correct work in a damaged file: a locked cell edited, a test cell's points raised, the last test
        # cell deleted, 20 MB on one line and 20,000 short lines of output, a non-UTF-8 byte.
        nb = self.copy("solution")
        locked = [c for c in nb.cells if c.cell_type == "code" and meta(c).get("locked") and not meta(c).get("grade")]
        locked[-1].source = 'raise RuntimeError("a locked cell, edited")\n'
        tests = list(self.tests)
        cell(nb, tests[0]).metadata.nbgrader["points"] = 100
        nb.cells.remove(cell(nb, tests[-1]))
        cell(nb, first).source = 'print("x" * 20_000_000)\n' + cell(nb, first).source
        cell(nb, second).source = "for i in range(20_000):\n    print(i)\n" + cell(nb, second).source
        nb.cells.insert(1, nbformat.v4.new_markdown_cell("NONUTF8"))
        data = nbformat.writes(nb).encode("utf-8").replace(b"NONUTF8", b"caf\xe9 na\xefve")
        self.add("hostile", data, score=self.test_points, failed=[], status=self.done,
                 notes=["non-UTF-8 bytes replaced", f"deleted cells put back: {tests[-1]}"])

        self.add("truncated", self.files["solution"][: len(self.files["solution"]) // 2], score=None,
                 failed=None, status="failed: unreadable notebook")

        # Nothing answered (stubs that return None instead of raising), every helper the notebook defines
        # or imports replaced by an always-true object, and every test cell emptied: no points.
        nb = self.copy("student")
        answers = set()
        for c in nb.cells:
            if meta(c).get("solution") and c.cell_type == "code":  # not a written answer (markdown)
                answers |= defined_names(c.source)
        named = {n.id for c in self.solution.cells if meta(c).get("grade") and not meta(c).get("solution")
                 for n in ast.walk(ast.parse(c.source)) if isinstance(n, ast.Name)}
        shadow = SHADOW.replace("{names!r}", repr(sorted(named - answers)))
        for c in nb.cells:
            if meta(c).get("solution") and c.cell_type == "code":
                c.source = c.source.replace(STUB, "pass") + shadow
            elif meta(c).get("grade") and not meta(c).get("solution"):  # test cells only
                c.source = "pass\n"
        self.add("attack", nb, score=0, failed=sorted(self.tests), status="graded")

    def specific(self, cases: dict) -> None:
        stubs = {meta(c)["grade_id"]: c.source for c in self.student.cells if meta(c).get("solution")}
        for name, case in cases.items():
            nb = self.copy("solution")
            for grade_id in case.get("unanswered", []):
                cell(nb, grade_id).source = stubs[grade_id]
            for grade_id, source in case.get("answers", {}).items():
                cell(nb, grade_id).source = source.strip() + "\n"
            self.add(name, nb, score=case["score"], failed=sorted(case["failed"]), status=self.done)


def grade_course(lab: str, course: Path) -> dict:
    subs = Submissions(lab, course)
    subs.generic()
    subs.specific(load_cases(lab))
    for name, data in subs.files.items():
        folder = course / "submitted" / name / lab
        folder.mkdir(parents=True)
        (folder / f"{lab}.ipynb").write_bytes(data)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(course / "scripts" / "grade.py"), lab, "--root", str(course),
                           "--", *FAST], capture_output=True, text=True, env=env, timeout=900)
    rows = {}
    csv_path = course / "grades" / f"{lab}.csv"
    if csv_path.is_file():
        with csv_path.open(encoding="utf-8") as handle:
            rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return {"subs": subs, "proc": proc, "rows": rows, "course": course, "cells": cell_scores(lab, course)}


def cell_scores(lab: str, course: Path) -> dict[str, dict[str, float]]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with venv_path(), Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="gradlab") as gb:
        for student in gb.students:
            try:
                submission = gb.find_submission(lab, student.id)
            except MissingEntry:
                continue
            scores[student.id] = {g.name: g.score for nb in submission.notebooks for g in nb.grades}
    return scores


class venv_path:
    """nbgrader's gradebook runs `alembic` from this interpreter's bin/."""

    def __enter__(self):
        self.old = os.environ.get("PATH", "")
        os.environ["PATH"] = make_labs.venv_env()["PATH"]

    def __exit__(self, *exc):
        os.environ["PATH"] = self.old


@pytest.fixture(scope="module", params=GRADED_LABS)
def graded(request, tmp_path_factory) -> dict:
    lab = request.param
    if not load_cases(lab):
        pytest.skip(f"{lab} has no cases.py (test_every_lab_has_its_own_cases fails for it)")
    course = tmp_path_factory.mktemp(f"grading-{lab}")
    make_labs.make_course([lab], course)
    return grade_course(lab, course)


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_has_its_own_cases(lab):
    path = ROOT / "solutions" / lab / "cases.py"
    hint = (f"solutions/{lab}/cases.py must define SUBMISSIONS covering the kinds {sorted(REQUIRED_KINDS)} "
            "(a partial solution with its exact score, a correct solution written differently, correct code "
            "that warns or draws a progress bar, an answer that calls gradlab's reference); copy the format of "
            "solutions/lab1/cases.py and see the instructor guide (book/instructors.md)")
    assert path.is_file(), hint
    times = ROOT / "solutions" / lab / "cell_times.json"
    assert times.is_file(), f"run `.venv/bin/python scripts/grade.py --measure {lab}` (per-cell timeouts)"
    solution = nbformat.read(make_labs.build_source(lab), as_version=4)
    code_ids = {meta(c)["grade_id"] for c in solution.cells if c.cell_type == "code" and meta(c).get("grade_id")}
    missing = sorted(code_ids - set(__import__("json").loads(times.read_text())))
    assert not missing, f"{times.name} has no time for {missing}: run `scripts/grade.py --measure {lab}` again"
    cases = load_cases(lab)
    kinds = {kind for case in cases.values() for kind in case.get("kinds", [])}
    assert REQUIRED_KINDS <= kinds, f"missing kinds {sorted(REQUIRED_KINDS - kinds)}: {hint}"
    student = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    answers, tests = set(answer_ids(student)), graded_test_ids(student)
    for name, case in cases.items():
        changed = set(case.get("answers", {})) | set(case.get("unanswered", []))
        assert changed and changed <= answers, f"{lab} case {name}: unknown answer cells {changed - answers}"
        assert set(case["failed"]) <= set(tests), f"{lab} case {name}: unknown test cells"
        assert case["score"] == sum(tests.values()) - sum(tests[t] for t in case["failed"]), (
            f"{lab} case {name}: score {case['score']} does not match the points of the failed cells")


def test_every_submission_has_a_row_and_the_exit_status_asks_for_a_person(graded):
    subs, proc, rows = graded["subs"], graded["proc"], graded["rows"]
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(rows) == set(subs.files), f"rows {sorted(rows)} for submissions {sorted(subs.files)}\n{log}"
    assert proc.returncode == 1, f"a truncated notebook needs a person: exit status 1, got {proc.returncode}\n{log}"
    assert "truncated" in proc.stdout and "failed: unreadable notebook" in proc.stdout, proc.stdout
    for row in rows.values():
        assert row["max_score"] and float(row["max_score"]) == subs.max_score, row


@pytest.mark.parametrize("name", ["solution", "student", "faults", "hostile", "truncated", "attack",
                                  "partial", "different", "mistakes"])
def test_submission_grades_as_expected(graded, name):
    subs, rows, cells = graded["subs"], graded["rows"], graded["cells"]
    if name not in subs.expected:
        pytest.skip(f"no submission {name} for {subs.lab}")
    expected, row = subs.expected[name], graded["rows"].get(name)
    assert row is not None, f"{subs.lab}/{name} missing from the CSV"
    assert row["status"].startswith(expected["status"]), f"{subs.lab}/{name}: {row}"
    for note in expected.get("notes", []):
        assert note in row["status"], f"{subs.lab}/{name}: expected the note {note!r} in {row['status']!r}"
    if expected["score"] is None:
        assert row["score"] == "", f"{subs.lab}/{name}: an ungradable submission must not get a score: {row}"
        return
    lost = sorted(t for t, score in cells[name].items() if t in subs.tests and score != subs.tests[t])
    assert lost == expected["failed"], f"{subs.lab}/{name}: test cells that lost points {lost}, expected {expected['failed']}; {row}"
    assert float(row["score"]) == expected["score"], f"{subs.lab}/{name}: {row}"


def test_output_is_capped_and_no_test_cell_returns_a_value(graded):
    course, lab = graded["course"], graded["subs"].lab
    for student in ("hostile", "solution"):
        path = course / "autograded" / student / lab / f"{lab}.ipynb"
        assert path.stat().st_size < 3_000_000, f"{student}: {path.stat().st_size} bytes"
    nb = nbformat.read(course / "autograded" / "hostile" / lab / f"{lab}.ipynb", as_version=4)
    assert max(len(nbformat.writes(nbformat.v4.new_notebook(cells=[c]))) for c in nb.cells) < 300_000
    solution = nbformat.read(course / "autograded" / "solution" / lab / f"{lab}.ipynb", as_version=4)
    for c in solution.cells:
        if meta(c).get("grade") and not meta(c).get("solution"):
            results = [o for o in c.outputs if o.output_type == "execute_result"]
            assert not results, f"{meta(c)['grade_id']} ends in a bare expression (nbgrader reads it as partial credit)"


def test_feedback_hides_the_hidden_tests(graded):
    course, lab = graded["course"], graded["subs"].lab
    proc = make_labs.nbgrader("generate_feedback", lab, "--student=hostile", "--force", root=course)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    html = (course / "feedback" / "hostile" / lab / f"{lab}.html").read_text(encoding="utf-8")
    assert len(html) < 5_000_000
    source = make_labs.source_md(lab).read_text(encoding="utf-8")
    hidden = {line.strip() for m in HIDDEN.finditer(source) for line in m.group(1).splitlines()
              if len(line.strip()) > 30 and line.strip() not in HIDDEN.sub("", source)}
    assert hidden, "the check must be able to fail"
    import html as html_lib

    text = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    shown = sorted(line for line in hidden if line in text)
    assert not shown, f"feedback shows hidden-test code: {shown[:3]}"


def test_make_clean_keeps_grades_and_the_gradebook():
    makefile = (ROOT / "Makefile").read_text()
    clean = makefile.split("\nclean:", 1)[1].split("\n\n", 1)[0]
    for kept in ("gradebook", "grades", "submitted", "autograded", "feedback"):
        assert kept not in clean, f"make clean must not delete {kept}: {clean!r}"
    assert re.search(r"^grade: setup$", makefile, re.M), "make grade LAB=... is the documented command"


# ------------------------------------------------------- the pieces, without kernels (fast)


def test_read_notebook_replaces_bad_bytes_and_reports_broken_files(tmp_path):
    import grade

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("BAD")])
    good = nbformat.writes(nb).encode("utf-8")
    (tmp_path / "bytes.ipynb").write_bytes(good.replace(b"BAD", b"caf\xe9"))
    (tmp_path / "cut.ipynb").write_bytes(good[: len(good) // 2])
    read, notes, reason = grade.read_notebook(tmp_path / "bytes.ipynb")
    assert reason is None and read.cells[0].source == "caf\ufffd" and "non-UTF-8" in notes[0]
    read, notes, reason = grade.read_notebook(tmp_path / "cut.ipynb")
    assert read is None and reason.startswith("unreadable notebook cut.ipynb")


def test_a_failed_row_has_no_score_and_needs_a_person():
    import grade

    failed = grade.Result("s1", max_score=12, status="failed: unreadable notebook")
    assert failed.row() == {"student_id": "s1", "score": "", "max_score": "12", "status": "failed: unreadable notebook"}
    assert failed.needs_person
    graded = grade.Result("s2", score=11.5, max_score=12, status="graded", notes=["timed out: es_step"])
    assert graded.row()["status"] == "graded (timed out: es_step)" and graded.row()["score"] == "11.5"
    assert not graded.needs_person and grade.Result("s3", status="needs manual grading").needs_person


def test_stderr_of_a_test_cell_is_not_a_failure_but_an_error_still_is():
    from gradlab_nbgrader import StderrIsNotFailure
    from nbgrader.utils import determine_grade

    def test_cell(*outputs):
        c = nbformat.v4.new_code_cell("check()")
        c.metadata.nbgrader = {"grade": True, "solution": False, "grade_id": "test-x", "points": 2, "locked": True}
        c.outputs = list(outputs)
        return c

    warned = test_cell(nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n"))
    assert determine_grade(warned)[0] == 0, "nbgrader alone fails a test cell that wrote to stderr"
    StderrIsNotFailure().preprocess_cell(warned, {}, 0)
    assert determine_grade(warned)[0] == 2
    broken = test_cell(nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
                       nbformat.v4.new_output("error", ename="AssertionError", evalue="no", traceback=[]))
    StderrIsNotFailure().preprocess_cell(broken, {}, 0)
    assert determine_grade(broken)[0] == 0


def test_feedback_cells_lose_hidden_code_and_tracebacks():
    from gradlab_nbgrader import HideHiddenTests

    c = nbformat.v4.new_code_cell("visible()\n### BEGIN HIDDEN TESTS\nsecret_check(7)\n### END HIDDEN TESTS\n")
    c.metadata.nbgrader = {"grade": True, "solution": False, "grade_id": "test-x", "points": 1}
    c.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="bad",
                                        traceback=["----> 3 secret_check(7)", "AssertionError: bad"])]
    HideHiddenTests().preprocess_cell(c, {}, 0)
    assert "secret_check" not in c.source and "visible()" in c.source
    assert c.outputs[0].traceback == ["AssertionError: bad"]


def test_outputs_are_truncated_to_the_budget_with_a_notice():
    from gradlab_nbgrader import _truncate

    out = _truncate(nbformat.v4.new_output("stream", name="stdout", text="x" * 10_000), 100)
    assert len(out.text) < 200 and "truncated by the grader" in out.text
    err = _truncate(nbformat.v4.new_output("error", ename="E", evalue="y" * 10_000, traceback=["z" * 10_000] * 50), 100)
    assert len(err.evalue) < 200 and len(err.traceback) == 4 and all(len(t) <= 25 for t in err.traceback)
