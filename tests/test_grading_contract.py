"""The grading contract, attack by attack, on a small synthetic lab (one nbgrader run for the whole file).

The lab ``labx`` has four one-point tasks: ``total`` (a sum), ``double_total`` (uses ``total``: its test runs it
with a reference ``total`` through ``gradlab.labcheck.substituted``), ``threads`` (reports torch's thread count in
the grading kernel) and ``slow``. The submissions attack one promise each:

* ``shadow``: wrong answers in cells that also rebind ``abs``, ``sum``, ``max``, ``bool``, ``isinstance``,
  ``len`` and ``all`` at top level: the test cells must still fail them;
* ``honest``: correct answers with a scratch ``sum = 0.0`` and ``max = 3`` at top level: full marks;
* ``broken_earlier``: ``total`` raises before it is defined: only ``total``'s point is lost;
* ``slow_once``: the ``slow`` cell takes too long the first time only: it passes on its retry, with a note;
* ``stuck``: the ``slow`` cell loops forever: graded, "needs review", the cell named;
* ``dies``: every answer cell kills the kernel: failed, with the kernel's message, not a grader source line.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import grade  # noqa: E402
import make_labs  # noqa: E402
from gradlab_nbgrader import BoundedExecute, protect_builtins  # noqa: E402

LAB = "labx"
FAST = ["--BoundedExecute.min_timeout=4", "--BoundedExecute.timeout_factor=10", "--BoundedExecute.max_kernel_deaths=2"]


def code(grade_id: str, source: str, *, solution=False, points=None) -> str:
    meta = {"grade": points is not None, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return f"```{{code-cell}} ipython3\n:nbgrader: {json.dumps(meta)}\n\n{source.strip()}\n```\n"


ANSWERS = {
    "total": "def total(xs):\n    ### BEGIN SOLUTION\n    return float(torch.as_tensor(xs, dtype=torch.float64).sum())\n"
             "    ### END SOLUTION",
    "double_total": "def double_total(xs):\n    ### BEGIN SOLUTION\n    return 2 * total(xs)\n    ### END SOLUTION",
    "threads": "def threads():\n    ### BEGIN SOLUTION\n    return torch.get_num_threads()\n    ### END SOLUTION",
    "slow": "def slow():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
}
TESTS = {
    "total": """
got = total([1.5, -4.0, 0.25])
print("expected -2.25, got", got)
assert isinstance(got, float), "return a float"
assert abs(got - (-2.25)) < 1e-12
assert len([got, got]) == 2 and all([bool(got)]) and max(got, -3.0) == got and sum([got, 2.25]) == 0.0
""",
    "double_total": """
from gradlab.labcheck import substituted

# double_total is graded on its own: while it runs, `total` is a reference.
with substituted(total=lambda xs: float(sum(xs))):
    got = double_total([1.0, 2.0, 0.5])
print("expected 7.0, got", got)
assert abs(got - 7.0) < 1e-12
""",
    "threads": """
import os

