"""Settings every page of the book is executed with (the kernel's IPython startup file).

book/_ext/gradlab_book.py points the build's kernels here (IPYTHONDIR), so the settings live in
one place and no chapter repeats them:

* figures are PNGs at (at least) twice their CSS size (retina), sharp on any screen;
* no text in a figure is smaller than 9 CSS px once the figure is shrunk to a 390 px phone:
  the book's figures fill the content column (about 358 px there), so a font of ``s`` points
  in an image ``w`` inches wide shows at ``s * 358 / (72 * w)`` CSS px, where ``w`` is the width
  of the saved (tightly cropped) image. Text below that is enlarged just before the figure is saved, and the smallest size is written into the PNG
  (``gradlab:min_font_pt``) for the reader tests;
* neighbouring tick labels never overlap: an axis whose minor labels collide (a log axis over
  about one decade) keeps its major labels only; what still collides is written into the PNG
  (``gradlab:tick_overlaps``) for the reader tests;
* no legend hides data: one that covers plotted points moves to the emptiest place in its
  axes, or below them; what still covers data is recorded (``gradlab:legend_over_data``);
* a text progress bar (tqdm) shows only its final line: a notebook output keeps every redraw
  (``\r`` does not erase in a saved output), so tqdm writes through a filter that passes on a
  line only when it ends, and only what follows its last carriage return. A bar that clears
  itself (``leave=False``) leaves nothing.
"""
import sys as _sys


class _FinalLines:
    """A text stream that forwards each completed line's final state (after its last ``\r``)."""

    encoding = "utf-8"

    def __init__(self) -> None:
        self.line = ""

    def write(self, text: str) -> int:
        parts = text.split("\n")
        for i, part in enumerate(parts):
            self.line = part.rsplit("\r", 1)[1] if "\r" in part else self.line + part
            if i < len(parts) - 1:
                if self.line.strip():
                    _sys.stderr.write(self.line + "\n")
                self.line = ""
        return len(text)

    def flush(self) -> None:
        _sys.stderr.flush()


def _gradlab_progress_bars() -> None:
    try:
        from tqdm import std
    except ImportError:
        return
    original = std.tqdm.__init__
    if getattr(original, "_gradlab", False):
        return

    def __init__(self, *args, **kwargs):
        if len(args) < 5 and kwargs.get("file") is None:  # file is tqdm's 5th positional argument
            kwargs["file"] = _FinalLines()
        original(self, *args, **kwargs)

    __init__._gradlab = True
    std.tqdm.__init__ = __init__


def _overlapping_tick_labels(fig, declutter: bool = False) -> list:
    """Pairs of neighbouring tick labels on one axis whose boxes overlap, as ``"a | b"`` strings.

    With ``declutter``, an axis whose labels collide and that labels its minor ticks (a log axis
    spanning about one decade labels 2x10^1, 3x10^1, ... and runs them together) keeps its major
    labels only, and is measured again. The result is written into the PNG for the reader tests.
    """
    try:
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
    except Exception:  # noqa: BLE001 (a figure that cannot draw itself here is not measured)
        return []

    def collisions(axis, along):
        lo, hi = sorted(axis.get_view_interval())
        slack = 1e-9 * (abs(hi) + abs(lo) + 1.0)
        boxes = []
        for label in axis.get_ticklabels(which="both"):
            if not label.get_visible() or not label.get_text().strip():
                continue
            if not lo - slack <= label.get_position()[along] <= hi + slack:
                continue
            boxes.append((label.get_window_extent(renderer), label.get_text()))
        boxes.sort(key=lambda item: item[0].x0 if along == 0 else item[0].y0)
        out = []
        for (first, a), (second, b) in zip(boxes, boxes[1:]):
            gap = second.x0 - first.x1 if along == 0 else second.y0 - first.y1
            if gap < -0.5:  # more than half a pixel of one label drawn over the next
                out.append(f"{a} | {b}")
        return out

    found = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis, along in ((ax.xaxis, 0), (ax.yaxis, 1)):
            clash = collisions(axis, along)
            minor = [t for t in axis.get_ticklabels(minor=True) if t.get_visible() and t.get_text().strip()]
            if clash and declutter and minor:
                from matplotlib.ticker import NullFormatter

                axis.set_minor_formatter(NullFormatter())
                fig.draw_without_rendering()
                clash = collisions(axis, along)
            found += clash
    return found


