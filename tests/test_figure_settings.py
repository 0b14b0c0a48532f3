"""The book's figure settings (book/_ext/ipython/.../00_gradlab_book.py) on synthetic figures.

The reader tests check the built book's PNGs; these check the three helpers that produce their
records: colliding tick labels are found (and decluttered on a log axis), legends over data are
found, and a covering legend is moved off the data.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STARTUP = Path(__file__).resolve().parents[1] / "book/_ext/ipython/profile_default/startup/00_gradlab_book.py"


@pytest.fixture(scope="module")
def settings():
    source = STARTUP.read_text(encoding="utf-8").split("\n_gradlab_book_settings()\n")[0]
    namespace: dict = {}
    exec(compile(source, str(STARTUP), "exec"), namespace)  # the helpers, without installing them
    yield namespace
    plt.close("all")


def test_colliding_log_minor_labels_are_found_and_decluttered(settings):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.loglog([32, 128, 512], [1.0, 0.1, 0.01])
    ax.tick_params(labelsize=11.77)
    assert len(settings["_overlapping_tick_labels"](fig)) >= 1
    assert settings["_overlapping_tick_labels"](fig, declutter=True) == []
    assert [t.get_text() for t in ax.xaxis.get_ticklabels(minor=True) if t.get_text()] == []
    assert any(t.get_text() for t in ax.xaxis.get_ticklabels())  # the major labels stay


def test_well_spaced_labels_are_not_reported(settings):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(np.arange(10), np.arange(10) ** 2)
    assert settings["_overlapping_tick_labels"](fig, declutter=True) == []


def test_a_legend_over_a_line_is_found_and_one_in_an_empty_corner_is_not(settings):
    x = np.linspace(0, 1, 50)
    fig, ax = plt.subplots()
    ax.plot(x, x, label="rising")
    ax.plot(x, 1 - x, label="falling")
    ax.legend(loc="center")
    assert settings["_legends_over_data"](fig)
    fig, ax = plt.subplots()
    ax.plot(x, x ** 4, label="flat, then up")
    ax.axhline(0.9, color="0.8")  # an unlabelled reference line may sit under a legend
    ax.legend(loc="upper left")
    assert settings["_legends_over_data"](fig) == []


def test_markers_under_a_legend_count(settings):
    fig, ax = plt.subplots()
    ax.scatter([0.5], [0.5])
    ax.scatter([0.0, 1.0], [0.0, 1.0], label="points")
    ax.legend(loc="center")
    assert settings["_legends_over_data"](fig)


def test_a_covering_legend_moves_inside_or_below(settings):
    x = np.linspace(0, 1, 50)
    fig, ax = plt.subplots()
    ax.plot(x, x, label="rising")
    ax.plot(x, 1 - x, label="falling")
    ax.legend(loc="center")
    settings["_move_legends_off_data"](fig)
    assert settings["_legends_over_data"](fig) == []
    fig, ax = plt.subplots()  # twelve flat lines fill the axes: the legend has to go below them
    for level in np.linspace(0, 1, 12):
        ax.plot(x, np.full_like(x, level), label=f"{level:.2f}")
    ax.legend(loc="center", ncol=3)
    ax.set_xlabel("x")
    settings["_move_legends_off_data"](fig)
    assert settings["_legends_over_data"](fig) == []
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).y1 <= ax.xaxis.get_tightbbox(renderer).y0 + 1


def test_wide_titles_wrap_and_a_wider_crop_still_leaves_legible_text(settings, tmp_path):
    """A title wider than the figure wraps; a legend outside the axes widens the saved (tight) PNG,
    and the font floor follows that width: the smallest text stays >= 9 CSS px at 358 px."""
    from matplotlib.backend_bases import FigureCanvasBase
    from PIL import Image

    class FakeIPython:
        def run_line_magic(self, *args):
            pass

    settings["get_ipython"] = lambda: FakeIPython()
    original = FigureCanvasBase.print_figure
    try:
        settings["_gradlab_book_settings"].__globals__["get_ipython"] = settings["get_ipython"]
        settings["_gradlab_book_settings"]()
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1])
        ax.set_title("a title far wider than this small figure, so that the crop widens the image a lot: "
                     "half as wide again as the figure itself", fontsize=8)
        path = tmp_path / "wide.png"
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        with Image.open(path) as image:
            pt, natural, dpi = float(image.info["gradlab:min_font_pt"]), image.size[0], image.info["dpi"][0]
        assert natural / dpi < 4 * 1.1  # the title wrapped at the figure's edge instead of widening the crop
        assert pt * dpi / 72 * 358 / natural >= 9.0
        fig, ax = plt.subplots(figsize=(4, 3))  # a legend outside the axes does widen the crop
        ax.plot([0, 1], [0, 1], label="a line")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        with Image.open(path) as image:
            pt, natural, dpi = float(image.info["gradlab:min_font_pt"]), image.size[0], image.info["dpi"][0]
        assert natural / dpi > 4 * 1.1 and pt > 8  # wider than the figure, so its text was enlarged
        assert pt * dpi / 72 * 358 / natural >= 9.0
    finally:
        FigureCanvasBase.print_figure = original
