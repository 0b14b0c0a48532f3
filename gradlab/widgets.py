"""Explorers: put an estimated gradient next to the backprop gradient and move the knobs.

Each explorer has three faces over the same computation (:mod:`gradlab.explore`):

* live, in JupyterLab, Notebook 7 or Colab: display the object (``GradientExplorer()`` as a
  cell's last line) to get ipywidgets controls and a picture. ``ipywidgets`` is an optional
  extra (``pip install "gradlab[widgets]"``) imported only here, on first display. Sliders
  report when released and every view is cached, so going back to a setting is instant;
* static: ``.figure(**params)`` draws one view as a matplotlib ``Figure``;
* precomputed: ``.static_html(**grid)`` renders a view for every point of a grid of control
  values and switches between them in the browser, with no kernel and no network (the book).

:class:`GradientExplorer` and :class:`VarianceExplorer` live here, :class:`SmoothingExplorer`
in :mod:`gradlab.widgets_smoothing`; the machinery shared by all three is :mod:`gradlab.frames`.
``import gradlab`` does not load this module (``gradlab.GradientExplorer`` imports it on first use).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch

from .checks import check_choice
from .explore import (
    EXPLORER_METHODS,
    GradientProblem,
    error_stats,
    estimators_for,
    gradient_view,
    log_grid,
    model_problem,
    wiggly_problem,
    digits_mlp_problem,
)
from .frames import KNOB_SYMBOLS, Explorer, fmt, log_slider
from .widgets_graph import GraphExplorer
from .widgets_smoothing import SmoothingExplorer

__all__ = ["GradientExplorer", "VarianceExplorer", "SmoothingExplorer", "GraphExplorer"]

# =========================================================================== GradientExplorer
class GradientExplorer(Explorer):
    """Estimated against backprop gradient components, with cosine, relative error and evaluations used.

    ``problem`` is a :class:`~gradlab.explore.GradientProblem` (default: an MLP on digits,
    :func:`~gradlab.explore.digits_mlp_problem`), a model (then the loss is
    ``loss_fn(model(inputs), targets)`` as a function of all parameters), or a scalar function
    of one tensor (then ``theta`` is the point). ``estimators`` are names in :data:`gradlab.explore.EXPLORER_METHODS`
    (default: every one that applies). Controls: ``estimator``, ``knob`` (alias: the
    estimator's knob name, ``eps``/``sigma``/``tau``), ``num_samples``, ``seed``.
    """

    def __init__(self, problem: Any = None, theta: Optional[torch.Tensor] = None, *,
                 estimators: Optional[Sequence[str]] = None, estimator: Optional[str] = None,
                 num_samples: int = 100, knob: Optional[float] = None, seed: int = 0, loss_fn: Any = None,
                 inputs: Any = None, targets: Any = None, **aliases: Any) -> None:
        if problem is None:
            problem = digits_mlp_problem()
        elif isinstance(problem, torch.nn.Module):
            if loss_fn is None or inputs is None:
                raise TypeError("a model needs loss_fn and inputs (and targets): loss_fn(model(inputs), targets)")
            problem = model_problem(problem, loss_fn, inputs, targets)
        elif not isinstance(problem, GradientProblem):
            if not callable(problem) or not isinstance(theta, torch.Tensor):
                raise TypeError("problem must be a GradientProblem, or a function with theta a tensor")
            problem = GradientProblem(getattr(problem, "__name__", "f"), theta.detach(), problem)
        self.problem = problem
        usable = estimators_for(problem)
        names = list(estimators) if estimators is not None else list(usable)
        unknown = [n for n in names if n not in usable]
        if unknown or not names:
            raise ValueError(f"estimators must be a non-empty list from {list(usable)}, got {names}")
        self.estimators = names
        super().__init__(estimator=estimator or names[-1], num_samples=num_samples, knob=knob, seed=seed, **aliases)

    def normalize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        p = dict(params)
        for alias in KNOB_SYMBOLS:
            if alias in p:
                p["knob"] = p.pop(alias)
        check_choice(p.get("estimator"), "estimator", self.estimators)
        entry = EXPLORER_METHODS[p["estimator"]]
        knob = p.get("knob")
        if entry.knob is None:
            knob = None
        elif knob is None or not entry.knob_range[0] <= knob <= entry.knob_range[1]:
            knob = entry.knob_default if knob is None else min(max(knob, entry.knob_range[0]), entry.knob_range[1])
        p["knob"] = None if knob is None else float(knob)
        p["num_samples"] = max(1, int(round(p.get("num_samples", 100))))
        p["seed"] = int(p.get("seed", 0))
        return p

    def key(self, p: Dict[str, Any]) -> tuple:
        entry = EXPLORER_METHODS[p["estimator"]]
        random = entry.uses_samples
        return (p["estimator"], p["knob"], p["num_samples"] if random else None, p["seed"] if random else None)

    def set(self, **params: Any) -> None:
        if params.get("estimator", self.params["estimator"]) != self.params["estimator"]:
            params.setdefault("knob", None)  # a new estimator starts from its own default knob
        super().set(**params)

    def _compute(self, p: Dict[str, Any]):
        return gradient_view(self.problem, p["estimator"], num_samples=p["num_samples"], knob=p["knob"],
                             seed=p["seed"])

    def _metrics(self, view, p) -> Dict[str, Any]:
        return {"cosine": view.cosine, "relative_error": view.relative_error, "evaluations": view.evaluations}

    def _title(self, p: Dict[str, Any]) -> str:
        entry = EXPLORER_METHODS[p["estimator"]]
        parts = [entry.label]
        if entry.knob:
            parts.append(f"{KNOB_SYMBOLS.get(entry.knob, entry.knob)} = {p['knob']:.3g}")
        if entry.uses_samples:
            parts.append(f"N = {p['num_samples']}")
        return ", ".join(parts)

    def _draw(self, fig, view, p) -> None:
        ax = fig.add_subplot()
        truth = view.true_grad.detach().reshape(-1).double().cpu()
        est = view.estimate.detach().reshape(-1).double().cpu()
        ax.scatter(truth.numpy(), est.numpy(), s=6, alpha=0.5, color="C0", label=f"{truth.numel()} components")
        lim, ylim = self._limits(truth, est)
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=1, label="estimate = backprop")
        ax.set(xlim=(-lim, lim), ylim=(-ylim, ylim), xlabel="backprop component", ylabel="estimated component",
               title=self._title(p))
        ax.text(0.03, 0.97, self._box_text(view), transform=ax.transAxes, va="top", family="monospace",
                bbox=dict(facecolor="white", alpha=0.85, edgecolor="0.7"))
        ax.legend(loc="lower right", fontsize="small")
        self.remember(fig, ax)

    def _refresh(self, fig, view, p) -> bool:
        ax = self.drawn_axes(fig)
        if ax is None:
            return False
        truth = view.true_grad.detach().reshape(-1).double().cpu()
        est = view.estimate.detach().reshape(-1).double().cpu()
        ax.collections[0].set_offsets(torch.stack([truth, est], 1).numpy())
        lim, ylim = self._limits(truth, est)
        ax.lines[0].set_data([-lim, lim], [-lim, lim])
        ax.set(xlim=(-lim, lim), ylim=(-ylim, ylim), title=self._title(p))
        ax.texts[0].set_text(self._box_text(view))
        return True

    @staticmethod
    def _limits(truth: torch.Tensor, est: torch.Tensor):
        lim = float(truth.abs().max()) * 1.15 or 1.0
        ylim = max(lim, float(est.abs().quantile(0.99)) * 1.15) if torch.isfinite(est).all() else lim
        return lim, ylim

    @staticmethod
    def _box_text(view) -> str:
        return (f"cosine {fmt(view.cosine)}\nrel. error {fmt(view.relative_error)}\n"
                f"{view.evaluations} evaluations")

    def _label(self, name: str) -> str:
        if name in KNOB_SYMBOLS:
            return KNOB_SYMBOLS[name]
        if name == "knob":
            knobs = {EXPLORER_METHODS[e].knob for e in self.estimators} - {None}
            return " / ".join(KNOB_SYMBOLS.get(k, k) for k in sorted(knobs)) or name
        return "N (samples)" if name == "num_samples" else name

    def _value_label(self, name: str, value: Any) -> str:
        return EXPLORER_METHODS[value].label if name == "estimator" else fmt(value)

    def _controls(self, w) -> Dict[str, Any]:
        options = [(EXPLORER_METHODS[n].label, n) for n in self.estimators]
        return {
            "estimator": w.Dropdown(options=options, value=self.params["estimator"], description="estimator"),
            "knob": log_slider(w, "knob", 1.0, 1e-8, 1e2),
            "num_samples": log_slider(w, "N", self.params["num_samples"], 1, 3000, ".0f"),
        }

    def _sync_knob(self) -> Dict[str, Any]:
        """Put the knob slider on the current estimator's range and value (or hide it)."""
        controls = getattr(self, "controls", None)
        if not controls:
            return {}
        entry = EXPLORER_METHODS[self.params["estimator"]]
        knob, samples = controls["knob"], controls["num_samples"]
        knob.layout.display = None if entry.knob else "none"
        samples.layout.display = None if entry.uses_samples else "none"
        if entry.knob:
            knob.min, knob.max = math.log10(entry.knob_range[0]), math.log10(entry.knob_range[1])
            knob.value = self.params["knob"]
            knob.description = KNOB_SYMBOLS.get(entry.knob, entry.knob)
        return {}

    def _read(self, change: Any) -> Dict[str, Any]:
        c = self.controls
        if change.owner is c["estimator"]:  # a new estimator starts from its own default knob
            return {"estimator": change.new, "knob": None}
        return {"knob": c["knob"].value, "num_samples": c["num_samples"].value}

    def update(self) -> None:
        self._busy = True
        try:
            self._write()
        finally:
            self._busy = False
        super().update()

    def _write(self) -> None:
        self.controls["estimator"].value = self.params["estimator"]
        self.controls["num_samples"].value = max(self.params["num_samples"], 1)
        self._sync_knob()


# =========================================================================== VarianceExplorer
class VarianceExplorer(Explorer):
    r"""MSE of estimators split into bias² and variance, vs the number of samples or vs their knob.

    Every point repeats the estimate ``repeats`` times (fresh noise); the band is the
    10–90 % range of $\|\hat g - \nabla f\|^2$ over those draws. Controls: ``axis``
    (``"num_samples"`` or ``"knob"``), the fixed ``num_samples`` or ``knob`` of the other
    axis, ``seed``. Default problem: Chapter 3's wiggly function in 10 dimensions,
    where ES is biased (:func:`~gradlab.explore.wiggly_problem`).
    """

    def __init__(self, problem: Optional[GradientProblem] = None, estimators: Sequence[str] = (
                 "es_naive", "es_forward", "es_antithetic"), *, axis: str = "num_samples", num_samples: int = 100,
                 knob: Optional[float] = None, repeats: int = 16, seed: int = 0,
                 sample_grid: Sequence[int] = (10, 30, 100, 300, 1000), knob_grid: Optional[Sequence[float]] = None
                 ) -> None:
        self.problem = problem if problem is not None else wiggly_problem()
        usable = estimators_for(self.problem)
        if not estimators or any(e not in usable for e in estimators):
            raise ValueError(f"estimators must be a non-empty list from {list(usable)}, got {list(estimators)}")
        knobs = {EXPLORER_METHODS[e].knob for e in estimators} - {None}
        if len(knobs) > 1:
            raise ValueError(f"estimators must share one knob, got {sorted(knobs)}")
        self.estimators = list(estimators)
        self.knob_entry = next((EXPLORER_METHODS[e] for e in estimators if EXPLORER_METHODS[e].knob), None)
        low, high = self.knob_entry.knob_range if self.knob_entry else (1.0, 1.0)
        self.knob_grid = tuple(knob_grid) if knob_grid is not None else log_grid(max(low, 1e-3), high, 7)
        self.sample_grid = tuple(int(n) for n in sample_grid)
        self.repeats = repeats
        if knob is None and self.knob_entry is not None:
            knob = self.knob_entry.knob_default
        super().__init__(axis=axis, num_samples=num_samples, knob=knob, seed=seed)

    def normalize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        p = dict(params)
        for alias in KNOB_SYMBOLS:
            if alias in p:
                p["knob"] = p.pop(alias)
        if p["axis"] in KNOB_SYMBOLS:
            p["axis"] = "knob"
        axes = ("num_samples", "knob") if self.knob_entry else ("num_samples",)
        check_choice(p["axis"], "axis", axes)
        p["num_samples"] = int(round(p["num_samples"]))
        p["knob"] = None if p.get("knob") is None else float(p["knob"])
        return p

    def key(self, p: Dict[str, Any]) -> tuple:
        fixed = p["knob"] if p["axis"] == "num_samples" else p["num_samples"]
        return (p["axis"], fixed, p["seed"])

    def _settings(self, p: Dict[str, Any]):
        if p["axis"] == "num_samples":
            return self.sample_grid, [(n, p["knob"]) for n in self.sample_grid]
        return self.knob_grid, [(p["num_samples"], k) for k in self.knob_grid]

    def _compute(self, p: Dict[str, Any]):
        xs, settings = self._settings(p)
        return xs, {e: error_stats(self.problem, e, settings, repeats=self.repeats, seed=p["seed"])
                    for e in self.estimators}

    def _metrics(self, view, p) -> Dict[str, Any]:
        _, stats = view
        out = {}
        for e, s in stats.items():
            out[f"{e}_mse"] = float(s["mse"][-1])
            out[f"{e}_bias2"] = float(s["bias2"][-1])
        return out

    def _knob_symbol(self) -> str:
        return KNOB_SYMBOLS.get(self.knob_entry.knob, self.knob_entry.knob) if self.knob_entry else "knob"

    def _draw(self, fig, view, p) -> None:
        xs, stats = view
        ax = fig.add_subplot()
        for i, (e, s) in enumerate(stats.items()):
            color = f"C{i}"
            ax.fill_between(xs, s["lower"].numpy(), s["upper"].numpy(), color=color, alpha=0.15, lw=0)
            ax.plot(xs, s["mse"].numpy(), "o-", color=color, label=EXPLORER_METHODS[e].label)
            ax.plot(xs, s["bias2"].numpy(), "--", color=color, lw=1)
            ax.plot(xs, s["variance"].numpy(), ":", color=color, lw=1.5)
        ax.plot([], [], "k-", label="MSE (band: 10–90% of draws)")
        ax.plot([], [], "k--", lw=1, label="bias²")
        ax.plot([], [], "k:", lw=1.5, label="variance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if p["axis"] == "num_samples":  # the other control is fixed, if there is one
            fixed = f", {self._knob_symbol()} = {p['knob']:.3g}" if p["knob"] else ""
        else:
            fixed = f", N = {p['num_samples']}"
        ax.set(xlabel="N (samples)" if p["axis"] == "num_samples" else self._knob_symbol(),
               ylabel=r"$\|\hat g - \nabla f\|^2$", title=f"{self.problem.name}{fixed}")
        ax.legend(fontsize="small", loc="best")

    def _label(self, name: str) -> str:
        return {"knob": self._knob_symbol(), "num_samples": "N (samples)"}.get(name, name)

    def _controls(self, w) -> Dict[str, Any]:
        controls = {
            "axis": w.Dropdown(options=[("vs N (samples)", "num_samples")] + (
                [(f"vs {self._knob_symbol()}", "knob")] if self.knob_entry else []),
                value=self.params["axis"], description="x axis"),
            "num_samples": log_slider(w, "N", self.params["num_samples"], 1, 3000, ".0f"),
        }
        if self.knob_entry:
            low, high = self.knob_entry.knob_range
            controls["knob"] = log_slider(w, self._knob_symbol(), self.params["knob"], low, high)
        return controls
