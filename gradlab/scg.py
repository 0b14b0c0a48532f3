r"""Stochastic computation graphs: surrogate losses for several stochastic nodes.

A *model* is a function ``model(graph)`` that draws stochastic nodes with
:meth:`Graph.sample` and adds costs with :meth:`Graph.cost`, vectorised over
``graph.num_samples`` independent runs of the graph (every distribution has
``batch_shape[0] == num_samples``, every cost has shape ``(num_samples,)``).

The expected total cost is $J(\theta) = \mathbb E\big[\sum_c c\big]$. With
Schulman et al.'s surrogate rule (2015), a node $w$ estimated by the score
function contributes $\log p(w \mid \mathrm{pa}(w))\,\operatorname{stop}(\hat Q_w - b_w)$,
where $\hat Q_w = \sum_{c \succ w} c$ is the sum of the costs *downstream* of
$w$ (causality: a cost that does not depend on $w$ is left out); a node estimated
``"pathwise"`` is drawn with ``rsample`` and its gradient flows through its value.
Then

$$
\begin{aligned}
\mathcal L &= \frac1N\sum_{n=1}^N\Big[\sum_c c_n \\
&\qquad + \sum_{w\ \text{score}} \log p(w_n\mid \mathrm{pa}(w_n)) \\
&\qquad\quad \times \operatorname{stop}(\hat Q_{w,n} - b_{w,n})\Big], \\
\mathbb E\,\nabla_\theta \mathcal L &= \nabla_\theta J .
\end{aligned}
$$

DiCE (Foerster et al. 2018) writes the same with the *magic box*
$\boxdot(\tau) = \exp(\tau - \operatorname{stop}(\tau))$ (value 1, $\nabla\boxdot(\tau) = \boxdot(\tau)\nabla\tau$):
$\mathcal L_\boxdot = \frac1N\sum_n \sum_c \boxdot\big(\sum_{w \prec c} \log p(w_n)\big)\, c_n$, whose
derivatives of *every* order are unbiased. The surrogate rule's second derivative is not.

Every node takes one estimator of :data:`gradlab.ESTIMATORS` (:data:`SCG_ESTIMATORS`):
``"score"`` and ``"pathwise"`` as above, ``"measure_valued"`` (unbiased: the model is run again with
the node at its weak-derivative states) and the biased discrete relaxations ``"st"`` and
``"concrete"`` (:mod:`gradlab.scg_nodes`).

Dependencies: ``parents=`` of a node or cost name the stochastic nodes it reads
directly; the default ``None`` means "every node drawn so far" (always safe,
only less variance reduction). Ancestors are followed transitively.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import distributions as D

from .checks import check_callable, check_count
from .distributions import draw
from .scg_nodes import NODE_ESTIMATORS, RELAXED, draw_relaxed, gauss_hermite, measure_valued_term, unsupported_reason

__all__ = ["Graph", "magic_box", "scg_surrogate", "dice_objective", "exact_graph_expectation", "SCG_ESTIMATORS"]

SCG_ESTIMATORS = NODE_ESTIMATORS  # names of gradlab.ESTIMATORS a graph node accepts
BASELINES = (None, "rloo")


def magic_box(tau: torch.Tensor) -> torch.Tensor:
    r"""DiCE's $\boxdot(\tau) = \exp(\tau - \operatorname{stop}(\tau))$: value 1, derivative $\boxdot(\tau)\,\nabla\tau$."""
    if not isinstance(tau, torch.Tensor):
        raise TypeError(f"tau must be a tensor, got {type(tau).__name__}")
    return torch.exp(tau - tau.detach())


