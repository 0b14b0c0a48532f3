"""Shared pytest set-up: one thread, the built book, the test tiers and how they share two cores.

Threads. Tests use tiny tensors, for which torch's intra-op thread pool only adds synchronisation cost;
on a busy 2-core machine the spinning worker threads made a 130-step MLP training take ~8 s of CPU
instead of ~0.1 s. One thread here, and ``OMP_NUM_THREADS=1`` for every process a test starts
(notebook kernels, nbgrader, the book build), keeps the suite fast and its timings stable.

Tiers (markers registered in pyproject.toml). Unmarked tests are the unit tier (``make test-fast``).
The slow tiers carry a marker, and every test with one of them also gets ``slow`` (``-m "not slow"``):

* ``book``: reads the strictly built book (the ``built`` fixture below; added automatically);
* ``browser``: drives Chromium (test_browser.py, test_widgets_browser.py);
* ``nbgrader``: runs nbgrader or executes lab notebooks in kernels (test_labs.py, test_grading.py);
* ``venv``: builds fresh Python environments (test_colab.py).

The distributed ES tests (2 processes over 127.0.0.1, a few seconds) stay in the unit tier; as one module
group they never run beside themselves.

Parallel runs (``make test``: pytest-xdist, ``-n 2 --dist loadgroup``). A worker runs whole *groups*:
tests that share an expensive fixture carry one ``xdist_group`` mark, so the fixture is computed once
(the book: group ``book``; one lab's grading: ``grading-<lab>``, ...). Every other test is grouped with
its module (module-scoped fixtures stay computed once). The groups are handed out longest first: the book
(built here when ``make book`` has not left a current build), then the labs, by the run time of their
solutions; the unit modules fill the gaps.
"""
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from bs4 import BeautifulSoup  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import book_stamp  # noqa: E402

SLOW_TIERS = ("book", "browser", "nbgrader", "venv")


def toc_files() -> list[str]:
    """Every page of the book, in table-of-contents order (paths without suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def soup(html: Path, page: str) -> BeautifulSoup:
    path = html / f"{page}.html"
    assert path.exists(), f"{page} has no HTML page"
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="session")
def built() -> Path:
    """The book's HTML folder, from one strict build (`-W -n --keep-going`, every page executed).

    * ``_build/html`` when its stamp matches the current sources (scripts/book_stamp.py): the build
      ``make book`` left is reused, not repeated;
    * otherwise the book is built here, into ``_build/html``, exactly as ``make book`` builds it (and
      stamped); a failed build fails every test that needs it, with the end of the build's log;
    * ``GRADLAB_BUILT_HTML=<folder>`` uses that folder as it is (iterating by hand on an older build).

    A lock file keeps two processes from building at once; the second then finds the stamp current.
    """
    prebuilt = os.environ.get("GRADLAB_BUILT_HTML")
    if prebuilt:
        html = Path(prebuilt)
        assert (html / "index.html").exists(), f"GRADLAB_BUILT_HTML={prebuilt} holds no built book"
        return html
    (ROOT / "_build").mkdir(exist_ok=True)
    with open(ROOT / "_build" / ".gradlab-book-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not book_stamp.is_current(ROOT):
            log = ROOT / "_build" / "book-build.log"
            code = book_stamp.build(ROOT, log=log)
            assert code == 0, f"the strict book build failed (exit status {code}):\n{log.read_text()[-8000:]}"
    assert book_stamp.is_current(ROOT), "the sources changed while the book was being built: build again"
    return book_stamp.html_dir(ROOT)


# ------------------------------------------------------------------------------------ tiers and groups


def group_of(item) -> str | None:
    marks = [m.args[0] if m.args else m.kwargs.get("name") for m in item.iter_markers("xdist_group")]
    return marks[0] if marks else None


def lab_weight(lab: str) -> float:
    """Seconds the lab's solution takes to run (solutions/<lab>/cell_times.json), 0 when unknown."""
    path = ROOT / "solutions" / lab / "cell_times.json"
    try:
        return float(sum(json.loads(path.read_text()).values()))
    except (OSError, ValueError):
        return 0.0


def group_rank(group: str) -> tuple[int, float]:
    """Order in which groups are handed to workers: longest first (a rough guide, not a measurement)."""
    if group == "book":
        return 0, 0.0
    kind, _, lab = group.partition("-")
    if kind in ("grading", "labs") and lab:
        return 1, -lab_weight(lab) * (6 if kind == "grading" else 2)  # solution runs per lab
    if kind in ("colab", "jupyterlab"):
        return 2, 0.0
    return 3, 0.0


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tier marks (before -m deselects) and one xdist group per test."""
    for item in items:
        if "built" in item.fixturenames:
            item.add_marker(pytest.mark.book)
            if group_of(item) is None:
                item.add_marker(pytest.mark.xdist_group("book"))
        if any(item.get_closest_marker(tier) for tier in SLOW_TIERS):
            item.add_marker(pytest.mark.slow)
        if group_of(item) is None:  # grouped with its module: module-scoped fixtures are computed once
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


class LongestFirst:
    """Sorts the groups longest first, after pytest's own fixture reordering (kept within a group).

    Under xdist the worker also writes each test's group for the controller's scheduler (below)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        order = {id(item): index for index, item in enumerate(items)}
        items.sort(key=lambda item: (*group_rank(group_of(item)), group_of(item), order[id(item)]))
        target = getattr(config, "workerinput", {}).get(GROUPS_FILE)
        if target:
            worker = config.workerinput.get("workerid", "gw")
            tmp = Path(f"{target}.{worker}.tmp")
            tmp.write_text(json.dumps({item.nodeid: group_of(item) for item in items}))
            tmp.replace(f"{target}.{worker}")


def pytest_configure(config):
    config.pluginmanager.register(LongestFirst(), "gradlab-longest-first")


# ------------------------------------------------------------------------- xdist: one group, one worker
# pytest-xdist's own --dist loadgroup marks a group by renaming the test ("<nodeid>@<group>"), which
# pytest 9 no longer allows (the id is derived, not stored): the groups were split over the workers and
# each computed the shared fixture again. So the workers write every test's group to a file and the
# controller schedules whole groups from it (a LoadScopeScheduling whose scope is the group).
GROUPS_FILE = "gradlab_groups_file"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput[GROUPS_FILE] = str(Path(tempfile.gettempdir()) / f"gradlab-xdist-groups-{os.getpid()}.json")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """Whole groups (tests/conftest.py's xdist_group marks) to one worker, in the order collected."""

        groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                found = sorted(Path(tempfile.gettempdir()).glob(f"gradlab-xdist-groups-{os.getpid()}.json.gw*"))
                found = [path for path in found if not path.name.endswith(".tmp")]
                type(self).groups = json.loads(found[0].read_text()) if found else {}
            group = self.groups.get(nodeid)
            if group is not None:
                return group
            if nodeid.rfind("@") > nodeid.rfind("]"):  # xdist's own suffix (pytest < 9)
                return nodeid.split("@")[-1]
            return nodeid.split("::")[0]

    return GroupScheduling(config, log)


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        for path in Path(tempfile.gettempdir()).glob(f"gradlab-xdist-groups-{os.getpid()}.json.*"):
            path.unlink(missing_ok=True)