print("expected one thread, got", threads(), os.environ.get("OMP_NUM_THREADS"))
assert threads() == 1 and os.environ.get("OMP_NUM_THREADS") == "1"
""",
    "slow": "assert slow() == 1",
}


def lab_source() -> str:
    cells = [code("setup", "import torch")]
    for name in ANSWERS:
        cells.append(code(name, ANSWERS[name], solution=True))
        cells.append(code(f"test-{name}", TESTS[name], points=1))
    header = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
              "kernelspec:\n  display_name: Python 3 (ipykernel)\n  language: python\n  name: python3\n---\n\n")
    return header + "# Lab X\n\n" + "\n".join(cells)


SHADOWS = "abs = lambda x: 0.0\nsum = lambda *a: 0.0\nmax = lambda *a: a[0]\nbool = lambda x: True\n" \
          "isinstance = lambda *a: True\nlen = lambda x: 2\nall = lambda x: True\n"


def submissions(solution: nbformat.NotebookNode, marker: Path) -> dict[str, nbformat.NotebookNode]:
    def variant(**answers):
        nb = nbformat.from_dict(json.loads(nbformat.writes(solution)))
        for c in nb.cells:
            gid = c.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                c.source = answers[gid]
        return nb

    return {
        "solution": variant(),
        "shadow": variant(total=SHADOWS + "def total(xs):\n    return 'not a sum'\n",
                          double_total="def double_total(xs):\n    return 0.0\nabs = lambda x: 0.0\n"),
        "honest": variant(total="sum = 0.0\nmax = 3\n" + ANSWERS["total"], slow="sum = 0.0\n" + ANSWERS["slow"]),
        "broken_earlier": variant(total='raise RuntimeError("unfinished")\n' + ANSWERS["total"]),
        "slow_once": variant(slow=f"import pathlib, time\nif not pathlib.Path({str(marker)!r}).exists():\n"
                                  f"    pathlib.Path({str(marker)!r}).write_text('ran')\n    time.sleep(60)\n"
                                  + ANSWERS["slow"]),
        "stuck": variant(slow="while True:\n    pass\n" + ANSWERS["slow"]),
        "dies": variant(**{name: "import os\nos._exit(1)\n" + ANSWERS[name] for name in ANSWERS}),
    }


EXPECTED = {  # student: (score, status prefix, words the status must contain)
    "solution": (4, "graded", []),
    "shadow": (2, "graded", []),
    "honest": (4, "graded", []),
    "broken_earlier": (3, "graded", []),
    "slow_once": (4, "graded", ["passed on retry after a timeout: slow"]),
    "stuck": (3, "graded; needs review", ["timed out: slow"]),
    "dies": (None, "failed", ["DeadKernelError", "the kernel died", "total"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    course = tmp_path_factory.mktemp("contract")
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    (course / "scripts").mkdir()
    for script in make_labs.COURSE_SCRIPTS:
        shutil.copy2(ROOT / "scripts" / script, course / "scripts" / script)
    source = course / "solutions" / LAB / f"{LAB}.md"
    source.parent.mkdir(parents=True)
    source.write_text(lab_source())
    times = {"setup": 0.1, **{name: 0.1 for name in ANSWERS}, **{f"test-{name}": 0.1 for name in ANSWERS}}
    (source.parent / "cell_times.json").write_text(json.dumps(times))
    make_labs.make_lab(LAB, course)
    solution = nbformat.read(make_labs.source_ipynb(LAB, course), as_version=4)
    for name, nb in submissions(solution, course / "slow-marker").items():
        folder = course / "submitted" / name / LAB
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LAB}.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, str(course / "scripts" / "grade.py"), LAB, "--root", str(course), "--",
                           *FAST], capture_output=True, text=True, env=env, timeout=900)
    with (course / "grades" / f"{LAB}.csv").open(encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return {"proc": proc, "rows": rows}


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_attack_grades_as_the_contract_says(graded, student):
    score, status, words = EXPECTED[student]
    row = graded["rows"].get(student)
    assert row is not None, graded["proc"].stdout[-3000:] + graded["proc"].stderr[-3000:]
    assert row["status"].startswith(status), row
    for word in words:
        assert word in row["status"], row
    assert row["score"] == ("" if score is None else f"{score:g}"), row


def test_a_dying_kernel_is_reported_by_its_message_not_by_a_grader_source_line(graded):
    status = graded["rows"]["dies"]["status"]
    assert "raise " not in status and 'File "' not in status and "f\"" not in status, status


def test_rows_that_need_review_ask_for_a_person(graded):
    assert graded["proc"].returncode == 1
    assert "needs review" in graded["proc"].stdout


# ------------------------------------------------------------------------ the pieces, without kernels


def test_protect_builtins_rewrites_reads_and_keeps_lines_and_local_bindings():
    source = "# a test\nx = [len(v) for v in data]\nassert abs(x[0]) < 1, f'{max(x)}'\nsum = 3\nprint(sum)\n"
    protected = protect_builtins(source)
    lines = protected.splitlines()
    assert len(lines) == len(source.splitlines()) and lines[0].startswith("import builtins as __gradlab_builtins__")
    assert "__gradlab_builtins__.len(v)" in lines[1] and "__gradlab_builtins__.abs(" in lines[2]
    assert "__gradlab_builtins__.print(sum)" in lines[4], "a name the cell binds itself is left alone"
    namespace = {"data": ["ab"], "abs": lambda v: -100, "len": lambda v: 0}
    with pytest.raises(AssertionError):
        exec(compile(protected, "<cell>", "exec"), namespace)  # the real len and abs: 2 < 1 fails
    exec(compile(source.replace("< 1", "< 100"), "<cell>", "exec"), namespace)  # unprotected: fooled
    assert protect_builtins("%timeit f()\n") == "%timeit f()\n"
    assert "super()" in protect_builtins("class A(B):\n    def f(self):\n        return super().f()\n")


def test_a_status_that_needs_review_needs_a_person_and_the_reason_skips_source_lines():
    assert grade.Result("s", status="graded; needs review", notes=["timed out: x"]).needs_person
    log = "\n".join([
        "[AutogradeApp | ERROR] There was an error processing assignment: /c/.grading/labx/submitted/s9/labx",
        "Traceback (most recent call last):",
        '  File "/c/scripts/gradlab_nbgrader.py", line 188, in preprocess',
        '    raise DeadKernelError(f"the kernel died {n} times")',
        "nbclient.exceptions.DeadKernelError: the kernel died 3 times, in a, b, c; its last message: Kernel died",
        "[AutogradeApp | INFO] next",
    ])
    reason = grade.nbgrader_reason(log, "s9")
    assert reason.startswith("nbclient.exceptions.DeadKernelError: the kernel died 3 times"), reason


def test_timeouts_scale_with_the_load_of_the_grading_machine():
    execute = BoundedExecute(cell_times={LAB: {"cell": 2.0, "_baseline": 1e-6}}, min_timeout=10,
                             timeout_factor=5.0, max_load_factor=3.0)
    execute._times, execute._retrying = execute.cell_times[LAB], False
    execute._load = execute.load_factor()
    assert execute._load == 3.0, "a far slower machine hits the cap"
    cell = nbformat.v4.new_code_cell("pass", metadata={"nbgrader": {"grade_id": "cell"}})
    assert execute._cell_timeout(cell) == 10 + 5 * 3 * 2
    execute._retrying = True
    assert execute._cell_timeout(cell) == 2 * (10 + 5 * 3 * 2)
    execute._times = {"cell": 2.0, "_baseline": 1e6}
    assert execute.load_factor() == 1.0, "never shorter than measured"
