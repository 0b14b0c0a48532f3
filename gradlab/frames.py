"""How an explorer is shown: live ipywidgets, a matplotlib figure, or precomputed frames.

:func:`frames_html` takes one PNG per point of a grid of control values and writes a
``<div>`` (a few lines of inline JavaScript, no external script, no network) whose range
inputs and menus pick the picture to show. The images are ``data:`` URIs, or, when the
environment names a folder (``GRADLAB_FRAMES_DIR``, with its URL ``GRADLAB_FRAMES_URL``, as the
book's build does), PNG files written there and loaded only when shown. A control that does not
apply to the view shown is disabled, with a note saying so.
:class:`Explorer` is the base of the explorers in :mod:`gradlab.widgets`.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["StaticView", "frames_html", "Explorer", "fmt", "log_slider"]

COLAB = "https://colab.research.google.com/github/gradlab/gradlab/blob/main/"
KNOB_SYMBOLS = {"eps": "ε", "sigma": "σ", "tau": "τ"}

_SCRIPT = """
(function () {
  var root = document.getElementById(%(id)s);
  var frames = %(frames)s, captions = %(captions)s, labels = %(labels)s, inactive = %(inactive)s;
  var names = %(names)s;
  var inputs = root.querySelectorAll("[data-stride]");
  function show() {
    var k = 0;
    inputs.forEach(function (el, i) {
      k += Number(el.value) * Number(el.dataset.stride);
      if (el.tagName === "INPUT") { el.nextElementSibling.textContent = labels[i][Number(el.value)]; }
    });
    var off = inactive[k] || [], notes = [];
    inputs.forEach(function (el, i) {
      var idle = off.indexOf(i) >= 0;
      el.disabled = idle;
      el.closest("label").classList.toggle("gradlab-inactive", idle);
      if (idle) { notes.push(names[i]); }
    });
    var why = root.querySelector(".gradlab-inactive-note");
    why.textContent = notes.length ? notes.join(", ") + (notes.length > 1 ? " do" : " does") +
      " not apply to this setting (its value changes nothing here)." : "";
    var src = frames[k];  // a file's URL, or the PNG itself in base64
    root.querySelector("img").src = /\.png$/.test(src) ? src : "data:image/png;base64," + src;
    root.querySelector(".gradlab-caption").textContent = captions[k];
    root.dataset.frame = String(k);
  }
  inputs.forEach(function (el) { el.addEventListener("input", show); el.addEventListener("change", show); });
  show();
})();
"""


def frames_html(
    frames: Sequence[bytes],
    controls: Sequence[Tuple[str, Sequence[str]]],
    captions: Optional[Sequence[str]] = None,
    initial: Optional[Sequence[int]] = None,
    note: str = "",
    alt: str = "explorer view",
    inactive: Optional[Sequence[Sequence[int]]] = None,
) -> str:
    """HTML that shows ``frames[k]`` for the control setting with flat (C-order) index ``k``.

    ``controls`` lists ``(label, value_labels)`` in grid order; a control whose value
    labels are all numbers becomes a slider, any other a menu. ``initial`` gives each
    control's starting position (default: the middle of each slider, the first menu item).
    ``inactive[k]`` lists the controls (by position) that do not change frame ``k``: they are
    disabled while it is shown, with a note.
    """
    sizes = [len(values) for _, values in controls]
    count = 1
    for size in sizes:
        count *= size
    if len(frames) != count:
        raise ValueError(f"frames must have one image per grid point ({count}), got {len(frames)}")
    captions = list(captions) if captions is not None else [""] * count
    if len(captions) != count:
        raise ValueError(f"captions must have {count} entries, got {len(captions)}")
    inactive = [sorted(int(i) for i in off) for off in inactive] if inactive is not None else [[]] * count
    if len(inactive) != count:
        raise ValueError(f"inactive must have {count} entries, got {len(inactive)}")
    digests = [hashlib.sha1(png).hexdigest() for png in frames]
    ident = "gradlab-" + hashlib.sha1("".join(digests).encode()).hexdigest()[:12]
    sources = _frame_sources(frames, digests)
    width = _png_width(frames[0]) if frames else 0
    strides, stride = [], 1
    for size in reversed(sizes):
        strides.append(stride)
        stride *= size
    strides.reverse()
    starts = list(initial) if initial is not None else [
        size // 2 if _numeric(values) else 0 for size, (_, values) in zip(sizes, controls)
    ]
    parts: List[str] = [f'<div class="gradlab-frames" id="{ident}">', '<div class="gradlab-controls">']
    for (label, values), size, step, start in zip(controls, sizes, strides, starts):
        name = html.escape(label)
        if _numeric(values):
            parts.append(
                f'<label class="gradlab-control">{name} <input type="range" aria-label="{name}" min="0" '
                f'max="{size - 1}" step="1" value="{start}" data-stride="{step}"> <output></output></label>'
            )
        else:
            options = "".join(
                f'<option value="{i}"{" selected" if i == start else ""}>{html.escape(v)}</option>'
                for i, v in enumerate(values)
            )
            parts.append(f'<label class="gradlab-control">{name} <select aria-label="{name}" '
                         f'data-stride="{step}">{options}</select></label>')
    parts.append('<p class="gradlab-inactive-note" aria-live="polite"></p>')
    parts.append("</div>")
    # Drawn at (at least) twice the CSS width it asks for: sharp on a retina screen.
    size = f' width="{width // 2}"' if width else ""
    parts.append(f'<img class="gradlab-frame" alt="{html.escape(alt)}"{size} style="max-width:100%;height:auto">')
    parts.append('<div class="gradlab-caption" style="font-family:monospace"></div>')
    if note:
        parts.append(f'<p class="gradlab-note">{note}</p>')
    parts.append("</div>")
    script = _SCRIPT % {
        "id": json.dumps(ident), "frames": json.dumps(sources), "captions": json.dumps(captions),
        "labels": json.dumps([list(values) for _, values in controls]), "inactive": json.dumps(inactive),
        "names": json.dumps([label for label, _ in controls]),
    }
    return "\n".join(parts) + f"\n<script>{script}</script>\n"


def _frame_sources(frames: Sequence[bytes], digests: Sequence[str]) -> List[str]:
    """Image sources: files in ``$GRADLAB_FRAMES_DIR`` (named by content) if set, else base64 PNGs."""
    folder = os.environ.get("GRADLAB_FRAMES_DIR")
    if not folder:
        return [base64.b64encode(png).decode("ascii") for png in frames]
    url = os.environ.get("GRADLAB_FRAMES_URL", folder).rstrip("/")
    Path(folder).mkdir(parents=True, exist_ok=True)
    for png, digest in zip(frames, digests):
        path = Path(folder) / f"{digest}.png"
        if not path.exists():
            path.write_bytes(png)
    return [f"{url}/{digest}.png" for digest in digests]


def _png_width(png: bytes) -> int:
    """The pixel width in a PNG's header (0 if the bytes are not a PNG)."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _numeric(values: Sequence[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