def _legends_over_data(fig, only=None, redraw: bool = True) -> list:
    """Legends drawn over plotted data: for each legend, how many points of the axes' lines (their
    vertices and points in between, every few pixels) and scatter markers fall inside its box.
    A legend belongs in an empty corner (``loc="best"`` finds one) or outside the axes."""
    import numpy as np

    try:
        if redraw:
            fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
    except Exception:  # noqa: BLE001
        return []
    def within(xy, bbox, strict: bool):
        if strict:
            return (xy[:, 0] > bbox.x0) & (xy[:, 0] < bbox.x1) & (xy[:, 1] > bbox.y0) & (xy[:, 1] < bbox.y1)
        return (xy[:, 0] >= bbox.x0) & (xy[:, 0] <= bbox.x1) & (xy[:, 1] >= bbox.y0) & (xy[:, 1] <= bbox.y1)

    found = []
    for ax in fig.axes if only is None else [only]:
        legend = ax.get_legend()
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer).padded(-1.0)
        clip = ax.get_window_extent(renderer)
        covered = 0
        for line in ax.get_lines():
            if not line.get_visible():
                continue
            xy = line.get_transform().transform(np.column_stack(line.get_data(orig=False)).astype(float))
            xy = xy[np.isfinite(xy).all(1)]
            if len(xy) == 0:
                continue
            if line.get_label().startswith("_") and len(xy) == 2 and (np.ptp(xy[:, 0]) < 1 or np.ptp(xy[:, 1]) < 1):
                continue  # an unlabelled reference line (axhline / axvline): a legend may sit on it
            if line.get_linestyle() not in ("None", "none", "", " ") and len(xy) > 1:
                steps = np.maximum(np.ceil(np.hypot(*np.diff(xy, axis=0).T) / 3.0), 1).astype(int)
                xy = np.concatenate([np.linspace(a, b, n, endpoint=False) for a, b, n in zip(xy[:-1], xy[1:], steps)]
                                    + [xy[-1:]])
            covered += int((within(xy, box, strict=True) & within(xy, clip, strict=False)).sum())
        for coll in ax.collections:
            offsets = getattr(coll, "get_offsets", lambda: [])()
            if coll.get_visible() and len(offsets) and type(coll).__name__ == "PathCollection":
                xy = coll.get_offset_transform().transform(np.asarray(offsets, dtype=float))
                covered += int(within(xy, box, strict=True).sum())
        if covered:
            found.append(f"{ax.get_title()[:40] or 'axes'}: {covered} points")
    return found


def _move_legends_off_data(fig, drawn: bool = False) -> list:
    """A legend that hides plotted data moves: first to the emptiest place inside the axes
    (``loc="best"``), and, if data are still under it, below the axes (under the x label) when
    the axes are in the figure's bottom row. Returns what still covers data (as
    :func:`_legends_over_data`). ``drawn``: the figure was just drawn (no draw needed to measure)."""
    if not drawn:
        fig.draw_without_rendering()
    covering = [ax for ax in fig.axes if _legends_over_data(fig, only=ax, redraw=False)]
    if not covering:
        return []
    for ax in covering:
        legend = ax.get_legend()
        legend.set_loc("best")
        legend.set_bbox_to_anchor(None)
    fig.draw_without_rendering()
    moved = False
    for ax in covering:
        if not _legends_over_data(fig, only=ax, redraw=False):
            continue
        spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
        if spec is not None and not spec.is_last_row():
            continue
        bottom = ax.get_tightbbox(fig.canvas.get_renderer()).y0
        _, y = ax.transAxes.inverted().transform((0.0, bottom - 4.0))
        legend = ax.get_legend()
        legend.set_loc("upper center")
        legend.set_bbox_to_anchor((0.5, y), transform=ax.transAxes)
        moved = True
    return _legends_over_data(fig, redraw=moved)


