"""nbgrader plug-ins that make autograding bounded and fair (loaded by ``nbgrader_config.py``).

* :class:`BoundedExecute` replaces nbgrader's ``Execute`` in ``autograde``:
  - each cell gets a timeout sized from the time the instructor's solution took on that cell
    (``solutions/<lab>/cell_times.json``, written by ``scripts/grade.py --measure LAB``):
    ``min_timeout + timeout_factor * measured``; cells the lab does not know (added by a
    student) get ``Execute.timeout``;
  - outputs are capped while the cell runs, per cell (``max_cell_output_bytes``) and per notebook
    (``max_notebook_output_bytes``), so a print in an endless loop cannot fill memory or disk;
  - the timeouts scale with the load of the grading machine: a fixed pure-Python workload is timed when
    the cell times are measured (``_baseline`` in ``cell_times.json``) and again before each notebook,
    and the ratio (at least 1, at most ``max_load_factor``) multiplies the measured times;
  - a cell that times out runs once more with twice its timeout (the kernel was interrupted, so the
    cell restarts from the notebook's state); a retry that passes is noted, one that fails again is
    flagged for a person by ``scripts/grade.py`` ("needs review");
  - the kernel runs with one thread (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = ``kernel_threads``): on a
    busy machine torch's default of one thread per core made a 1 s loop take 24 s;
  - when the kernel dies (``os._exit``, a segfault, the memory killer), the notebook is executed
    again from the top in a fresh kernel with the dying cell *isolated*: not run, and marked with a
    ``KernelDied`` error output, so every other cell keeps its points. A kernel that dies again and
    again fails the submission with the kernel's own message and the cells it died in;
  - test cells cannot be fooled by an answer cell that shadows a builtin (``abs = lambda x: 0``,
    ``sum = 0.0``): before a test cell runs, every builtin name it reads and does not bind itself is
    rewritten to ``__gradlab_builtins__.<name>`` (the ``builtins`` module, imported on the cell's first
    line), so that line numbers stay; the cell's source is put back after it ran. Student functions
    the test calls still see the student's own names.
* :class:`StderrIsNotFailure` keeps text a test cell wrote to stderr (a warning, a progress bar)
  as ordinary output: nbgrader would otherwise give such a test cell 0 points, although it passed.
  A test cell fails only by raising (a failed assertion, an error from the student's code, a timeout).
* :class:`HideHiddenTests` is added to ``generate_feedback``: feedback shows each test cell without
  the code of its hidden tests, and errors without tracebacks (which quote that code).

Only nbgrader's documented extension points are used: preprocessor lists and traitlets options.
"""
from __future__ import annotations

import ast
import builtins
import copy
import json
import math
import os
import re
import time

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_solution
from traitlets import Bool, Dict, Float, Integer

KERNEL_DIED = "KernelDied"
TIMED_OUT = "CellTimeoutError"
RETRIED = "[grader] this cell timed out and was run once more with twice the time"
SAFE_BUILTINS = "__gradlab_builtins__"
# Builtins left alone: zero-argument super() needs its name in the function body, and dunders are module data.
NOT_REWRITTEN = {"super"}
HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*$", re.M | re.S)


def _size(output: NotebookNode) -> int:
    return len(json.dumps(output, ensure_ascii=False))


