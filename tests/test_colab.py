"""Colab readiness: each student notebook works in a fresh Python environment that has no gradlab.

Each lab gets a new virtual environment whose only extra packages are this project's dependencies, seen
through a folder of links to the shared environment's packages with gradlab left out (so torch is not
installed again, and nothing can import gradlab before the notebook's install cell has run). gradlab is
built once per run into a local wheelhouse (pip without an index: nothing is downloaded), and the install
cell is pointed at that wheel with ``GRADLAB_INSTALL``. Each lab then runs from a folder outside the
checkout with every answer but the last filled in: the install cell installs gradlab into the new
environment, the visible tests of the answered tasks pass, and the last task's test fails, as it should
for a student who has not answered it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_labs  # noqa: E402

LABS = make_labs.find_labs()
pytestmark = [pytest.mark.venv, pytest.mark.xdist_group("colab")]  # one wheel, one overlay: one worker
HIDDEN_FROM_THE_NEW_ENVIRONMENT = ("gradlab", "__editable__")

PROBE = """
import importlib.util
print(*[m for m in ("torch", "nbclient", "ipykernel", "gradlab") if importlib.util.find_spec(m)])
"""
RUN = """
import json, sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[1])
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path]:
    """(the folder of links to the shared packages without gradlab, a wheel of this checkout's gradlab)."""
    base = tmp_path_factory.mktemp("colab")
    overlay = base / "packages"
    overlay.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(HIDDEN_FROM_THE_NEW_ENVIRONMENT):
            (overlay / entry.name).symlink_to(entry)
    wheelhouse = base / "wheelhouse"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--wheel-dir", str(wheelhouse), str(ROOT)],
                          capture_output=True, text=True, cwd=base, timeout=600)
    wheels = sorted(wheelhouse.glob("gradlab-*.whl"))
    assert proc.returncode == 0 and len(wheels) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return overlay, wheels[0]


@pytest.fixture
def fresh_python(shared, tmp_path_factory) -> tuple[Path, dict]:
    """A new venv without gradlab (one per lab), and the environment to run it with."""
    overlay, wheel = shared
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "shared_packages.pth").write_text(f"import site; site.addsitedir({str(overlay)!r})\n")
    kernels = venv / "share" / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fresh, no gradlab)", "language": "python"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")
    env.update(GRADLAB_INSTALL=str(wheel), PIP_NO_INDEX="1", OMP_NUM_THREADS="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    # Found without importing them (torch takes seconds); the notebook run imports them for real.
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=env, cwd=base)
    assert probe.stdout.split() == ["torch", "nbclient", "ipykernel"], (
        f"the new environment must have the dependencies and lack gradlab: {probe.stdout} {probe.stderr[-500:]}")
    return python, env


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.mark.parametrize("lab", LABS)
def test_student_notebook_installs_gradlab_and_runs_its_visible_tests(lab, fresh_python, tmp_path):
    python, env = fresh_python
    student = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    solution = {meta(c)["grade_id"]: c.source for c in make_labs_solution(lab).cells if meta(c).get("solution")}
    answers = [meta(c)["grade_id"] for c in student.cells
               if meta(c).get("solution") and not meta(c).get("grade") and c.cell_type == "code"]
    for c in student.cells:
        if meta(c).get("grade_id") in answers[:-1]:
            c.source = solution[meta(c)["grade_id"]]
    setup = next(i for i, c in enumerate(student.cells) if meta(c).get("grade_id") == "setup")
    student.cells.insert(setup + 1, nbformat.v4.new_code_cell("import gradlab\nprint('GRADLAB AT', gradlab.__file__)"))
    path = tmp_path / f"{lab}.ipynb"
    nbformat.write(student, path)
    proc = subprocess.run([str(python), "-c", RUN, str(path), str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = nbformat.read(path, as_version=4)
    errors = {meta(c).get("grade_id", f"cell {i}"): [o.ename for o in c.outputs if o.output_type == "error"]
              for i, c in enumerate(ran.cells) if c.cell_type == "code"}
    install = ran.cells[0]
    assert not errors["colab_install"] and not errors["setup"], json.dumps(errors)[:2000]
    where = "".join(o.get("text", "") for o in ran.cells[setup + 1].outputs)
    assert "GRADLAB AT" in where and str(python.parents[1]) in where and str(ROOT) not in where, where
    assert install.outputs == [] or "ERROR" not in "".join(o.get("text", "") for o in install.outputs)
    tests = [meta(c)["grade_id"] for c in ran.cells if meta(c).get("grade") and not meta(c).get("solution")]
    failing = sorted(t for t in tests if errors[t])
    assert failing == [f"test-{answers[-1]}"], f"failing tests {failing}; errors {errors}"
    assert errors[f"test-{answers[-1]}"] == ["NotImplementedError"], errors[f"test-{answers[-1]}"]


def make_labs_solution(lab: str) -> nbformat.NotebookNode:
    import jupytext

    return jupytext.read(make_labs.source_md(lab), fmt="md:myst")