class Graph:
    """The record of one vectorised run of a model: nodes, their log-probs, costs and dependencies.

    Built by :func:`scg_surrogate`, :func:`dice_objective` and :func:`exact_graph_expectation`;
    a model only calls :meth:`sample` and :meth:`cost` and reads :attr:`num_samples`.
    """

    def __init__(self, num_samples: int, *, estimators: Mapping[str, str] | str = "score",
                 generator: Optional[torch.Generator] = None,
                 states: Optional[Dict[str, torch.Tensor]] = None,
                 log_weights: Optional[Dict[str, torch.Tensor]] = None,
                 fixed: Optional[Dict[str, torch.Tensor]] = None) -> None:
        self.num_samples = num_samples
        self._estimators = estimators
        self._generator = generator
        self._states = states  # enumeration mode: node name -> fixed values (num_samples,)
        self._log_weights = log_weights or {}  # enumeration mode: quadrature nodes -> log-weights
        self._fixed = fixed  # replay mode: node name -> values kept (the measure-valued re-runs)
        self.dists: Dict[str, D.Distribution] = {}
        self.values: Dict[str, torch.Tensor] = {}
        self.log_probs: Dict[str, torch.Tensor] = {}
        self.estimator: Dict[str, str] = {}
        self.ancestors: Dict[str, frozenset] = {}
        self.costs: List[Tuple[str, torch.Tensor, frozenset]] = []

    def _closure(self, parents: Optional[Iterable[str]], who: str) -> frozenset:
        if parents is None:
            return frozenset(self.values)
        if isinstance(parents, str):
            parents = [parents]
        out = set()
        for p in parents:
            if p not in self.values:
                raise ValueError(f"parents of {who!r} must name nodes drawn before it, got {p!r} "
                                 f"(drawn: {list(self.values)})")
            out |= {p} | self.ancestors[p]
        return frozenset(out)

    def _estimator_for(self, name: str) -> str:
        from . import ESTIMATORS  # the one registry, looked up when the package is loaded

        choice = self._estimators if isinstance(self._estimators, str) else self._estimators.get(name, "score")
        if choice not in ESTIMATORS:
            raise ValueError(f"estimators[{name!r}] must be a name of gradlab.ESTIMATORS, got {choice!r}")
        if choice not in SCG_ESTIMATORS:
            raise ValueError(f"estimators[{name!r}] must be one of {SCG_ESTIMATORS} in a graph, got {choice!r}")
        return choice

    def sample(self, name: str, dist: D.Distribution, *, parents: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Draw node ``name`` from ``dist`` (batch_shape[0] == num_samples) and return its values."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if name in self.values:
            raise ValueError(f"node {name!r} is drawn twice")
        if not isinstance(dist, D.Distribution):
            raise TypeError(f"dist of node {name!r} must be a torch Distribution, got {type(dist).__name__}")
        if len(dist.batch_shape) == 0 or dist.batch_shape[0] != self.num_samples:
            raise ValueError(f"dist of node {name!r} must have batch_shape[0] == num_samples = "
                             f"{self.num_samples}, got batch_shape {tuple(dist.batch_shape)}")
        ancestors = self._closure(parents, name)
        hard = None
        if self._states is not None:
            if name not in self._states:
                raise ValueError(f"supports must give the number of outcomes of node {name!r}")
            if name in self._log_weights:  # a Normal node on quadrature points: weights, not densities
                if not isinstance(dist, D.Normal):
                    raise ValueError(f"supports: node {name!r} is integrated by Gauss-Hermite, so it must be a "
                                     f"Normal, got {type(dist).__name__}")
                value = dist.loc + dist.scale * self._states[name].to(dist.loc.dtype)
                hard = value.detach()
            else:
                value = _state_values(self._states[name], dist)
            estimator = "score"
        elif self._fixed is not None and name in self._fixed:
            value, estimator = self._fixed[name], "fixed"
        else:
            estimator = self._estimator_for(name)
            reason = unsupported_reason(estimator, dist)
            if reason:
                raise ValueError(f"node {name!r}: {reason}")
            if estimator in RELAXED:
                value, hard = draw_relaxed(estimator, dist, self._generator)
            else:
                value = draw(dist, generator=self._generator, reparameterized=estimator == "pathwise")
        if name in self._log_weights:
            log_prob = self._log_weights[name].to(value.dtype)
        elif estimator == "fixed":  # a replay reads values only
            log_prob = torch.zeros(self.num_samples, dtype=dist.mean.dtype, device=value.device)
        else:
            log_prob = dist.log_prob(value if estimator == "pathwise" else (value if hard is None else hard).detach())
        self.values[name], self.estimator[name], self.ancestors[name] = value, estimator, ancestors
        self.dists[name] = dist
        self.log_probs[name] = log_prob.reshape(self.num_samples, -1).sum(1)
        return value

    def cost(self, name: str, value: torch.Tensor, *, parents: Optional[Sequence[str]] = None) -> None:
        """Add a cost node (shape (num_samples,)) that depends on the stochastic nodes ``parents``."""
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (self.num_samples,):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"cost {name!r} must be a tensor of shape ({self.num_samples},), got {got}")
        self.costs.append((name, value, self._closure(parents, name)))

    def total_cost(self) -> torch.Tensor:
        """The sum of the costs of every run, shape (num_samples,)."""
        if not self.costs:
            raise ValueError("the model added no cost (call graph.cost)")
        return torch.stack([c for _, c, _ in self.costs]).sum(0)

    def downstream(self, node: str) -> torch.Tensor:
        r"""$\hat Q_w$: the sum of the costs that depend on ``node``, shape (num_samples,)."""
        ref = self.total_cost()
        parts = [c for _, c, anc in self.costs if node in anc]
        return torch.stack(parts).sum(0) if parts else torch.zeros_like(ref)