class StaticView:
    """An explorer's precomputed views; displays itself as :func:`frames_html` in Jupyter and in the book."""

    def __init__(self, html_text: str, num_frames: int) -> None:
        self.html = html_text
        self.num_frames = num_frames

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"StaticView({self.num_frames} precomputed frames)"


# =========================================================================== explorer base
class Explorer:
    """Shared machinery: cached views, figures, ipywidgets layer, precomputed HTML."""

    figsize = (5.4, 4.3)
    # 5.4 in at 300 dpi: 1620 px, twice the widest the book's column shows it (sharp on a retina
    # desktop), and with the fonts below no text under 9 CSS px when shrunk to a 390 px phone.
    dpi = 300
    style = {"font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11,
             "ytick.labelsize": 11, "legend.fontsize": 11}
    has_resample = True

    def __init__(self, **params: Any) -> None:
        self.params = self.normalize(params)
        self._cache: Dict[tuple, Any] = {}
        self._pngs: Dict[tuple, bytes] = {}
        self._canvas = None  # the figure that live updates and precomputed frames redraw in place
        self._box = None
        self._busy = False

    # ---------------------------------------------------------------- computation
    def normalize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return dict(params)

    def key(self, p: Dict[str, Any]) -> tuple:
        """What the view depends on (the cache key); explorers drop controls their estimator ignores."""
        return tuple(sorted(p.items()))

    def compute(self, **params: Any) -> Any:
        """The view for these control values (merged into the current ones), cached."""
        p = self.normalize({**self.params, **params})
        key = self.key(p)
        if key not in self._cache:
            self._cache[key] = self._compute(p)
        return self._cache[key]

    def metrics(self, **params: Any) -> Dict[str, Any]:
        """The numbers the explorer displays for these control values."""
        p = self.normalize({**self.params, **params})
        return self._metrics(self.compute(**p), p)

    def figure(self, **params: Any):
        """A matplotlib ``Figure`` of the view for these control values."""
        from matplotlib.figure import Figure

        import matplotlib

        p = self.normalize({**self.params, **params})
        with matplotlib.rc_context(self.style):
            fig = Figure(figsize=self.figsize, layout="constrained")
            self._draw(fig, self.compute(**p), p)
        return fig

    def png(self, **params: Any) -> bytes:
        """The view as PNG bytes, drawn on one reused figure (updated in place where the explorer can), cached."""
        import matplotlib
        from matplotlib.figure import Figure

        p = self.normalize({**self.params, **params})
        key = self.key(p)
        if key not in self._pngs:
            view = self.compute(**p)
            with matplotlib.rc_context(self.style):
                if self._canvas is None or not self._refresh(self._canvas, view, p):
                    # The layout engine keeps every label inside the image (same size for every frame).
                    self._canvas = self._canvas or Figure(figsize=self.figsize, layout="constrained")
                    self._canvas.clear()
                    self._draw(self._canvas, view, p)
                buf = io.BytesIO()
                self._canvas.savefig(buf, format="png", dpi=self.dpi)
            self._pngs[key] = buf.getvalue()
        return self._pngs[key]

    def _refresh(self, fig: Any, view: Any, p: Dict[str, Any]) -> bool:
        """Update the artists of the last ``_draw`` on ``fig`` in place; False: draw afresh."""
        return False

    def remember(self, fig: Any, ax: Any) -> None:
        """Note the axes ``_draw`` just drew on ``fig``, for ``_refresh``."""
        self._drawn = (fig, ax)

    def drawn_axes(self, fig: Any) -> Any:
        """The axes of the last ``_draw`` if it drew on ``fig``, else None."""
        drawn = getattr(self, "_drawn", None)
        return drawn[1] if drawn is not None and drawn[0] is fig else None

    # ---------------------------------------------------------------- live (ipywidgets)
    @property
    def widget(self):
        """The ipywidgets box (built on first use)."""
        if self._box is None:
            import ipywidgets as w

            self.controls = self._controls(w)
            for control in self.controls.values():
                control.observe(self._on_change, names="value")
            self.readout = w.HTML()
            self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
            extra = []
            if self.has_resample:
                button = w.Button(description="resample", icon="refresh", tooltip="new random draws")
                button.on_click(lambda _: self.set(seed=self.params["seed"] + 1))
                extra.append(button)
            self._box = w.VBox([*self.controls.values(), *extra, self.readout, self.image])
            self.update()
        return self._box

    def _on_change(self, change: Any) -> None:
        if not self._busy:
            self.params = self.normalize({**self.params, **self._read(change)})
            self.update()

    def set(self, **params: Any) -> None:
        """Set control values as a reader would (updates the widgets and the view)."""
        self.widget  # noqa: B018 (build the controls)
        self.params = self.normalize({**self.params, **params})
        self._busy = True
        try:
            self._write()
        finally:
            self._busy = False
        self.update()

    def update(self) -> None:
        view = self.compute()
        self.readout.value = self._readout(self._metrics(view, self.params))
        self.image.value = self.png()

    def _readout(self, metrics: Dict[str, Any]) -> str:
        cells = " · ".join(
            f'{html.escape(k.replace("_", " "))} <span class="gradlab-{k.replace("_", "-")}">{fmt(v)}</span>'
            for k, v in metrics.items()
        )
        return f'<div class="gradlab-readout" style="font-family:monospace">{cells}</div>'

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ---------------------------------------------------------------- precomputed
    def static_html(self, *, colab: Optional[str] = None, **grid: Sequence[Any]) -> StaticView:
        """Views for every combination of the ``grid`` values, switched by sliders/menus in the browser."""
        names = list(grid)
        frames, captions, inactive = [], [], []
        for values in itertools.product(*(grid[n] for n in names)):
            point = dict(zip(names, values))
            p = self.normalize({**self.params, **point})
            frames.append(self.png(**p))
            captions.append("  ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in self.metrics(**p).items()))
            inactive.append([i for i, n in enumerate(names) if len(grid[n]) > 1 and not self._matters(point, n, grid)])
        controls = [(self._label(n), [self._value_label(n, v) for v in grid[n]]) for n in names]
        where = f'<a href="{COLAB}{colab}">open this chapter in Colab</a>' if colab else "use the launch buttons"
        note = ("These views were computed when the book was built. The live explorer (any value, a resample "
                f"button) runs in Jupyter or Colab: {where} and run this cell with "
                f"<code>{type(self).__name__}(...)</code> as its last line.") + self.static_note()
        return StaticView(frames_html(frames, controls, captions, note=note, alt=type(self).__name__,
                                      inactive=inactive), len(frames))

    def static_note(self) -> str:
        """HTML added under the precomputed views (e.g. which menu choices do not apply); default none."""
        return ""

    def _matters(self, point: Dict[str, Any], name: str, grid: Dict[str, Sequence[Any]]) -> bool:
        """Whether moving control ``name`` away from ``point`` changes the view (its cache key)."""
        keys = {self.key(self.normalize({**self.params, **point, name: v})) for v in grid[name]}
        return len(keys) > 1

    def _write(self) -> None:
        """Put ``self.params`` into the controls (called with change events muted)."""
        for name, control in self.controls.items():
            control.value = self.params[name]

    def _read(self, change: Any) -> Dict[str, Any]:
        """The control values after a reader's ``change``."""
        return {name: control.value for name, control in self.controls.items()}

    def _label(self, name: str) -> str:
        return name.replace("_", " ")

    def _value_label(self, name: str, value: Any) -> str:
        return fmt(value)


def fmt(value: Any) -> str:
    """Numbers as the explorers print them: 4 significant digits."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def log_slider(w: Any, description: str, value: float, low: float, high: float, readout: str = ".3g"):
    """A log-scale ipywidgets slider that reports on release (the debounce of every explorer)."""
    return w.FloatLogSlider(value=value, base=10, min=math.log10(low), max=math.log10(high), step=0.05,
                            description=description, readout_format=readout, continuous_update=False)
