"""The built book as a reader sees it, one test per class of defect a browser read found.

Each test opens the built book (``built``: a fresh strict build, or GRADLAB_BUILT_HTML) in headless
Chromium, Debian's browser driven by Playwright, at a desktop (1400 px) and a phone (390 px)
width, and checks a whole class of defect on every page: progress bars that print every
update, figures that are blurry or whose text is too small on a phone, explorer frames inlined
into the HTML or cut off, controls too small to touch or that silently do nothing, inline code
unreadable in dark mode, words broken letter by letter, formulas too wide for a phone, raw TeX in
search results. Skipped, like tests/test_browser.py, where no Chromium is installed.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import soup, toc_files
from test_browser import DESKTOP, PHONE, chromium, site  # noqa: F401 (fixtures)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

MAX_PROGRESS_LINES = 8  # per output box: a few bars (one per run of a loop), each once, in its final state
MAX_PAGE_BYTES = 700_000  # a page's HTML; Chapter 3 was 2.2 MB with its explorer frames inlined
MIN_CSS_PX = 9.0  # smallest legible figure text on a phone
MAX_SCROLLING_FORMULAS = 0.05  # fraction of display formulas that scroll sideways at 390 px
MIN_CONTROL_PX = 24  # touch target height
MIN_CONTRAST = 4.5  # WCAG AA for body text

PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+(?:\.\d+)?(?:it/s|s/it)\]")


@pytest.fixture(scope="module")
def browser(chromium):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=FLAGS[1:], headless=True)
        yield chrome
        chrome.close()


def visit(browser, url: str, width: int, dark: bool = False):
    context = browser.new_context(viewport={"width": width, "height": 900},
                                  color_scheme="dark" if dark else "light")
    if dark:  # the theme's own switch, as a reader who picked dark mode has it
        context.add_init_script("localStorage.setItem('theme', 'dark'); localStorage.setItem('mode', 'dark');")
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    if dark:
        page.evaluate("() => { document.documentElement.dataset.theme = 'dark'; document.documentElement.dataset.mode = 'dark'; }")
    page.wait_for_timeout(300)
    return page


def local_file(built: Path, site: str, url: str) -> Path:  # noqa: F811
    return built / unquote(urlparse(url).path).lstrip("/")


# --------------------------------------------------------------------------- progress bars
def test_progress_bars_show_only_their_final_line(built):
    """An executed page shows each text progress bar once, in its final state, never a wall of updates."""
    walls = {}
    for name in toc_files():
        for box in soup(built, name).select("div.cell_output div.output, div.cell_output pre"):
            lines = [ln for ln in box.get_text().splitlines() if PROGRESS.search(ln)]
            labels = [ln.split(":")[0].strip() for ln in lines]
            if len(lines) > MAX_PROGRESS_LINES or len(set(labels)) < len(labels):
                walls.setdefault(name, []).append(f"{len(lines)} lines, first: {lines[0][:70]!r}")
    assert not walls, f"output boxes with more than one line per progress bar: {walls}"


# --------------------------------------------------------------------------- figures
FIGURES_JS = """() => [...document.querySelectorAll("article div.cell_output img")]
  .filter(i => !i.closest(".gradlab-frames"))
  .map(i => ({src: i.currentSrc || i.src, natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""


def png_font_info(path: Path):
    """(smallest font in points, dots per inch) that the book's figure settings wrote into a PNG."""
    from PIL import Image

    with Image.open(path) as image:
        info = dict(image.info)
    pt = info.get("gradlab:min_font_pt")
    dpi = info.get("dpi", (72, 72))[0]
    return (float(pt) if pt is not None else None), float(dpi)


@pytest.fixture(scope="module")
def figures(browser, site, built):  # noqa: F811
    found = {}
    for width in (DESKTOP, PHONE):
        for name in toc_files():
            page = visit(browser, f"{site}/{name}.html", width)
            found[name, width] = page.evaluate(FIGURES_JS)
            page.context.close()
    return found


def test_figures_are_retina_at_desktop_width(figures):
    blurry = {name: [(f["natural"], round(f["shown"])) for f in figs if f["natural"] < 2 * f["shown"] - 2]
              for (name, width), figs in figures.items() if width == DESKTOP}
    blurry = {k: v for k, v in blurry.items() if v}
    assert not blurry, f"figures with fewer than 2 image pixels per CSS pixel at 1400 px (natural, shown): {blurry}"


def test_figure_text_is_legible_on_a_phone(figures, built, site):  # noqa: F811
    """Smallest font (pt, from the PNG) x dpi/72 x shown/natural >= 9 CSS px at 390 px."""
    small, unknown = {}, {}
    for (name, width), figs in figures.items():
        if width != PHONE:
            continue
        for f in figs:
            path = local_file(built, site, f["src"])
            if path.suffix.lower() != ".png":
                continue
            pt, dpi = png_font_info(path)
            if pt is None:
                unknown.setdefault(name, []).append(path.name)
                continue
            css_px = pt * dpi / 72 * f["shown"] / f["natural"]
            if css_px < MIN_CSS_PX:
                small.setdefault(name, []).append(f"{path.name}: {css_px:.1f} px")
    assert not unknown, f"figures drawn without the book's figure settings (no font record): {unknown}"
    assert not small, f"figure text under {MIN_CSS_PX} CSS px at 390 px: {small}"


# --------------------------------------------------------------------------- explorers
FRAMES_RE = re.compile(r"var frames = (\[.*?\]), captions", re.S)


def explorer_pages(built) -> list[str]:
    return [name for name in toc_files() if "gradlab-frames" in (built / f"{name}.html").read_text(encoding="utf-8")]


def test_pages_stay_small_and_explorer_frames_are_files(built):
    assert explorer_pages(built), "no page has a precomputed explorer"
    heavy = {n: (built / f"{n}.html").stat().st_size for n in toc_files()
             if (built / f"{n}.html").stat().st_size > MAX_PAGE_BYTES}
    assert not heavy, f"pages over {MAX_PAGE_BYTES} bytes of HTML: {heavy}"
    for name in explorer_pages(built):
        text = (built / f"{name}.html").read_text(encoding="utf-8")
        for frames in FRAMES_RE.findall(text):
            sources = json.loads(frames)
            inlined = [s[:30] for s in sources if not s.endswith(".png")]
            assert not inlined, f"{name}: explorer frames inlined in the HTML ({len(inlined)})"
            for src in sources:
                assert (built / f"{name}.html").parent.joinpath(src).resolve().exists(), f"{name}: {src} missing"


def frame_files(built) -> dict[str, list[Path]]:
    out = {}
    for name in explorer_pages(built):
        page = built / f"{name}.html"
        for frames in FRAMES_RE.findall(page.read_text(encoding="utf-8")):
            out.setdefault(name, []).extend(page.parent.joinpath(s).resolve() for s in json.loads(frames)
                                            if s.endswith(".png"))
    return out


def test_explorer_frames_keep_their_labels_inside(built):
    """Nothing is drawn on a frame's outer 2-pixel border: an axis label cut by the image edge would be."""
    import numpy as np
    from PIL import Image

    cut, files = {}, frame_files(built)
    assert files, "no explorer frame files in the built book"
    for name, paths in files.items():
        for path in sorted(set(paths)):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L"), dtype=float)
            border = np.concatenate([pixels[:2].ravel(), pixels[-2:].ravel(), pixels[:, :2].ravel(),
                                     pixels[:, -2:].ravel()])
            if border.min() < 200:  # the background is white (255); ink is dark
                cut.setdefault(name, []).append(path.name)
    assert not cut, f"explorer frames with ink on their edge (a label cut off): {cut}"


EXPLORERS_JS = """() => [...document.querySelectorAll(".gradlab-frames")].map(root => {
  const img = root.querySelector("img");
  const controls = [...root.querySelectorAll("input, select")].map(c => c.getBoundingClientRect().height);
  return {natural: img.naturalWidth, shown: img.getBoundingClientRect().width, controls};
})"""

# Walk every grid point of every explorer; at each, every enabled control must change the picture for
# at least one of its other values (frames are named by their content, so equal sources are equal images).
IDLE_JS = """() => {
  const idle = [];
  for (const root of document.querySelectorAll(".gradlab-frames")) {
    const inputs = [...root.querySelectorAll("[data-stride]")];
    const sizes = inputs.map(el => el.tagName === "SELECT" ? el.options.length : Number(el.max) + 1);
    const set = (el, v) => { el.value = String(v); el.dispatchEvent(new Event("change")); };
    const total = sizes.reduce((a, b) => a * b, 1);
    for (let k = 0; k < total; k++) {
      let rest = k;
      const point = sizes.map((s, i) => 0);
      for (let i = sizes.length - 1; i >= 0; i--) { point[i] = rest % sizes[i]; rest = Math.floor(rest / sizes[i]); }
      inputs.forEach((el, i) => set(el, point[i]));
      const src = root.querySelector("img").getAttribute("src");
      inputs.forEach((el, i) => {
        if (el.disabled || sizes[i] < 2) return;
        let changes = false;
        for (let v = 0; v < sizes[i] && !changes; v++) {
          if (v === point[i]) continue;
          set(el, v);
          changes = root.querySelector("img").getAttribute("src") !== src;
        }
        inputs.forEach((e, j) => set(e, point[j]));
        if (!changes) idle.push(`${el.getAttribute("aria-label")} at ${point.join(",")}`);
      });
    }
  }
  return idle;
}"""


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_explorers_are_sharp_and_touchable(browser, site, built, width):  # noqa: F811
    problems = {}
    for name in explorer_pages(built):
        page = visit(browser, f"{site}/{name}.html", width)
        page.wait_for_function("() => [...document.querySelectorAll('.gradlab-frames img')].every(i => i.complete)")
        for ex in page.evaluate(EXPLORERS_JS):
            if ex["natural"] < 2 * ex["shown"] - 2:
                problems.setdefault(name, []).append(f"frame {ex['natural']} px shown at {ex['shown']:.0f} px")
            tiny = [round(h) for h in ex["controls"] if h < MIN_CONTROL_PX]
            if tiny:
                problems.setdefault(name, []).append(f"controls {tiny} px tall")
        page.context.close()
    assert not problems, f"at {width} px: {problems}"


def test_a_control_that_does_nothing_is_disabled(browser, site, built):  # noqa: F811
    idle = {}
    for name in explorer_pages(built):
        page = visit(browser, f"{site}/{name}.html", DESKTOP)
        found = page.evaluate(IDLE_JS)
        if found:
            idle[name] = found[:5]
        page.context.close()
    assert not idle, f"enabled explorer controls that change nothing: {idle}"


# --------------------------------------------------------------------------- dark mode
CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {  // the first opaque background behind el, blended with translucent ones
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      const a = c.length > 3 ? c[3] : 1;
      if (a > 0) layers.push([c.slice(0, 3), a]);
      if (a >= 1) break;
    }
    let out = [255, 255, 255];
    for (const [c, a] of layers.reverse()) out = out.map((v, i) => v * (1 - a) + c[i] * a);
    return out;
  };
  const out = [];
  for (const code of document.querySelectorAll("article code")) {
    if (code.closest("pre") || !code.textContent.trim() || !code.getClientRects().length) continue;
    const fg = rgb(getComputedStyle(code).color).slice(0, 3), bg = background(code);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    out.push({text: code.textContent.trim().slice(0, 40), ratio, note: !!code.closest(".gradlab-frames")});
  }
  return {theme: document.documentElement.dataset.theme, codes: out};
}"""


def test_inline_code_is_readable_in_dark_mode(browser, site, built):  # noqa: F811
    low, notes = {}, 0
    for name in toc_files():
        page = visit(browser, f"{site}/{name}.html", DESKTOP, dark=True)
        seen = page.evaluate(CONTRAST_JS)
        page.context.close()
        assert seen["theme"] == "dark"
        notes += sum(c["note"] for c in seen["codes"])
        bad = [f"{c['text']!r} {c['ratio']:.1f}" for c in seen["codes"] if c["ratio"] < MIN_CONTRAST]
        if bad:
            low[name] = bad[:5]
    assert notes, "no inline code in an explorer note was checked"
    assert not low, f"inline code with contrast under {MIN_CONTRAST} in dark mode: {low}"


# --------------------------------------------------------------------------- words and formulas at 390 px
# A word (in a table cell or a code span) split over lines between two of its letters or digits although
# it would fit on one line of its box: what `overflow-wrap: anywhere` did ("antithetic" one letter per
# line). Breaks after punctuation or a dash (`gradlab.` / `control_variates`, "2–" / "3") are allowed.
BROKEN_WORDS_JS = """() => {
  const broken = [];
  const top = (node, i) => {
    const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
    const rect = [...r.getClientRects()].find(q => q.width > 0);
    return rect ? Math.round(rect.top) : null;
  };
  const alnum = c => /[A-Za-z0-9]/.test(c);
  for (const box of document.querySelectorAll("article td, article th, article code")) {
    if (box.closest("pre, mjx-container")) continue;
    const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent;
      for (const m of text.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const rects = [...range.getClientRects()].filter(r => r.width > 0);
        if (new Set(rects.map(r => Math.round(r.top))).size < 2) continue;
        let block = box.closest("td, th") || box;
        while (block && block.clientWidth === 0) block = block.parentElement;  // inline code: its line box
        const width = rects.reduce((s, r) => s + r.width, 0);
        // about as long as a whole line (within an indent's 16 px): it may have to break
        if (!block || width > block.clientWidth - 16) continue;
        let prev = top(node, m.index);
        for (let i = m.index + 1; i < m.index + m[0].length; i++) {
          const t = top(node, i);
          if (t !== null && prev !== null && t > prev + 1 && alnum(text[i - 1]) && alnum(text[i])) {
            broken.push(m[0].slice(0, 40));
            break;
          }
          if (t !== null) prev = t;
        }
      }
    }
  }
  return [...new Set(broken)];
}"""

FORMULAS_JS = """() => [...document.querySelectorAll("article div.math")].map(box => {
  const inner = box.querySelector('mjx-container[display="true"]') || box;
  return {scrolls: inner.scrollWidth > inner.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1,
          right: Math.max(box.getBoundingClientRect().right, inner.getBoundingClientRect().right),
          text: box.textContent.trim().slice(0, 50)};
})"""


@pytest.fixture(scope="module")
def phone(browser, site):  # noqa: F811
    seen = {}
    for name in toc_files():
        page = visit(browser, f"{site}/{name}.html", PHONE)
        seen[name] = {"broken": page.evaluate(BROKEN_WORDS_JS), "formulas": page.evaluate(FORMULAS_JS),
                      "width": page.evaluate("() => document.documentElement.clientWidth")}
        page.context.close()
    return seen


def test_words_wrap_only_between_words(phone):
    broken = {name: r["broken"][:6] for name, r in phone.items() if r["broken"]}
    assert not broken, f"words broken mid-word at 390 px though they fit their box: {broken}"


def test_most_display_formulas_fit_a_phone(phone):
    formulas = [f for r in phone.values() for f in r["formulas"]]
    assert len(formulas) > 20
    wide = [f["text"] for f in formulas if f["scrolls"]]
    print(f"{len(wide)} of {len(formulas)} display formulas scroll at 390 px")
    assert len(wide) <= MAX_SCROLLING_FORMULAS * len(formulas), (
        f"{len(wide)} of {len(formulas)} display formulas need sideways scrolling at 390 px: {wide[:8]}")
    past = {n: [f["text"] for f in r["formulas"] if f["right"] > r["width"] + 1] for n, r in phone.items()}
    past = {n: v for n, v in past.items() if v}
    assert not past, f"formulas running past the page's edge instead of scrolling in their box: {past}"


# --------------------------------------------------------------------------- search
def test_search_snippets_show_no_raw_tex(browser, site):  # noqa: F811
    page = visit(browser, f"{site}/search.html?q=gradient+variance", DESKTOP)
    page.wait_for_function("() => document.querySelectorAll('#search-results li p, #search-results li div.context').length > 2",
                           timeout=30000)
    snippets = page.evaluate("() => [...document.querySelectorAll('#search-results li p, #search-results li div.context')]"
                             ".map(p => p.textContent)")
    page.context.close()
    raw = [s[:80] for s in snippets if re.search(r"\\\(|\\\[|\\[a-zA-Z]{2,}\{|\$\$", s)]
    assert not raw, f"search snippets with raw TeX: {raw[:5]}"


# --------------------------------------------------------------------------- figures: records of the figure settings
def figure_records(figures, built, site, key: str) -> dict:  # noqa: F811
    """Per page, the non-empty PNG record ``key`` the book's figure settings wrote when a figure was saved."""
    from PIL import Image

    found = {}
    for (name, width), figs in figures.items():
        for f in figs:
            path = local_file(built, site, f["src"])
            if path.suffix.lower() != ".png":
                continue
            with Image.open(path) as image:
                record = image.info.get(key, "")
            if record:
                found.setdefault(name, set()).add(f"{path.name[:12]}: {record[:120]}")
    return found


def test_no_figure_draws_tick_labels_over_each_other(figures, built, site):  # noqa: F811
    """Neighbouring tick labels of one axis never overlap (e.g. a log axis's minor labels running
    together); the book's figure settings measure it when a figure is saved (gradlab:tick_overlaps)."""
    crowded = figure_records(figures, built, site, "gradlab:tick_overlaps")
    assert not crowded, f"figures with tick labels drawn over each other: {crowded}"


def test_no_legend_hides_plotted_data(figures, built, site):  # noqa: F811
    """A legend sits where there is no data (or outside the axes); the figure settings move one that
    covers plotted points and record what still does (gradlab:legend_over_data)."""
    hidden = figure_records(figures, built, site, "gradlab:legend_over_data")
    assert not hidden, f"figures whose legend hides plotted data: {hidden}"


# --------------------------------------------------------------------------- progress bars: complete
BAR_COUNT = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


def test_progress_bars_end_at_their_total(built):
    """A loop's bar, in its final state, reads n/n: a bar left at 800/801 says the loop stopped early."""
    short = {}
    for name in toc_files():
        for box in soup(built, name).select("div.cell_output div.output, div.cell_output pre"):
            for line in box.get_text().splitlines():
                m = BAR_COUNT.search(line)
                if m and m.group(1) != m.group(2):
                    short.setdefault(name, []).append(line.strip()[:70])
    assert not short, f"progress bars that end before their total: {short}"