def _state_values(states: torch.Tensor, dist: D.Distribution) -> torch.Tensor:
    """Enumerated outcomes in the dtype and device ``dist.sample()`` would give (indices for a Categorical)."""
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    if isinstance(base, D.Categorical):
        return states.to(device=base.logits.device, dtype=torch.long)
    mean = dist.mean
    if mean.dim() != 1:
        raise ValueError(f"exact_graph_expectation enumerates scalar nodes (batch_shape (S,)), got {tuple(mean.shape)}")
    return states.to(device=mean.device, dtype=mean.dtype)


def _run(model: Callable, graph: Graph) -> Graph:
    check_callable(model, "model")
    model(graph)
    graph.total_cost()
    return graph


def _replayer(model: Callable, graph: Graph, estimators, generator) -> Callable:
    """``replay(node, states)``: the model run again (no gradients) with the nodes drawn before ``node`` kept and
    ``node`` set to each of ``states``; returns its downstream cost, shape (len(states), num_samples)."""
    order = list(graph.values)

    def replay(node: str, states: list) -> torch.Tensor:
        count, before = len(states), order[: order.index(node)]
        fixed = {w: graph.values[w].detach().repeat(count, *[1] * (graph.values[w].dim() - 1)) for w in before}
        fixed[node] = torch.cat([s.detach() for s in states])
        with torch.no_grad():
            again = _run(model, Graph(count * graph.num_samples, estimators=estimators, generator=generator,
                                      fixed=fixed))
            return again.downstream(node).reshape(count, graph.num_samples)

    return replay


def _rloo(q: torch.Tensor) -> torch.Tensor:
    n = q.shape[0]
    if n < 2:
        raise ValueError("baseline='rloo' needs num_samples >= 2")
    return (q.sum() - q) / (n - 1)


def scg_surrogate(
    model: Callable[[Graph], None],
    *,
    num_samples: int,
    estimators: Mapping[str, str] | str = "score",
    baseline: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, Graph]:
    r"""The surrogate loss of Schulman et al. (2015) and the graph it was built from.

    Args:
        model: ``model(graph)``, drawing nodes with ``graph.sample`` and adding costs with ``graph.cost``.
        num_samples: $N \ge 1$ independent runs of the graph, drawn at once.
        estimators: one name for every node, or ``{node: name}`` (missing nodes: ``"score"``);
            names from :data:`gradlab.ESTIMATORS`: ``"score"`` (any ``log_prob``), ``"pathwise"`` (``rsample``),
            ``"measure_valued"`` (scalar Normal, Bernoulli, Categorical nodes; the model is run again per
            parameter), ``"st"`` or ``"concrete"`` (Bernoulli / OneHotCategorical nodes; biased).
        baseline: ``None`` or ``"rloo"`` (each run's $\hat Q_w$ minus the other runs' mean; unbiased).
        generator: ``torch.Generator``; the same state gives the same numbers.

    Returns:
        ``(loss, graph)``: ``loss.backward()`` puts an estimate of $\nabla_\theta \mathbb E[\sum_c c]$ into the
        leaves the model used, unbiased unless a node is ``"st"`` or ``"concrete"``; ``loss``'s value is the mean
        total cost.
    """
    num_samples = check_count(num_samples, "num_samples")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    graph = _run(model, Graph(num_samples, estimators=estimators, generator=generator))
    loss = graph.total_cost()
    for node, estimator in graph.estimator.items():
        if estimator == "measure_valued":
            term = measure_valued_term(node, graph.dists[node], graph.values[node],
                                       _replayer(model, graph, estimators, generator), generator)
            loss = loss + term - term.detach()
        if estimator != "score":
            continue
        q = graph.downstream(node).detach()
        if baseline == "rloo":
            q = q - _rloo(q)
        term = graph.log_probs[node] * q
        loss = loss + term - term.detach()
    return loss.mean(), graph