def _gradlab_book_settings() -> None:
    import matplotlib

    matplotlib.use("module://matplotlib_inline.backend_inline")
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.text import Text

    ip = get_ipython()  # noqa: F821 (defined in IPython startup files)
    ip.run_line_magic("config", "InlineBackend.figure_formats = ['retina']")

    phone_column_px, min_css_px, desktop_column_px = 358.0, 9.0, 800.0
    original = FigureCanvasBase.print_figure
    if getattr(original, "_gradlab", False):
        return

    def print_figure(self, filename, *args, **kwargs):
        fig = self.figure
        width_in = fig.get_size_inches()[0]
        tight = kwargs.get("bbox_inches") == "tight"

        def saved_width() -> float:
            """The width the PNG will have, in inches: a tight crop keeps whatever is drawn (a title
            or legend wider than the figure widens the image, which a phone then shrinks more)."""
            if not tight:
                return width_in
            try:
                pad = kwargs.get("pad_inches")
                pad = matplotlib.rcParams["savefig.pad_inches"] if not isinstance(pad, (int, float)) else pad
                return fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * pad
            except Exception:  # noqa: BLE001 (a figure that cannot measure itself keeps its width)
                return width_in

        def raise_fonts(floor_pt: float):
            for ax in fig.axes:  # tick labels made at draw time copy these settings
                for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                    labels = axis.get_ticklabels(which="both")
                    if labels and min(t.get_fontsize() for t in labels) < floor_pt:
                        ax.tick_params(axis=name, which="both", labelsize=floor_pt)
            smallest = None
            for text in fig.findobj(Text):
                if not text.get_visible() or not text.get_text().strip():
                    continue
                if text.get_fontsize() < floor_pt:
                    text.set_fontsize(floor_pt)
                size = text.get_fontsize()
                smallest = size if smallest is None else min(smallest, size)
            return smallest

        # Titles and axis labels wrap at the figure's edge instead of widening the crop (a wider
        # image is shrunk more on a phone, and enlarging its text would only widen it again).
        for ax in fig.axes:
            for text in (ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None),
                         ax.xaxis.label, ax.yaxis.label):
                if text is not None:
                    text.set_wrap(True)
        if getattr(fig, "_suptitle", None) is not None:
            fig._suptitle.set_wrap(True)
        smallest = raise_fonts(min_css_px * 72.0 * width_in / phone_column_px)
        overlaps = _overlapping_tick_labels(fig, declutter=True)  # draws the figure once
        try:
            covered = _move_legends_off_data(fig, drawn=True)  # no further draw unless a legend has to move
        except Exception:  # noqa: BLE001 (a legend that cannot move stays, and is recorded)
            covered = _legends_over_data(fig)
        for _ in range(3):  # larger text widens the crop a little more: settle in a few rounds
            saved_in = saved_width()
            needed = min_css_px * 72.0 * saved_in / phone_column_px
            if smallest is None or smallest >= needed:
                break
            smallest = raise_fonts(needed * 1.01)
        # At least 2 image pixels per CSS pixel in the widest column (784 px at 1400 px, with room
        # for the tight crop): a 7 in figure is saved at about 245 dpi rather than retina's 200.
        if kwargs.get("dpi") is not None:
            saved_in = saved_width()
            kwargs["dpi"] = max(float(kwargs["dpi"]), 2 * desktop_column_px / saved_in)
        fmt = kwargs.get("format") or (filename if isinstance(filename, str) and "." not in filename else None)
        if fmt == "png" and smallest is not None:
            metadata = dict(kwargs.get("metadata") or {})
            metadata["gradlab:min_font_pt"] = f"{smallest:.2f}"
            metadata["gradlab:width_in"] = f"{width_in:.3f}"
            metadata["gradlab:tick_overlaps"] = "; ".join(overlaps)
            metadata["gradlab:legend_over_data"] = "; ".join(covered)
            kwargs["metadata"] = metadata
        return original(self, filename, *args, **kwargs)

    print_figure._gradlab = True
    FigureCanvasBase.print_figure = print_figure


_gradlab_book_settings()
_gradlab_progress_bars()
del _gradlab_book_settings, _gradlab_progress_bars
