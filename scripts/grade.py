#!/usr/bin/env python
"""Grade every submission of one lab with nbgrader, and say plainly what could not be graded.

    python scripts/grade.py LAB                 # or: make grade LAB=lab1
    python scripts/grade.py LAB -- --BoundedExecute.min_timeout=3   # extra nbgrader options
    python scripts/grade.py --measure LAB       # time the solution's cells (per-cell timeouts)

Reads ``submitted/<student_id>/LAB/`` (as ``nbgrader collect`` lays them out, or copied there by
hand), runs nbgrader's own ``autograde`` on all of them in one go (configured by
``nbgrader_config.py``: hidden tests restored, per-cell timeouts, capped output, a dying kernel
isolated), and writes ``grades/LAB.csv`` with the columns ``student_id, score, max_score, status``:

* ``graded`` — every test cell was scored; a note follows when something was repaired (non-UTF-8
  bytes replaced, a deleted test cell put back) or a slow cell passed on its retry;
* ``graded; needs review`` — scored, but a cell timed out (after its retry) or killed the kernel and was
  isolated: the note names every such cell, and a person should look (the score may be too low);
* ``needs manual grading`` — nbgrader scored what it could, a person must grade the rest
  (in formgrader), the score so far is given;
* ``failed: <reason>`` — the submission could not be graded (unreadable notebook, missing
  notebook, the kernel died again and again, nbgrader error): the score is left empty, never 0.

Submissions are staged (copied, repaired where possible) under ``.grading/LAB/``: the files in
``submitted/`` are never modified. The exit status is 0 when everything was graded, 1 when a person
is needed (any failed or manual-grading row), 2 when there was nothing to grade.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_labs  # noqa: E402
from gradlab_nbgrader import KERNEL_DIED, RETRIED, TIMED_OUT, workload_seconds  # noqa: E402

STAGING = ".grading"
COLUMNS = ["student_id", "score", "max_score", "status"]


@dataclass
class Result:
    student_id: str
    score: float | None = None
    max_score: float | None = None
    status: str = "failed: not graded"
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict:
        status = self.status + (f" ({'; '.join(self.notes)})" if self.notes else "")
        fmt = lambda v: "" if v is None else f"{v:g}"  # noqa: E731
        return {"student_id": self.student_id, "score": fmt(self.score), "max_score": fmt(self.max_score),
                "status": status}

    @property
    def needs_person(self) -> bool:
        return not self.status.startswith("graded") or "needs review" in self.status


def read_notebook(path: Path) -> tuple[nbformat.NotebookNode | None, list[str], str | None]:
    """(notebook, repair notes, reason it is unreadable). Non-UTF-8 bytes are replaced, not fatal."""
    notes = []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8", errors="replace")
        notes.append(f"non-UTF-8 bytes replaced (first at byte {error.start})")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises several types for broken JSON
        reason = str(error).splitlines()[0][:160] or type(error).__name__
        return None, notes, f"unreadable notebook {path.name} ({reason})"
    return nb, notes, None


def grade_ids(nb: nbformat.NotebookNode) -> set[str]:
    return {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def stage(lab: str, root: Path, release: nbformat.NotebookNode, results: dict[str, Result]) -> Path:
    """Copy each readable submission to ``.grading/LAB/submitted``; fill ``results`` for the others."""
    staging = root / STAGING / lab / "submitted"
    if staging.exists():
        shutil.rmtree(staging)
    expected = grade_ids(release)
    for folder in sorted((root / "submitted").glob(f"*/{lab}")):
        student = folder.parent.name
        result = results.setdefault(student, Result(student))
        notebook = folder / f"{lab}.ipynb"
        if not notebook.is_file():
            result.status = f"failed: no {lab}.ipynb in the submission"
            continue
        nb, notes, unreadable = read_notebook(notebook)
        result.notes += notes
        if unreadable:
            result.status = f"failed: {unreadable}"
            continue
        missing = sorted(expected - grade_ids(nb))
        if missing:
            result.notes.append(f"deleted cells put back: {', '.join(missing)}")
        dest = staging / student / lab
        shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        nbformat.write(nb, dest / f"{lab}.ipynb")
    return staging


def autograde(lab: str, root: Path, staging: Path, extra: list[str]) -> subprocess.CompletedProcess:
    submitted = staging.relative_to(root)
    for student in (p.name for p in staging.iterdir()):
        shutil.rmtree(root / "autograded" / student / lab, ignore_errors=True)
    return make_labs.nbgrader("autograde", lab, "--force", f"--CourseDirectory.submitted_directory={submitted}",
                              *extra, root=root, env=one_thread_env())


def one_thread_env() -> dict[str, str]:
    """The grading environment: one thread for torch, OpenMP and MKL in nbgrader and its kernels."""
    env = make_labs.venv_env()
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def nbgrader_reason(log: str, student: str) -> str:
    """The most telling line nbgrader logged about ``student``'s failure."""
    lines = log.splitlines()
    hits = [i for i, line in enumerate(lines) if "error processing assignment" in line and f"/{student}/" in line]
    if hits:
        # The exception's own line ("DeadKernelError: the kernel died ..."), never a quoted source line of the
        # grader: the last "Name: message" line of the traceback that follows, before the next log record.
        found = []
        for line in lines[hits[-1] + 1:]:
            if re.match(r"^\[[A-Za-z]+App \|", line) and found:
                break
            line = re.sub(r"^\[[^]]*\]\s*", "", line.strip())  # nbgrader's "[AutogradeApp | ERROR] "
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)(: |$)", line):
                found.append(line)
        if found:
            return found[-1][:200]
    return "nbgrader could not grade it (see the log above)"


