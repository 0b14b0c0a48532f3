"""The built book in a real browser: headless Chromium runs each page's JavaScript.

Every formula must be typeset by MathJax, which the book serves itself
(book/_static/mathjax), so pages read correctly without a network. CI installs
Debian's chromium (.ci/run); elsewhere these tests are skipped when no Chromium is
found, except under CI=true, where a missing browser is a failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from bs4 import BeautifulSoup
from conftest import soup, toc_files

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: install Debian's chromium (see .ci/run)")
        pytest.skip("no Chromium found: `apt-get install chromium` to run the browser tests")
    return path


def rendered_dom(chromium: str, page, profile) -> BeautifulSoup:
    """The page's DOM after its scripts ran (MathJax included), as Chromium sees it."""
    proc = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return BeautifulSoup(proc.stdout, "html.parser")


def test_math_is_served_locally(built):
    pages_with_math = 0
    for page in toc_files():
        doc = soup(built, page)
        mathjax = [s["src"] for s in doc.find_all("script", src=True) if "mathjax" in s["src"].lower()]
        assert not any(src.startswith(("http:", "https:", "//")) for src in mathjax), (page, mathjax)
        if doc.select("span.math, div.math"):
            pages_with_math += 1
            assert mathjax, f"{page} has formulas but loads no MathJax"
    assert pages_with_math >= 3


@pytest.mark.parametrize("page", toc_files())
def test_every_formula_is_typeset(built, chromium, tmp_path, page):
    static = soup(built, page)
    formulas = len(static.select("span.math, div.math"))
    dom = rendered_dom(chromium, built / f"{page}.html", tmp_path / "profile")
    assert dom.select_one("article") is not None, f"{page}: no article in the rendered page"
    untypeset = [e.get_text()[:60] for e in dom.select("span.math, div.math") if not e.find("mjx-container")]
    print(f"{page}: {formulas} formulas, {len(untypeset)} left as TeX")
    assert not untypeset, f"{page}: formulas not typeset: {untypeset[:5]}"
    assert not dom.select("mjx-merror"), f"{page}: MathJax reports TeX errors"
