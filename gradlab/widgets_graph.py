"""The graph explorer: one estimator per node of a stochastic computation graph, the spread it gives.

One of the explorers of :mod:`gradlab.widgets` (which re-exports it), built on the shared
machinery of :mod:`gradlab.frames` and the plain computations of :mod:`gradlab.explore_graph`.
"""
from __future__ import annotations

import html
from typing import Any, Dict, Optional

import torch

from .checks import check_choice
from .explore_graph import (
    NODE_LABELS,
    GraphProblem,
    check_estimators,
    graph_spread,
    node_choices,
    spread_limits,
    two_node_graph_problem,
    uses_baseline,
)
from .frames import Explorer, fmt, log_slider

__all__ = ["GraphExplorer"]

BASELINE_LABELS = {"none": "none", "rloo": "leave-one-out (RLOO)"}
SHORT_LABELS = {"score": "score", "pathwise": "pathwise", "measure_valued": "measure-valued",
                "st": "straight-through", "concrete": "Gumbel-softmax"}  # for the title
RESERVED = ("baseline", "num_samples", "seed")


class GraphExplorer(Explorer):
    r"""Repeated gradient estimates of a small stochastic computation graph, one estimator per node.

    ``problem`` is a :class:`~gradlab.explore_graph.GraphProblem` (default: Chapter 8's two-node
    graph, :func:`~gradlab.explore_graph.two_node_graph_problem`). Controls: one menu per node
    (named after it) with the estimators that apply to it (the others are listed with the reason
    in the readout and under the precomputed views), ``baseline`` (``"none"`` or ``"rloo"``, for
    score nodes; disabled when no node is one), ``num_samples`` (runs of the graph per estimate)
    and ``seed``. The view: every one of ``repeats`` estimates per parameter (dots), their mean
    $\pm$ one standard deviation, and the exact gradient; the readout gives each parameter's
    variance and bias.
    """

    figsize = (4.8, 4.4)  # 1440 px at 300 dpi: twice its CSS width, text >= 9 CSS px at 390 px

    def __init__(self, problem: Optional[GraphProblem] = None, *, estimators: Optional[Dict[str, str]] = None,
                 baseline: str = "none", num_samples: int = 100, repeats: int = 100, seed: int = 0) -> None:
        self.problem = problem if problem is not None else two_node_graph_problem()
        if not isinstance(self.problem, GraphProblem):
            raise TypeError(f"problem must be a GraphProblem, got {type(self.problem).__name__}")
        clash = [n for n in self.problem.nodes if n in RESERVED]
        if clash:
            raise ValueError(f"problem: node names {clash} clash with the controls {RESERVED}")
        self.choices = node_choices(self.problem)
        self.options = {node: [e for e, why in c.items() if why is None] for node, c in self.choices.items()}
        self.repeats = repeats
        start = dict(estimators or {node: "score" for node in self.problem.nodes})
        super().__init__(**start, baseline=baseline, num_samples=num_samples, seed=seed)

    # ---------------------------------------------------------------- computation
    def estimators(self, p: Dict[str, Any]) -> Dict[str, str]:
        return {node: p[node] for node in self.problem.nodes}

    def normalize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        p = dict(params)
        check_estimators(self.problem, self.estimators(p))
        check_choice(p["baseline"], "baseline", tuple(BASELINE_LABELS))
        p["num_samples"] = max(2, int(round(p["num_samples"])))
        p["seed"] = int(p["seed"])
        return p

    def key(self, p: Dict[str, Any]) -> tuple:
        chosen = self.estimators(p)
        baseline = p["baseline"] if uses_baseline(chosen) else None  # only score nodes read it
        return (tuple(chosen.values()), baseline, p["num_samples"], p["seed"])

    def _compute(self, p: Dict[str, Any]):
        return graph_spread(self.problem, self.estimators(p), num_samples=p["num_samples"], repeats=self.repeats,
                            baseline=None if p["baseline"] == "none" else p["baseline"], seed=p["seed"])

    def _metrics(self, view, p) -> Dict[str, Any]:
        return view.metrics()

    def reference(self, p: Dict[str, Any]):
        """The all-score, no-baseline view at the same N and seed: it fixes the x axis for every choice."""
        return self.compute(**{node: "score" for node in self.problem.nodes}, baseline="none",
                            num_samples=p["num_samples"], seed=p["seed"])

    # ---------------------------------------------------------------- figure
    def _title(self, p: Dict[str, Any]) -> str:
        chosen = self.estimators(p)
        line = ", ".join(f"{node}: {SHORT_LABELS[e]}" for node, e in chosen.items())
        extra = f", baseline {p['baseline']}" if uses_baseline(chosen) else ""
        if "concrete" in chosen.values():
            extra += ", τ = 0.5"
        return f"{line}\nN = {p['num_samples']} runs{extra}"

    def _draw(self, fig, view, p) -> None:
        ax = fig.add_subplot()
        estimates = view.estimates.double().cpu()
        count, params = estimates.shape
        offsets = torch.linspace(-0.22, 0.22, count, dtype=torch.float64)[torch.randperm(
            count, generator=torch.Generator().manual_seed(0))]  # a fixed jitter, the same in every frame
        se = (view.sd / count**0.5).tolist()  # the standard error of the mean, so of the bias shown
        for i in range(params):
            row = params - i  # θ₀ on top
            ax.scatter(estimates[:, i].numpy(), (row + offsets).numpy(), s=7, alpha=0.35, color="C0", lw=0,
                       label=f"{count} estimates" if i == 0 else None)
            ax.errorbar([float(view.mean[i])], [row], xerr=[float(view.sd[i])], fmt="o", color="C3", ms=6,
                        capsize=6, lw=2.2, label="mean ± sd" if i == 0 else None)
            ax.plot([float(view.exact[i])] * 2, [row - 0.38, row + 0.38], color="k", lw=2,
                    label="exact gradient" if i == 0 else None)
            ax.text(0.02, row + 0.3, f"var {fmt(float(view.variance[i]))}\nbias {float(view.bias[i]):+.3f} ± {se[i]:.3f}",
                    transform=ax.get_yaxis_transform(),
                    fontsize=11, family="monospace", va="bottom")
        ax.set_yticks(range(params, 0, -1), [f"∂J/∂{name}" for name in view.param_names])
        ax.set(xlim=spread_limits([view, self.reference(p)]), ylim=(0.4, params + 1.15),
               xlabel="gradient estimate", title=self._title(p))
        ax.legend(loc="upper right", fontsize=10, ncols=1, framealpha=0.9)

    # ---------------------------------------------------------------- notes and controls
    def not_applicable(self) -> str:
        """Which estimators do not apply to which node, and why (one sentence each)."""
        parts = []
        for node, choice in self.choices.items():
            left_out = [(e, why.split(" needs ", 1)[-1]) for e, why in choice.items() if why]
            parts += [f"{NODE_LABELS[e]} does not apply to {node}: it needs {why}" for e, why in left_out]
        return ("The menus leave out what does not apply: " + "; ".join(parts) + ".") if parts else ""

    def static_note(self) -> str:
        return f" {html.escape(self.not_applicable())}" if self.not_applicable() else ""

    def _readout(self, metrics: Dict[str, Any]) -> str:
        notes = [self.not_applicable()]
        if not uses_baseline(self.estimators(self.params)):
            notes.insert(0, "baseline does not apply: no node uses the score function.")
        note = " ".join(n for n in notes if n)
        return super()._readout(metrics) + f'<div class="gradlab-inactive-note">{html.escape(note)}</div>'

    def _label(self, name: str) -> str:
        if name in self.problem.nodes:
            return f"estimator of {name}"
        return {"num_samples": "N (runs)"}.get(name, name)

    def _value_label(self, name: str, value: Any) -> str:
        if name in self.problem.nodes:
            return NODE_LABELS[value]
        return BASELINE_LABELS[value] if name == "baseline" else fmt(value)

    def _controls(self, w) -> Dict[str, Any]:
        size = w.Layout(min_height="32px", width="auto")
        controls = {node: w.Dropdown(options=[(NODE_LABELS[e], e) for e in self.options[node]],
                                     value=self.params[node], description=f"{node}", layout=size)
                    for node in self.problem.nodes}
        controls["baseline"] = w.Dropdown(options=[(v, k) for k, v in BASELINE_LABELS.items()],
                                          value=self.params["baseline"], description="baseline", layout=size)
        controls["num_samples"] = log_slider(w, "N", self.params["num_samples"], 2, 3000, ".0f")
        controls["num_samples"].layout = w.Layout(min_height="32px")
        return controls

    def _read(self, change: Any) -> Dict[str, Any]:
        out = {name: c.value for name, c in self.controls.items()}
        out["num_samples"] = int(round(out["num_samples"]))
        return out

    def update(self) -> None:
        self.controls["baseline"].disabled = not uses_baseline(self.estimators(self.params))
        super().update()