def dice_objective(
    model: Callable[[Graph], None],
    *,
    num_samples: int,
    estimators: Mapping[str, str] | str = "score",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""DiCE: $\frac1N\sum_n\sum_c \boxdot\big(\sum_{w\prec c,\ w\ \text{score}}\log p(w_n)\big)\,c_n$.

    Its value is the mean total cost; its gradients of every order (``torch.autograd.grad`` with
    ``create_graph=True``) are unbiased for those of $\mathbb E[\sum_c c]$. Arguments as :func:`scg_surrogate`.
    """
    num_samples = check_count(num_samples, "num_samples")
    graph = _run(model, Graph(num_samples, estimators=estimators, generator=generator))
    unsupported = sorted(w for w, e in graph.estimator.items() if e == "measure_valued")
    if unsupported:
        raise ValueError(f"estimators: dice_objective takes score, pathwise and relaxed nodes, got "
                         f"'measure_valued' for {unsupported}")
    total = 0.0
    for _, value, ancestors in graph.costs:
        score_nodes = [graph.log_probs[w] for w in ancestors if graph.estimator[w] == "score"]
        tau = torch.stack(score_nodes).sum(0) if score_nodes else torch.zeros_like(value)
        total = total + magic_box(tau) * value
    return total.mean()


def exact_graph_expectation(model: Callable[[Graph], None], supports: Mapping[str, int]) -> torch.Tensor:
    r"""$\mathbb E[\sum_c c] = \sum_{\text{states}} \prod_w p(w\mid\mathrm{pa}(w))\,\sum_c c$ by enumeration.

    ``supports`` gives the number of outcomes $K_w$ of every node, in any order (values
    $0,\dots,K_w-1$: Bernoulli $K=2$, Categorical $K$), or ``("hermite", K)`` for a Normal node, then
    integrated by $K$-point Gauss-Hermite quadrature (:func:`~gradlab.scg_nodes.gauss_hermite`: exact for
    costs polynomial in it of degree $< 2K$, otherwise a rule whose error falls quickly with $K$ for smooth
    costs; the points $\mu + \sigma z_k$ carry the gradient); every node's distribution must have
    batch_shape ``(S,)`` with $S = \prod_w K_w$ = ``graph.num_samples``. The result is
    differentiable in the model's parameters to every order: the ground truth for tests.
    """
    if not isinstance(supports, Mapping) or not supports:
        raise TypeError(f"supports must be a non-empty mapping node -> number of outcomes, got {supports!r}")
    rules = {name: gauss_hermite(_hermite_count(k, name)) for name, k in supports.items() if isinstance(k, tuple)}
    sizes = {name: len(rules[name][0]) if name in rules else check_count(k, f"supports[{name!r}]")
             for name, k in supports.items()}
    count = 1
    for k in sizes.values():
        count *= k
    if count > 2**16:
        raise ValueError(f"supports: {count} joint states exceed 65536")
    grids = torch.meshgrid(*[torch.arange(k) for k in sizes.values()], indexing="ij")
    index = {name: g.reshape(-1) for name, g in zip(sizes, grids)}
    states = {name: rules[name][0][i] if name in rules else i.double() for name, i in index.items()}
    log_weights = {name: rules[name][1][index[name]] for name in rules}
    graph = _run(model, Graph(count, states=states, log_weights=log_weights))
    missing = set(sizes) - set(graph.values)
    if missing:
        raise ValueError(f"supports names nodes the model never drew: {sorted(missing)}")
    log_p = torch.stack(list(graph.log_probs.values())).sum(0)
    return (log_p.exp() * graph.total_cost()).sum()


def _hermite_count(rule: tuple, name: str) -> int:
    if len(rule) != 2 or rule[0] != "hermite":
        raise ValueError(f"supports[{name!r}] must be a number of outcomes or ('hermite', K), got {rule!r}")
    return check_count(rule[1], f"supports[{name!r}]")