def collect(lab: str, root: Path, staging: Path, log: str, results: dict[str, Result]) -> None:
    """Read scores from the gradebook and notes from the autograded notebooks."""
    from nbgrader.api import Gradebook

    db_url = f"sqlite:///{root / 'gradebook.db'}"
    with Gradebook(db_url, course_id="gradlab") as gb:
        max_score = gb.find_assignment(lab).max_score
        for student in sorted(p.name for p in staging.iterdir()):
            result = results[student]
            result.max_score = max_score
            graded = root / "autograded" / student / lab / f"{lab}.ipynb"
            if not graded.is_file():
                result.status = f"failed: {nbgrader_reason(log, student)}"
                continue
            submission = gb.find_submission(lab, student)
            penalty = submission.late_submission_penalty or 0.0
            result.score = max(submission.score - penalty, 0.0)
            if submission.total_seconds_late > 0:
                result.notes.append(f"late by {submission.total_seconds_late / 3600:.1f} h, penalty {penalty:g}")
            result.status = "needs manual grading" if submission.needs_manual_grade else "graded"
            nb = nbformat.read(graded, as_version=4)
            flagged = False
            for kind, words in ((TIMED_OUT, "timed out"), (KERNEL_DIED, "killed the kernel (isolated)")):
                cells = [c.metadata.get("nbgrader", {}).get("grade_id", "a cell") for c in nb.cells
                         if c.cell_type == "code" and any(o.get("ename") == kind for o in c.outputs)]
                if cells:
                    result.notes.append(f"{words}: {', '.join(cells)}")
                    flagged = True
            slow = [c.metadata.get("nbgrader", {}).get("grade_id", "a cell") for c in nb.cells
                    if c.cell_type == "code" and not any(o.get("ename") == TIMED_OUT for o in c.outputs)
                    and any(RETRIED in o.get("text", "") for o in c.outputs if o.get("output_type") == "stream")]
            if slow:
                result.notes.append(f"passed on retry after a timeout: {', '.join(slow)}")
            if flagged:
                result.status += "; needs review"
    for result in results.values():
        if result.max_score is None and result.status.startswith("failed"):
            result.max_score = max_score


def write_csv(results: dict[str, Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for student in sorted(results):
            writer.writerow(results[student].row())


def summary(lab: str, results: dict[str, Result], csv_path: Path, seconds: float) -> str:
    counts = Counter(r.status.split(":")[0] for r in results.values())
    lines = [f"{lab}: {len(results)} submissions graded in {seconds:.0f} s -> {csv_path}",
             "  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    for result in sorted(results.values(), key=lambda r: r.student_id):
        if result.needs_person or result.notes:
            row = result.row()
            lines.append(f"  {row['student_id']}: {row['score'] or '-'}/{row['max_score']} {row['status']}")
    if any(r.needs_person for r in results.values()):
        lines.append("A person is needed for the rows above marked failed, needs manual grading or needs review.")
    return "\n".join(lines)


def grade(lab: str, root: Path = ROOT, extra: list[str] = ()) -> tuple[dict[str, Result], str]:
    release_path = make_labs.release_ipynb(lab, root)
    release = nbformat.read(release_path, as_version=4)
    results: dict[str, Result] = {}
    staging = stage(lab, root, release, results)
    log = ""
    if staging.exists() and any(staging.iterdir()):
        proc = autograde(lab, root, staging, list(extra))
        log = proc.stdout + proc.stderr
        collect(lab, root, staging, log, results)
    return results, log


def in_gradebook(lab: str, root: Path) -> bool:
    from nbgrader.api import Gradebook, MissingEntry

    if not (root / "gradebook.db").is_file():
        return False
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id="gradlab") as gb:
        try:
            gb.find_assignment(lab)
        except MissingEntry:
            return False
    return True


def measure(lab: str, root: Path = ROOT) -> Path:
    """Execute the solution notebook once and write each cell's wall time to cell_times.json."""
    from nbclient import NotebookClient

    nb = nbformat.read(make_labs.build_source(lab, root), as_version=4)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # as the grading kernels run
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}})
    times = {}
    original = client.async_execute_cell

    async def timed(cell, index, **kwargs):
        start = time.perf_counter()
        result = await original(cell, index, **kwargs)
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id:
            times[grade_id] = round(time.perf_counter() - start + 0.05, 1)
        return result

    client.async_execute_cell = timed
    baseline = workload_seconds()
    client.execute()
    # The load of this machine while it measured: grading scales the timeouts by how much slower it runs.
    times["_baseline"] = round(min(baseline, workload_seconds()), 4)
    path = make_labs.source_md(lab, root).with_name("cell_times.json")
    path.write_text(json.dumps(times, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lab", help="the lab to grade, e.g. lab1")
    parser.add_argument("--measure", action="store_true", help="time the solution's cells instead of grading")
    parser.add_argument("--root", type=Path, default=ROOT, help="the course root (default: this repository)")
    parser.add_argument("--verbose", action="store_true", help="print nbgrader's log")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    known = make_labs.find_labs(root)
    if args.lab not in known:
        parser.error(f"unknown lab {args.lab!r}; known: {known}")
    if args.measure:
        print(f"wrote {measure(args.lab, root)}")
        return 0
    if not in_gradebook(args.lab, root):
        make_labs.make_lab(args.lab, root)  # generate_assignment records the lab and its tests
    start = time.perf_counter()
    results, log = grade(args.lab, root, extra)
    if args.verbose:
        print(log)
    if not results:
        print(f"nothing to grade: no submitted/*/{args.lab}/ under {root}", file=sys.stderr)
        return 2
    csv_path = root / "grades" / f"{args.lab}.csv"
    write_csv(results, csv_path)
    print(summary(args.lab, results, csv_path, time.perf_counter() - start))
    return 1 if any(r.needs_person for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
