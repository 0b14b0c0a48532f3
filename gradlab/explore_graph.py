r"""The computation behind :class:`gradlab.widgets.GraphExplorer` (no widgets, no plotting).

A :class:`GraphProblem` is a small stochastic computation graph (:mod:`gradlab.scg`) with an
exact expected cost $J(\theta)$ (:func:`gradlab.scg.exact_graph_expectation`: enumeration over
the discrete nodes, Gauss-Hermite quadrature over the Normal ones). One estimator per node,
chosen from :data:`gradlab.scg.SCG_ESTIMATORS`, gives the surrogate loss of
:func:`gradlab.scg_surrogate`; :func:`graph_spread` repeats its gradient ``repeats`` times with
noise from one generator seeded with ``seed`` and returns the estimates next to $\nabla J$:
per parameter the mean, the variance $\frac1{R-1}\sum_r(\hat g_r - \bar g)^2$ and the bias
$\bar g - \nabla J$. :func:`node_choices` says which estimators apply to which node and why
the others do not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import distributions as D

from .checks import check_choice, check_count, check_int, check_seed
from .scg import SCG_ESTIMATORS, Graph, exact_graph_expectation, scg_surrogate
from .scg_nodes import unsupported_reason

__all__ = ["GraphProblem", "GraphSpread", "two_node_graph_problem", "node_choices", "graph_spread",
           "uses_baseline", "check_estimators", "spread_limits", "NODE_LABELS"]

NODE_LABELS = {"score": "score function", "pathwise": "pathwise", "measure_valued": "measure-valued",
               "st": "straight-through (biased)", "concrete": "Gumbel-softmax, τ = 0.5 (biased)"}
BASELINES = (None, "rloo")


@dataclass
class GraphProblem:
    """A graph ``build(theta)`` (a model for :func:`gradlab.scg_surrogate`) at ``theta``, exact by ``supports``."""

    name: str
    theta: torch.Tensor
    build: Callable[[torch.Tensor], Callable[[Graph], None]]
    supports: Mapping[str, Any]
    param_names: Tuple[str, ...]
    cache: Dict[str, Any] = field(default_factory=dict)

    @property
    def dists(self) -> Dict[str, D.Distribution]:
        """Every node's distribution in one probe run of two samples, in the order they are drawn."""
        if "dists" not in self.cache:
            graph = Graph(2, estimators="score", generator=torch.Generator(self.theta.device).manual_seed(0))
            with torch.no_grad():
                self.build(self.theta)(graph)
            self.cache["dists"] = dict(graph.dists)
        return self.cache["dists"]

    @property
    def nodes(self) -> Tuple[str, ...]:
        return tuple(self.dists)

    @property
    def exact_grad(self) -> torch.Tensor:
        r"""$\nabla_\theta J$ from :func:`~gradlab.scg.exact_graph_expectation`, float64, cached."""
        if "exact_grad" not in self.cache:
            leaf = self.theta.detach().double().requires_grad_(True)
            (grad,) = torch.autograd.grad(exact_graph_expectation(self.build(leaf), self.supports), leaf)
            self.cache["exact_grad"] = grad.detach()
        return self.cache["exact_grad"]


def two_node_graph_problem(theta: Tuple[float, float] = (0.2, -0.7)) -> GraphProblem:
    r"""Chapter 8's graph: $x\sim\mathcal N(\theta_0, 1)$, $y\sim\mathrm{Bernoulli}(\sigma(x+\theta_1))$, cost $(y-x)^2$.

    Exact: 60-point Gauss-Hermite over $x$ (an error below $10^{-12}$ here), the two values of $y$.
    """
    def build(th: torch.Tensor) -> Callable[[Graph], None]:
        def model(g: Graph) -> None:
            x = g.sample("x", D.Normal(th[0].expand(g.num_samples), 1.0))
            y = g.sample("y", D.Bernoulli(logits=x + th[1]), parents=["x"])
            g.cost("c", (y - x) ** 2, parents=["x", "y"])
        return model

    values = torch.tensor(theta, dtype=torch.float64)
    if values.shape != (2,):
        raise ValueError(f"theta must have 2 entries, got {tuple(values.shape)}")
    return GraphProblem("x ~ N(θ₀, 1) → y ~ Bernoulli(σ(x + θ₁)), cost (y − x)²", values, build,
                        {"x": ("hermite", 60), "y": 2}, ("θ₀", "θ₁"))


