"""Settings every page of the book is executed with (the kernel's IPython startup file).

book/_ext/gradlab_book.py points the build's kernels here (IPYTHONDIR), so the settings live in
one place and no chapter repeats them:

* figures are PNGs at (at least) twice their CSS size (retina), sharp on any screen;
* no text in a figure is smaller than 9 CSS px once the figure is shrunk to a 390 px phone:
  the book's figures fill the content column (about 358 px there), so a font of ``s`` points
  in a figure ``w`` inches wide shows at ``s * 358 / (72 * w)`` CSS px. Text below that is
  enlarged just before the figure is saved, and the smallest size is written into the PNG
  (``gradlab:min_font_pt``) for the reader tests;
* neighbouring tick labels never overlap: an axis whose minor labels collide (a log axis over
  about one decade) keeps its major labels only; what still collides is written into the PNG
  (``gradlab:tick_overlaps``) for the reader tests;
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


def _legends_over_data(fig) -> list:
    """Legends drawn over plotted data: for each legend, how many points of the axes' lines (their
    vertices and points in between, every few pixels) and scatter markers fall inside its box.
    A legend belongs in an empty corner (``loc="best"`` finds one) or outside the axes."""
    import numpy as np

    try:
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
    except Exception:  # noqa: BLE001
        return []
    found = []
    for ax in fig.axes:
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
            if line.get_linestyle() not in ("None", "none", "", " ") and len(xy) > 1:
                steps = np.maximum(np.ceil(np.hypot(*np.diff(xy, axis=0).T) / 3.0), 1).astype(int)
                xy = np.concatenate([np.linspace(a, b, n, endpoint=False) for a, b, n in zip(xy[:-1], xy[1:], steps)]
                                    + [xy[-1:]])
            inside_axes = (xy[:, 0] >= clip.x0) & (xy[:, 0] <= clip.x1) & (xy[:, 1] >= clip.y0) & (xy[:, 1] <= clip.y1)
            inside = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
            covered += int((inside & inside_axes).sum())
        for coll in ax.collections:
            offsets = getattr(coll, "get_offsets", lambda: [])()
            if coll.get_visible() and len(offsets) and type(coll).__name__ == "PathCollection":
                xy = coll.get_offset_transform().transform(np.asarray(offsets, dtype=float))
                covered += int(((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)).sum())
        if covered:
            found.append(f"{ax.get_title()[:40] or 'axes'}: {covered} points")
    return found


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
        floor_pt = min_css_px * 72.0 * width_in / phone_column_px
        smallest = None
        for ax in fig.axes:  # tick labels made at draw time copy these settings
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                labels = axis.get_ticklabels(which="both")
                if labels and min(t.get_fontsize() for t in labels) < floor_pt:
                    ax.tick_params(axis=name, which="both", labelsize=floor_pt)
        for text in fig.findobj(Text):
            if not text.get_visible() or not text.get_text().strip():
                continue
            if text.get_fontsize() < floor_pt:
                text.set_fontsize(floor_pt)
            size = text.get_fontsize()
            smallest = size if smallest is None else min(smallest, size)
        overlaps = _overlapping_tick_labels(fig, declutter=True)
        # At least 2 image pixels per CSS pixel in the widest column (784 px at 1400 px, with room
        # for the tight crop): a 7 in figure is saved at about 245 dpi rather than retina's 200.
        if kwargs.get("dpi") is not None:
            saved_in = width_in
            if kwargs.get("bbox_inches") == "tight":
                try:
                    saved_in = fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.1
                except Exception:  # noqa: BLE001 (a figure that cannot measure itself keeps its width)
                    pass
            kwargs["dpi"] = max(float(kwargs["dpi"]), 2 * desktop_column_px / saved_in)
        fmt = kwargs.get("format") or (filename if isinstance(filename, str) and "." not in filename else None)
        if fmt == "png" and smallest is not None:
            metadata = dict(kwargs.get("metadata") or {})
            metadata["gradlab:min_font_pt"] = f"{smallest:.2f}"
            metadata["gradlab:width_in"] = f"{width_in:.3f}"
            metadata["gradlab:tick_overlaps"] = "; ".join(overlaps)
            metadata["gradlab:legend_over_data"] = "; ".join(_legends_over_data(fig))
            kwargs["metadata"] = metadata
        return original(self, filename, *args, **kwargs)

    print_figure._gradlab = True
    FigureCanvasBase.print_figure = print_figure


_gradlab_book_settings()
_gradlab_progress_bars()
del _gradlab_book_settings, _gradlab_progress_bars
