"""nbgrader plug-ins that make autograding bounded and fair (loaded by ``nbgrader_config.py``).

* :class:`BoundedExecute` replaces nbgrader's ``Execute`` in ``autograde``:
  - each cell gets a timeout sized from the time the instructor's solution took on that cell
    (``solutions/<lab>/cell_times.json``, written by ``scripts/grade.py --measure LAB``):
    ``min_timeout + timeout_factor * measured``; cells the lab does not know (added by a
    student) get ``Execute.timeout``;
  - outputs are capped while the cell runs, per cell (``max_cell_output_bytes``) and per notebook
    (``max_notebook_output_bytes``), so a print in an endless loop cannot fill memory or disk;
  - when the kernel dies (``os._exit``, a segfault, the memory killer), the notebook is executed
    again from the top in a fresh kernel with the dying cell *isolated*: not run, and marked with a
    ``KernelDied`` error output, so every other cell keeps its points.
* :class:`StderrIsNotFailure` keeps text a test cell wrote to stderr (a warning, a progress bar)
  as ordinary output: nbgrader would otherwise give such a test cell 0 points, although it passed.
  A test cell fails only by raising (a failed assertion, an error from the student's code, a timeout).
* :class:`HideHiddenTests` is added to ``generate_feedback``: feedback shows each test cell without
  the code of its hidden tests, and errors without tracebacks (which quote that code).

Only nbgrader's documented extension points are used: preprocessor lists and traitlets options.
"""
from __future__ import annotations

import copy
import json
import math
import re

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_solution
from traitlets import Dict, Float, Integer

KERNEL_DIED = "KernelDied"
TIMED_OUT = "CellTimeoutError"
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

    def preprocess(self, nb, resources=None, km=None):
        lab = (resources or {}).get("nbgrader", {}).get("assignment")
        self._times = self.cell_times.get(lab, {})
        self.timeout_func = self._cell_timeout
        self._isolated: set[int] = set()
        for _ in range(self.max_kernel_deaths + 1):
            attempt = copy.deepcopy(nb)
            self._used, self._total = {}, 0
            try:
                attempt, resources = super().preprocess(attempt, resources, km)
            except DeadKernelError:
                self.log.warning("The kernel died in cell %d: executing again with that cell isolated",
                                 self._running)
                self._isolated.add(self._running)
                continue
            nb.cells = attempt.cells
            nb.metadata = attempt.metadata
            return nb, resources
        raise DeadKernelError(f"the kernel died {self.max_kernel_deaths + 1} times (cells {sorted(self._isolated)})")

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
        return super().preprocess_cell(cell, resources, index)

    def _cell_timeout(self, cell) -> int:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in self._times:
            return self.timeout
        return int(math.ceil(self.min_timeout + self.timeout_factor * float(self._times[grade_id])))

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
