"""The smoothing explorer: a 1-D function, its Gaussian blur and the ES estimate of the blurred slope.

One of the explorers of :mod:`gradlab.widgets` (which re-exports it), built on the shared
machinery of :mod:`gradlab.frames` and the plain computations of :mod:`gradlab.explore`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .checks import check_choice
from .es.point import check_method
from .explore import SMOOTHING_FUNCTIONS, es_slope, smoothed
from .frames import Explorer, log_slider

__all__ = ["SmoothingExplorer"]


class SmoothingExplorer(Explorer):
    r"""A 1-D function $f$, its Gaussian blur $f_\sigma$, and the ES estimate of $f_\sigma'(x_0)$.

    ``functions`` maps names to elementwise functions of a tensor (default:
    :data:`gradlab.explore.SMOOTHING_FUNCTIONS`, smooth, staircase and kinked examples);
    black boxes are fine, nothing is differentiated. Controls: ``function``, ``sigma``,
    ``x0``, ``num_samples``, ``method``, ``seed``.
    """

    def __init__(self, functions: Optional[Dict[str, Any]] = None, *, function: Optional[str] = None,
                 sigma: float = 0.3, x0: float = 0.5, num_samples: int = 100, method: str = "antithetic",
                 seed: int = 0, xlim: tuple = (-3.0, 3.0)) -> None:
        self.functions = dict(functions or SMOOTHING_FUNCTIONS)
        self.xlim = xlim
        super().__init__(function=function or next(iter(self.functions)), sigma=sigma, x0=x0,
                         num_samples=num_samples, method=method, seed=seed)

    def normalize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        p = dict(params)
        check_choice(p["function"], "function", list(self.functions))
        check_method(p["method"])
        p.update(sigma=float(p["sigma"]), x0=float(p["x0"]), num_samples=int(round(p["num_samples"])))
        return p

    def _compute(self, p: Dict[str, Any]):
        f = self.functions[p["function"]]
        xs = torch.linspace(*self.xlim, 401, dtype=torch.float64)
        with torch.no_grad():
            values = f(xs)
        blurred, _ = smoothed(f, xs, p["sigma"])
        at_x0, slope = smoothed(f, torch.tensor([p["x0"]]), p["sigma"])
        estimate = es_slope(f, p["x0"], sigma=p["sigma"], num_samples=p["num_samples"], method=p["method"],
                            seed=p["seed"])
        return dict(xs=xs, values=values, blurred=blurred, f_sigma=float(at_x0[0]), slope=float(slope[0]),
                    estimate=estimate)

    def _metrics(self, view, p) -> Dict[str, Any]:
        return {"smoothed_slope": view["slope"], "es_estimate": view["estimate"],
                "error": view["estimate"] - view["slope"]}

    def _curves(self, view, p):
        """(x, y, label) of f, f_sigma, the exact tangent and the ES tangent at x0, and the point."""
        x0, y0, half = p["x0"], view["f_sigma"], 0.6
        xs = view["xs"].numpy()
        tangent = lambda slope: ([x0 - half, x0 + half], [y0 - half * slope, y0 + half * slope])  # noqa: E731
        return [
            (xs, view["values"].numpy(), "f"),
            (xs, view["blurred"].numpy(), f"$f_\\sigma$, σ = {p['sigma']:.3g}"),
            (*tangent(view["slope"]), "exact slope of $f_\\sigma$"),
            (*tangent(view["estimate"]), f"ES slope ({p['method']}, N = {p['num_samples']})"),
            ([x0], [y0], None),
        ]

    def _ylim(self, view):
        lo, hi = float(view["values"].min()), float(view["values"].max())
        pad = 0.15 * (hi - lo or 1.0)
        return lo - pad, hi + pad

    def _draw(self, fig, view, p) -> None:
        ax = fig.add_subplot()
        styles = [dict(color="0.55", lw=1.5), dict(color="C0", lw=2), dict(color="k", ls="--", lw=1.5),
                  dict(color="C3", lw=2), dict(color="k", marker="o", ms=5, ls="none")]
        for (x, y, label), style in zip(self._curves(view, p), styles):
            ax.plot(x, y, label=label or "_point", **style)
        ax.set(xlim=self.xlim, ylim=self._ylim(view), xlabel="x", ylabel="value",
               title="ES follows the slope of the blurred function")
        ax.legend(fontsize="small", loc="upper center")
        self.remember(fig, ax)

    def _refresh(self, fig, view, p) -> bool:
        ax = self.drawn_axes(fig)
        if ax is None:
            return False
        curves = self._curves(view, p)
        for line, (x, y, _) in zip(ax.lines, curves):
            line.set_data(x, y)
        for text, (_, _, label) in zip(ax.get_legend().get_texts(), curves):
            text.set_text(label)
        ax.set_ylim(self._ylim(view))
        return True

    def _label(self, name: str) -> str:
        return {"sigma": "σ", "x0": "x₀", "num_samples": "N (samples)"}.get(name, name)

    def _controls(self, w) -> Dict[str, Any]:
        p = self.params
        return {
            "function": w.Dropdown(options=list(self.functions), value=p["function"], description="f"),
            "sigma": log_slider(w, "σ", p["sigma"], 0.01, 2.0),
            "x0": w.FloatSlider(value=p["x0"], min=self.xlim[0] + 0.5, max=self.xlim[1] - 0.5, step=0.05,
                                description="x₀", continuous_update=False),
            "num_samples": log_slider(w, "N", p["num_samples"], 1, 10000, ".0f"),
            "method": w.Dropdown(options=["naive", "forward", "antithetic"], value=p["method"], description="ES"),
        }
