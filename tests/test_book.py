"""The book builds strictly (Sphinx warnings are errors) and every page is clean.

The build executes every notebook page once (myst-nb drives nbclient); the
execution table it writes (book/appendix/execution) gives each page's run time,
which is checked against a per-page budget.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import soup, toc_files

ROOT = Path(__file__).resolve().parents[1]
PAGE_BUDGET_S = 120  # each page is written to run in well under a minute on 2 cores
COLAB = "https://colab.research.google.com/github/gradlab/gradlab/blob/main/"


def test_every_toc_page_is_built(built):
    for page in toc_files():
        assert (built / f"{page}.html").exists(), page


def test_no_page_shows_an_unexpected_error_or_warning(built):
    for page in toc_files():
        doc = soup(built, page)
        for out in doc.select("div.cell_output"):
            cell = out.find_parent("div", class_="cell")
            expected_error = cell is not None and "tag_raises-exception" in cell.get("class", [])
            if out.select(".output.traceback") and not expected_error:
                pytest.fail(f"{page}: a cell shows a traceback:\n{out.get_text()[:2000]}")
            for err in out.select(".output.stderr"):
                text = err.get_text()
                assert not re.search(r"Warning|Error", text), f"{page}: stderr output:\n{text[:2000]}"


def test_execution_table_all_ok_within_budget(built):
    doc = soup(built, "book/appendix/execution")
    table = doc.find("table")
    assert table is not None, "the execution table is missing"
    header = [th.get_text(strip=True).lower() for th in table.select("thead th")]
    rows = [[td.get_text(strip=True) for td in tr.select("td")] for tr in table.select("tbody tr")]
    col = {name: next(i for i, h in enumerate(header) if h.startswith(name))
           for name in ("document", "run time", "status")}
    executed = {r[col["document"]]: r for r in rows}
    pages = [p for p in toc_files() if (ROOT / f"{p}.md").read_text().startswith("---\njupytext")]
    assert pages, "no notebook pages in the table of contents"
    for page in pages:
        assert page in executed, f"{page} was not executed (table has {sorted(executed)})"
        row = executed[page]
        assert row[col["status"]] == "✅", f"{page}: status {row[col['status']]}"
        seconds = float(row[col["run time"]])
        print(f"{page}: {seconds:.1f} s")
        assert seconds < PAGE_BUDGET_S, f"{page} took {seconds:.0f} s (budget {PAGE_BUDGET_S} s)"


def test_chapter_pages_launch_colab_on_their_paired_notebook(built):
    for page in toc_files():
        if not (ROOT / f"{page}.ipynb").exists():
            continue
        links = [a["href"] for a in soup(built, page).find_all("a", href=True) if "colab" in a["href"]]
        assert f"{COLAB}{page}.ipynb" in links, f"{page}: Colab links {links}"


def test_lab_pages_link_to_committed_student_notebooks(built):
    lab_pages = [p for p in toc_files() if p.startswith("book/labs/")]
    assert lab_pages, "no lab pages in the table of contents"
    for page in lab_pages:
        links = [a["href"] for a in soup(built, page).find_all("a", href=True) if a["href"].startswith(COLAB)]
        assert links, f"{page} has no Colab link"
        for link in links:
            target = ROOT / link[len(COLAB):]
            assert target.suffix == ".ipynb" and target.exists(), f"{page}: {link} points to nothing"
