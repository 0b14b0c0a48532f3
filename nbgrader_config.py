"""nbgrader configuration for the gradlab labs.

The repository root is the nbgrader course root:

* ``solutions/<lab>/<lab>.md`` is the instructor source (jupytext MyST with nbgrader cell metadata);
  ``scripts/make_labs.py`` converts it to ``solutions/<lab>/<lab>.ipynb`` (generated, git-ignored)
  and runs ``nbgrader generate_assignment``;
* ``labs/<lab>/<lab>.ipynb`` is the released student notebook (committed, so Colab can open it);
* ``submitted/``, ``autograded/``, ``feedback/``, ``grades/`` and ``gradebook.db`` hold student work
  and grades: all are git-ignored and never deleted by ``make clean``.

Grade with ``scripts/grade.py LAB`` (``make grade LAB=lab1``), which runs ``nbgrader autograde``
with this configuration and writes ``grades/LAB.csv``; see the instructor guide in the book.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "scripts"))

from gradlab_nbgrader import BoundedExecute, HideHiddenTests, StderrIsNotFailure  # noqa: E402
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "gradlab"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# The MyST sources and the per-lab instructor files live next to the generated .ipynb in
# solutions/<lab>/; never copy them (they contain the solutions) into a release.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "*.md",
    "*.py",
    "*.json",
]
c.CourseDirectory.db_url = f"sqlite:///{ROOT / 'gradebook.db'}"

# ---- autograde: bounded and fair (scripts/gradlab_nbgrader.py) ------------------------------------
c.Autograde.autograde_preprocessors = [
    BoundedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    StderrIsNotFailure,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
# Per-cell timeouts: min_timeout + timeout_factor * (the solution's time on that cell, measured with
# `scripts/grade.py --measure LAB`). Every lab cell runs in seconds, so a submission stuck in a loop
# costs about a minute in all. Cells a student added get Execute.timeout.
c.BoundedExecute.cell_times = {
    path.parent.name: json.loads(path.read_text()) for path in sorted(ROOT.glob("solutions/*/cell_times.json"))
}
c.BoundedExecute.timeout_factor = 5.0
c.BoundedExecute.min_timeout = 10
c.Execute.timeout = 30
# After a timed-out cell is interrupted, wait up to 10 s for its last output instead of failing the whole
# submission when a busy machine is slow to deliver it (nbgrader's default raises after 4 s).
c.Execute.iopub_timeout = 10
c.Execute.raise_on_iopub_timeout = False
# Outputs are capped in characters while a cell runs (per cell and per notebook) and in lines after it.
c.BoundedExecute.max_cell_output_bytes = 100_000
c.BoundedExecute.max_notebook_output_bytes = 2_000_000
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100
# A deleted test cell is put back (and scored) instead of silently counting as 0.
c.OverwriteCells.add_missing_cells = True

# ---- feedback: without the code of the hidden tests ---------------------------------------------
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, HideHiddenTests]
