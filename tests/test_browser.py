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

# Every test here reads the built book (group "book" of tests/conftest.py); most drive Chromium.
pytestmark = pytest.mark.browser

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


# --------------------------------------------------------------------------- the book as a reader sees it
# Each page is opened once at a desktop and once at a phone width in headless Chromium (Playwright
# driving Debian's browser, never a downloaded one), served from 127.0.0.1 like a real site.
DESKTOP, PHONE = 1400, 390
RAW_SYNTAX = ("{admonition}", "{code-cell}", "{doc}", "{cite", "{eq}", "{math}", "{note}", "{warning}",
              "```", ":class:", ":tags:")

# Measured in the page: every element in the article whose box sticks out past the nearest clipping
# ancestor (or past the window) without a scrollable box (overflow-x auto/scroll) in between.
OVERFLOW_JS = """() => {
  const article = document.querySelector("article") || document.body;
  const out = [];
  for (const el of article.querySelectorAll("*")) {
    if (el.closest("mjx-assistive-mml, .visually-hidden, .sr-only, script, style")) continue;
    const formula = el.parentElement && el.parentElement.closest("mjx-container");
    if (formula) continue;  // a formula is checked as a whole
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    let node = el.parentElement, cut = null;
    while (node) {
      const ox = getComputedStyle(node).overflowX;
      if (ox === "auto" || ox === "scroll") break;
      if ((ox === "hidden" || ox === "clip") && r.right > node.getBoundingClientRect().right + 1) { cut = node; break; }
      node = node.parentElement;
    }
    if (!node && r.right > window.innerWidth + 1) cut = document.documentElement;
    if (cut) out.push(`${el.tagName.toLowerCase()}.${el.className}: ${(el.textContent || "").trim().slice(0, 60)}`);
  }
  return out;
}"""

# Wide display formulas that scroll must say so: gradlab.js adds a hint after each of them.
UNHINTED_JS = """() => [...document.querySelectorAll("article div.math")].filter(box => {
  const inner = box.querySelector('mjx-container[display="true"]') || box;
  const wide = inner.scrollWidth > inner.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1;
  const hint = box.nextElementSibling;
  return wide && !(hint && hint.classList.contains("gl-scroll-hint"));
}).map(box => box.textContent.trim().slice(0, 60))"""

FIGURES_JS = """() => {
  const article = document.querySelector("article");
  const column = article.clientWidth - parseFloat(getComputedStyle(article).paddingLeft)
                 - parseFloat(getComputedStyle(article).paddingRight);
  return {column, widths: [...article.querySelectorAll("div.cell_output img")].map(i => i.getBoundingClientRect().width)};
}"""


@pytest.fixture(scope="module")
def site(built):
    """The built book served over HTTP on 127.0.0.1 (a free port); yields its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        yield chrome
        chrome.close()


def open_page(browser, url: str, width: int):
    """Open url at the given viewport width; return (page, JavaScript errors, requests off 127.0.0.1)."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda req: None if req.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else outside.append(req.url))
    page.goto(url, wait_until="load")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    page.wait_for_timeout(300)  # gradlab.js marks scrollable boxes once MathJax is done
    return page, errors, outside


@pytest.fixture(scope="module")
def seen(browser, site):
    """Every page at desktop and phone width: JavaScript errors, outside requests, overflow, figures."""
    report = {}
    for width in (DESKTOP, PHONE):
        for name in toc_files():
            page, errors, outside = open_page(browser, f"{site}/{name}.html", width)
            report[name, width] = {
                "errors": errors,
                "outside": outside,
                "overflow": page.evaluate(OVERFLOW_JS),
                "unhinted": page.evaluate(UNHINTED_JS),
                "figures": page.evaluate(FIGURES_JS) if width == DESKTOP else None,
            }
            page.context.close()
    return report


def test_phone_navigation_opens_and_lists_every_chapter(browser, site, built):
    page, errors, _ = open_page(browser, f"{site}/book/02_finite_differences.html", PHONE)
    toggles = [t for t in page.locator("button.primary-toggle, label.primary-toggle").all() if t.is_visible()]
    assert toggles, "no visible navigation button at phone width"
    toggles[0].click()
    page.wait_for_timeout(500)
    # Absolute URLs (the link to the current page is "#" in the HTML).
    visible = {a.evaluate("a => a.href").split("#")[0] for a in page.locator(".bd-sidebar-primary a").all()
               if a.is_visible()}
    page.context.close()
    for name in toc_files():
        assert f"{site}/{name}.html" in visible, f"the phone navigation does not list {name}: {sorted(visible)}"
    assert not errors, errors


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_nothing_is_cut_off_at_the_right(seen, width):
    cut = {name: r["overflow"][:5] for (name, w), r in seen.items() if w == width and r["overflow"]}
    assert not cut, f"at {width} px, content overflows outside a scrollable box: {cut}"


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_wide_formulas_scroll_with_a_visible_hint(seen, width):
    unhinted = {name: r["unhinted"][:3] for (name, w), r in seen.items() if w == width and r["unhinted"]}
    assert not unhinted, f"at {width} px, wide formulas scroll without a hint: {unhinted}"


def test_figures_fill_the_content_column(seen):
    narrow = {}
    for (name, width), r in seen.items():
        if width != DESKTOP:
            continue
        column, widths = r["figures"]["column"], r["figures"]["widths"]
        small = [round(w) for w in widths if w < column - 2]
        if small:
            narrow[name] = (round(column), small)
    assert not narrow, f"figures narrower than the content column (column px, figure px): {narrow}"


def test_no_javascript_error(seen):
    errors = {key: r["errors"] for key, r in seen.items() if r["errors"]}
    assert not errors, errors


def test_no_request_leaves_localhost(seen):
    outside = {key: r["outside"] for key, r in seen.items() if r["outside"]}
    assert not outside, outside


def test_no_raw_directive_syntax(built):
    """A fence the parser did not recognise shows up as literal MyST in the page (Chapter 1 once did)."""
    for name in toc_files():
        doc = soup(built, name)
        article = doc.select_one("article") or doc
        for cell_input in article.select("div.cell_input, script, style"):
            cell_input.decompose()
        text = article.get_text()
        found = [s for s in RAW_SYNTAX if s in text]
        assert not found, f"{name} shows raw MyST syntax {found}: " + text[text.find(found[0]) - 80:][:200]