def node_choices(problem: GraphProblem) -> Dict[str, Dict[str, Optional[str]]]:
    """``{node: {estimator: None if it applies, else why not}}`` over :data:`gradlab.scg.SCG_ESTIMATORS`."""
    return {node: {name: unsupported_reason(name, dist) for name in SCG_ESTIMATORS}
            for node, dist in problem.dists.items()}


def uses_baseline(estimators: Mapping[str, str]) -> bool:
    """Whether a baseline changes anything: only score nodes use one."""
    return "score" in estimators.values()


def check_estimators(problem: GraphProblem, estimators: Mapping[str, str]) -> Dict[str, str]:
    """One applicable estimator per node (ValueError naming ``estimators`` and the reason otherwise)."""
    if not isinstance(estimators, Mapping) or set(estimators) != set(problem.nodes):
        raise ValueError(f"estimators must map every node {list(problem.nodes)} to an estimator, got {estimators!r}")
    choices = node_choices(problem)
    for node, name in estimators.items():
        check_choice(name, f"estimators[{node!r}]", SCG_ESTIMATORS)
        if choices[node][name]:
            raise ValueError(f"estimators[{node!r}]: {choices[node][name]}")
    return {node: estimators[node] for node in problem.nodes}


@dataclass
class GraphSpread:
    """Repeated gradient estimates of one choice of node estimators, next to the exact gradient."""

    estimates: torch.Tensor  # (repeats, P), float64
    exact: torch.Tensor  # (P,)
    param_names: Tuple[str, ...]

    @property
    def mean(self) -> torch.Tensor:
        return self.estimates.mean(0)

    @property
    def variance(self) -> torch.Tensor:
        """Per parameter, the variance of one estimate (unbiased over the repeats)."""
        return self.estimates.var(0)

    @property
    def sd(self) -> torch.Tensor:
        return self.variance.sqrt()

    @property
    def bias(self) -> torch.Tensor:
        """Mean minus exact gradient; its noise has standard error sd / sqrt(repeats)."""
        return self.mean - self.exact

    def metrics(self) -> Dict[str, float]:
        """The variance and the bias of every parameter, as the explorer prints them."""
        out = {}
        for i, _ in enumerate(self.param_names):
            out[f"var_theta{i}"] = float(self.variance[i])
            out[f"bias_theta{i}"] = float(self.bias[i])
        return out


def graph_spread(problem: GraphProblem, estimators: Mapping[str, str], *, num_samples: int = 100,
                 repeats: int = 100, baseline: Optional[str] = None, seed: int = 0) -> GraphSpread:
    r"""``repeats`` gradients of :func:`gradlab.scg_surrogate` with ``num_samples`` runs each, and $\nabla J$.

    Every repeat draws from one ``torch.Generator`` seeded with ``seed``, so a setting is
    reproducible on its own; ``baseline`` (``None`` or ``"rloo"``) is used by the score nodes only.
    """
    estimators = check_estimators(problem, estimators)
    num_samples = check_count(num_samples, "num_samples")
    check_int(repeats, "repeats", minimum=2)
    check_choice(baseline, "baseline", BASELINES)
    generator = torch.Generator(problem.theta.device).manual_seed(check_seed(seed))
    rows = []
    for _ in range(repeats):  # one estimate each, itself vectorised over its num_samples runs
        leaf = problem.theta.detach().double().requires_grad_(True)
        loss, _ = scg_surrogate(problem.build(leaf), num_samples=num_samples, estimators=estimators,
                                baseline=baseline, generator=generator)
        rows.append(torch.autograd.grad(loss, leaf)[0])
    return GraphSpread(torch.stack(rows), problem.exact_grad, problem.param_names)


def spread_limits(spreads, width: float = 3.0) -> Tuple[float, float]:
    """An x range holding every exact gradient and ``width`` sd around every mean of ``spreads``."""
    lows, highs = [], []
    for s in spreads:
        lows += [s.exact.min(), (s.mean - width * s.sd).min(), s.estimates.quantile(0.02, 0).min()]
        highs += [s.exact.max(), (s.mean + width * s.sd).max(), s.estimates.quantile(0.98, 0).max()]
    low, high = float(min(lows)), float(max(highs))
    pad = 0.05 * (high - low or 1.0)
    return (math.floor((low - pad) * 20) / 20, math.ceil((high + pad) * 20) / 20)
