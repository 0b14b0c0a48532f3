r"""The estimators a node of a stochastic computation graph may use, beyond score and pathwise.

:mod:`gradlab.scg` draws every node with one name of :data:`gradlab.ESTIMATORS`
(:data:`NODE_ESTIMATORS`); this module holds what the names other than ``"score"`` and
``"pathwise"`` need.

* ``"measure_valued"`` (unbiased): the node $w$ is a plain sample and contributes
  $\sum_j \lambda_j\,\operatorname{stop}(\hat g_j)$, where $\hat g_j$ estimates
  $\partial_{\lambda_j}\mathbb E[\hat Q_w \mid \text{the nodes drawn before } w]$ by its weak
  derivative (:mod:`gradlab.weak_derivatives`). For a Normal, $\hat g = c\,(\hat Q^+ - \hat Q^-)$ per
  parameter that $\theta$ moves; for a Bernoulli or Categorical node the term is
  $\sum_k P(w = k)\,\operatorname{stop}(\hat Q_k)$ (the node put at each outcome $k$). The
  $\hat Q$ come from :func:`replay`: the model run again on the same runs, the nodes drawn
  before $w$ kept, $w$ replaced, the nodes after it drawn afresh. Cost per run: 2 runs of the
  graph per Normal parameter, $K$ per node with $K$ outcomes.
* ``"st"`` (straight-through, identity) and ``"concrete"`` (the binary Concrete / Gumbel-softmax
  relaxation at the registered estimator's $\tau$), for Bernoulli and OneHotCategorical nodes:
  the value carries a gradient to its children as a pathwise node's does. Biased: they target
  the gradient of a relaxed graph (``"concrete"``) or linearise the cost (``"st"``).

:func:`gauss_hermite` is the quadrature rule :func:`gradlab.scg.exact_graph_expectation` uses
for a Normal node.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import distributions as D

from .discrete import binary_concrete, gumbel_softmax, hard_with_soft_grad, straight_through
from .weak_derivatives import weak_derivative

__all__ = ["NODE_ESTIMATORS", "unsupported_reason", "draw_relaxed", "measure_valued_term", "gauss_hermite"]

NODE_ESTIMATORS = ("score", "pathwise", "measure_valued", "st", "concrete")
RELAXED = ("st", "concrete")


def unsupported_reason(estimator: str, dist: D.Distribution) -> Optional[str]:
    """Why ``estimator`` cannot draw a graph node from ``dist`` (None: it can)."""
    name = type(dist).__name__
    if estimator == "pathwise" and not dist.has_rsample:
        return f"estimator 'pathwise' needs a distribution with rsample, got {name}"
    if estimator == "measure_valued":
        if not isinstance(dist, (D.Normal, D.Bernoulli, D.Categorical)) or len(dist.batch_shape) != 1:
            return f"estimator 'measure_valued' needs a scalar Normal, Bernoulli or Categorical node, got {name}"
    if estimator in RELAXED:
        if not isinstance(dist, (D.Bernoulli, D.OneHotCategorical)) or len(dist.batch_shape) != 1:
            return f"estimator {estimator!r} needs a Bernoulli or OneHotCategorical node, got {name}"
    return None


def draw_relaxed(estimator: str, dist: D.Distribution, generator: Optional[torch.Generator]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(value, hard value)``: a straight-through or Concrete sample that carries a gradient to the logits."""
    from . import ESTIMATORS  # the registered "concrete" holds the temperature

    bernoulli = isinstance(dist, D.Bernoulli)
    if estimator == "st":
        value = straight_through(dist.logits, dist="bernoulli" if bernoulli else "categorical", generator=generator)
        return value, value.detach()
    tau = ESTIMATORS["concrete"].tau
    relax = binary_concrete if bernoulli else gumbel_softmax
    value = relax(dist.logits, tau, generator=generator)
    return value, hard_with_soft_grad(value, "bernoulli" if bernoulli else "categorical").detach()


def _outcomes(dist: D.Distribution, like: torch.Tensor):
    """The outcomes of a Bernoulli (0., 1.) or Categorical (0..K-1) node, each shaped like its sample."""
    count = 2 if isinstance(dist, D.Bernoulli) else dist.probs.shape[-1]
    return [torch.full_like(like, k) for k in range(count)]


def measure_valued_term(node: str, dist: D.Distribution, value: torch.Tensor,
                        replay: Callable[[str, list], torch.Tensor], generator: Optional[torch.Generator]
                        ) -> torch.Tensor:
    r"""Node ``node``'s measure-valued term per run, shape (N,): value anything, gradient the estimate.

    ``replay(node, states)`` returns $\hat Q_w$ with the node set to each tensor of ``states``,
    shape ``(len(states), N)`` (:func:`gradlab.scg.scg_surrogate` builds it).
    """
    value = value.detach()
    if isinstance(dist, D.Normal):
        term = torch.zeros_like(value)
        params = {"loc": dist.loc, "scale": dist.scale}
        plain = {k: v.detach() for k, v in params.items()}
        for name, lam in params.items():
            if not lam.requires_grad:
                continue  # theta does not move it: no term, no re-runs
            c, states = weak_derivative(D.Normal, name, plain, value[None], generator)  # (N,), (1, N, 2)
            q = replay(node, [states[0, :, 0], states[0, :, 1]])
            term = term + lam * (c * (q[0] - q[1])).detach()
        return term
    outcomes = _outcomes(dist, value)
    q = replay(node, outcomes)
    probs = torch.stack([dist.log_prob(k).exp() for k in outcomes])  # (K, N), differentiable
    return (probs * q.detach().to(probs.dtype)).sum(0)


def gauss_hermite(count: int, dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Nodes $z_k$ and log-weights $\log w_k$ with $\sum_k w_k\,g(z_k) \approx \mathbb E_{z\sim\mathcal N(0,1)}[g(z)]$.

    Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the probabilists' Hermite
    polynomials (off-diagonal $\sqrt k$), the weights the squared first components of its
    eigenvectors. Exact for polynomials of degree $< 2\,$``count``.
    """
    off = torch.sqrt(torch.arange(1, count, dtype=dtype))
    jacobi = torch.diag(off, 1) + torch.diag(off, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    weights = vectors[0] ** 2
    return nodes, torch.log(weights / weights.sum()).clamp_min(math.log(torch.finfo(dtype).tiny))