def _truncate(output: NotebookNode, budget: int) -> NotebookNode:
    """A copy of ``output`` cut to about ``budget`` characters, ending with a visible notice."""
    notice = f"\n... output truncated by the grader (over {budget} characters) ...\n"
    if output.output_type == "stream":
        return NotebookNode(output_type="stream", name=output.name, text=output.text[:budget] + notice)
    if output.output_type == "error":
        return NotebookNode(output_type="error", ename=output.ename, evalue=output.evalue[:budget] + notice,
                            traceback=[line[: budget // 4] for line in output.traceback[-4:]])
    return NotebookNode(output_type="stream", name="stdout", text=notice)


def bound_names(tree: ast.AST) -> set[str]:
    """Every name a piece of code binds anywhere (assignments, defs, arguments, imports, handlers)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def protect_builtins(source: str) -> str:
    """``source`` with every builtin it reads (and does not bind) read from the ``builtins`` module.

    Line numbers are kept: the import goes on the first line when that is a simple statement, a comment
    or blank. Code that does not parse (IPython magics) is returned unchanged.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    shielded = {n for n in dir(builtins) if not n.startswith("__")} - bound_names(tree) - NOT_REWRITTEN
    lines = source.splitlines(keepends=True) or [""]
    spans: dict[int, list] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in shielded \
                and node.lineno == node.end_lineno:
            spans.setdefault(node.lineno, []).append((node.col_offset, node.end_col_offset, node.id))
    for lineno, found in spans.items():
        raw = lines[lineno - 1].encode("utf-8")
        for start, end, name in sorted(found, reverse=True):
            if raw[start:end] == name.encode():  # positions inside f-strings may be off: leave those
                raw = raw[:start] + f"{SAFE_BUILTINS}.{name}".encode() + raw[end:]
        lines[lineno - 1] = raw.decode("utf-8")
    first = tree.body[0] if tree.body else None
    head = f"import builtins as {SAFE_BUILTINS}"
    if not lines[0].strip() or lines[0].lstrip().startswith("#"):
        lines[0] = f"{head}  {lines[0].strip()}\n" if lines[0].strip() else head + "\n"
    elif first is not None and first.lineno == 1 and first.end_lineno == 1 and not isinstance(
            first, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With, ast.For, ast.While, ast.If,
                    ast.Try, ast.AsyncWith, ast.AsyncFor)) and not lines[0].rstrip().endswith("\\"):
        lines[0] = f"{head}; {lines[0]}"
    else:
        lines.insert(0, head + "\n")
    protected = "".join(lines)
    try:
        ast.parse(protected)
    except SyntaxError:
        return source
    return protected


def workload_seconds(repeats: int = 3) -> float:
    """The best of ``repeats`` timings of a fixed pure-Python workload (about 0.05 s on an idle core)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - start)
    return best


class BoundedExecute(Execute):
    """nbgrader's Execute with per-cell timeouts from measured times, capped outputs, and
    recovery from a dying kernel (see the module docstring)."""

    cell_times = Dict(
        {}, help="{lab: {grade_id: seconds the solution took}}: the basis of per-cell timeouts"
    ).tag(config=True)
    timeout_factor = Float(5.0, help="timeout = min_timeout + timeout_factor * measured time").tag(config=True)
    min_timeout = Integer(10, help="seconds every known cell gets on top of its scaled time").tag(config=True)
    max_cell_output_bytes = Integer(100_000, help="output kept per cell (characters of JSON)").tag(config=True)
    max_notebook_output_bytes = Integer(2_000_000, help="output kept per notebook").tag(config=True)
    max_kernel_deaths = Integer(3, help="kernel deaths survived per notebook before giving up").tag(config=True)
    kernel_threads = Integer(1, help="OMP_NUM_THREADS / MKL_NUM_THREADS of the grading kernel").tag(config=True)
    max_load_factor = Float(4.0, help="cap on the load scaling of the timeouts").tag(config=True)
    retry_timeouts = Bool(True, help="run a timed-out cell once more with twice its timeout").tag(config=True)
    protect_test_cells = Bool(True, help="test cells read builtins from the builtins module").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        lab = (resources or {}).get("nbgrader", {}).get("assignment")
        self._times = self.cell_times.get(lab, {})
        self._load = self.load_factor()
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(self.kernel_threads)  # the kernel inherits the environment
        self.timeout_func = self._cell_timeout
        self._isolated: dict[int, str] = {}
        for _ in range(self.max_kernel_deaths + 1):
            attempt = copy.deepcopy(nb)
            self._used, self._total, self._retrying = {}, 0, False
            try:
                attempt, resources = super().preprocess(attempt, resources, km)
            except DeadKernelError as error:
                self.log.warning("The kernel died in cell %d (%s): executing again with that cell isolated",
                                 self._running, error)
                self._isolated[self._running] = str(error).strip().splitlines()[0] if str(error).strip() else ""
                continue
            nb.cells = attempt.cells
            nb.metadata = attempt.metadata
            return nb, resources
        where = ", ".join(nb.cells[i].metadata.get("nbgrader", {}).get("grade_id", f"cell {i}") for i in self._isolated)
        last = [m for m in self._isolated.values() if m][-1:] or ["no message"]
        raise DeadKernelError(f"the kernel died {len(self._isolated)} times, in {where}; its last message: {last[0]}")

    def load_factor(self) -> float:
        """How much slower this machine is now than when the cell times were measured (>= 1)."""
        baseline = self._times.get("_baseline")
        if not baseline:
            return 1.0
        return min(max(workload_seconds() / float(baseline), 1.0), self.max_load_factor)

    def preprocess_cell(self, cell, resources, index):
        self._running = index
        if index in self._isolated:
            cell.outputs = [NotebookNode(
                output_type="error", ename=KERNEL_DIED, evalue="the kernel died while running this cell",
                traceback=[f"{KERNEL_DIED}: the kernel died while running this cell, so the grader ran the "
                           "notebook again without it"],
            )]
            cell.execution_count = None
            return cell, resources
        source = cell.source
        if self.protect_test_cells and cell.cell_type == "code" and is_grade(cell) and not is_solution(cell):
            cell.source = protect_builtins(source)
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
            if self.retry_timeouts and cell.cell_type == "code" and _timed_out(cell):
                self.log.warning("Cell %d timed out: running it once more with twice the time", index)
                cell.outputs, self._retrying = [], True
                try:
                    cell, resources = super().preprocess_cell(cell, resources, index)
                finally:
                    self._retrying = False
                cell.outputs.insert(0, NotebookNode(output_type="stream", name="stdout", text=RETRIED + "\n"))
        finally:
            cell.source = source
        return cell, resources

    def _cell_timeout(self, cell) -> int:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in self._times:
            seconds = self.timeout
        else:
            seconds = self.min_timeout + self.timeout_factor * self._load * float(self._times[grade_id])
        return int(math.ceil(seconds * (2 if self._retrying else 1)))

    def output(self, outs, msg, display_id, cell_index):
        out = super().output(outs, msg, display_id, cell_index)
        if out is None:
            return None
        used = self._used.get(cell_index, 0)
        budget = min(self.max_cell_output_bytes - used, self.max_notebook_output_bytes - self._total)
        size = _size(out)
        if size <= budget:
            self._used[cell_index], self._total = used + size, self._total + size
            return out
        if outs and outs[-1] is out:
            outs.pop()
        if budget <= 0:  # the notice was already written
            return None
        cut = _truncate(out, budget)
        outs.append(cut)
        self._used[cell_index], self._total = used + budget, self._total + budget
        return cut


def _timed_out(cell) -> bool:
    return any(o.get("output_type") == "error" and o.get("ename") == TIMED_OUT for o in cell.outputs)


class StderrIsNotFailure(NbGraderPreprocessor):
    """Turn stderr streams of graded test cells into stdout (after execution, before grading)."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and is_grade(cell) and not is_solution(cell):
            for output in cell.outputs:
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback without hidden-test code: the region is replaced by a comment, tracebacks by their last line."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and is_grade(cell) and not is_solution(cell):
            cell.source = HIDDEN_TESTS.sub("# (hidden tests ran here; their code is not shown)", cell.source)
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources
