"""nbgrader configuration for the gradlab labs.

The repository root is the nbgrader course root:

* ``solutions/<lab>/<lab>.md`` is the instructor source (jupytext MyST with nbgrader
  cell metadata); ``scripts/make_labs.py`` converts it to ``solutions/<lab>/<lab>.ipynb``
  (generated, git-ignored) and runs ``nbgrader generate_assignment``;
* ``labs/<lab>/<lab>.ipynb`` is the released student notebook (committed, so Colab can
  open it straight from GitHub);
* ``submitted/``, ``autograded/``, ``feedback/`` and ``gradebook.db`` are created by
  nbgrader when an instructor collects and grades work; all are git-ignored.

Run every nbgrader command from the repository root, e.g.
``nbgrader generate_assignment lab1 --force`` or ``nbgrader autograde lab1``.
"""
from pathlib import Path

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

ROOT = Path(__file__).resolve().parent

c.CourseDirectory.course_id = "gradlab"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# The MyST sources live next to the generated .ipynb in solutions/<lab>/; never
# copy them (they contain the solutions) into a release.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "*.md",
]
c.CourseDirectory.db_url = f"sqlite:///{ROOT / 'gradebook.db'}"

# Autograding executes the whole lab, which trains a small network: allow more than
# nbgrader's default 30 s per cell.
c.Execute.timeout = 300
