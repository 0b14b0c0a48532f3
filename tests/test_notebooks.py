"""Book pages are well-formed notebooks, and their Colab twins are up to date.

Execution of every page is checked by test_book.py (the build runs each page once);
solution notebooks are executed by test_labs.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402

PAGES = make_notebooks.notebook_pages()


def test_there_are_notebook_pages():
    assert len(PAGES) >= 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_is_myst_notebook_with_setup_cell(page):
    nb = jupytext.read(page)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{page.name} has no code cells"
    first = code[0].source
    assert "SEED" in first and "DEVICE" in first, f"{page.name}: the first code cell should set SEED and DEVICE"
    for cell in code:
        assert "input(" not in cell.source, f"{page.name}: no input() prompts in a book page"


def test_paired_notebooks_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_colab_cell_installs_only_in_colab(page):
    import nbformat
    nb = nbformat.read(page.with_suffix(".ipynb"), as_version=4)
    first = nb.cells[0]
    assert "google.colab" in first.source and "pip install" in first.source
    # Outside Colab the cell must be a no-op: run it with IPython magics stripped.
    body = "\n".join(line for line in first.source.splitlines() if "%pip" not in line) + "\n    pass\n"
    namespace: dict = {}
    exec(compile(body, "colab-cell", "exec"), namespace)
    assert "google.colab" not in sys.modules
