r"""Gradients of expectations: one call for every estimator.

$$g(\theta) = \nabla_\theta\, \mathbb E_{x\sim p_\theta}[f(x)]$$

:func:`expectation_grad` returns **per-sample** estimates $\hat g_1, \dots, \hat g_N$
(shape ``(num_samples, *theta.shape)``): their mean is the estimate, their variance
tells how good it is. ``f`` maps a batch of samples (shape ``(N, *sample_shape)``)
to costs of shape ``(N,)`` (or ``(N, B)``, one per independent item of a batched
distribution; a function of one sample is lifted with :func:`gradlab.per_sample`);
``make_dist(theta)`` returns a ``torch.distributions.Distribution``; ``estimator`` is a
key of :data:`ESTIMATORS` or an :class:`~gradlab.estimator.Estimator` (the protocol:
:mod:`gradlab.estimator`).

| key | estimator | distributions | $f$ | unbiased | evaluations of $f$ per sample |
|---|---|---|---|---|---|
| ``"score"`` | :class:`~gradlab.score.ScoreFunction` | any with ``log_prob`` | black box | yes, except with ``baseline="optimal"`` | 1 (``"delta"``: +1 and one backward per batch) |
| ``"pathwise"`` | :class:`~gradlab.pathwise.Pathwise` | ``has_rsample`` | differentiable | yes | 1 (+ backward) |
| ``"measure_valued"`` | :class:`~gradlab.measure_valued.MeasureValued` | Normal, Bernoulli, Categorical, products | black box | yes | 1 + 2 per Normal/Bernoulli parameter, K per Categorical coordinate |
| ``"concrete"`` | :class:`~gradlab.relax.GumbelSoftmaxEstimator` ($\tau = 0.5$) | Bernoulli, OneHotCategorical | differentiable on relaxed inputs | no (the relaxed objective's gradient) | 1 (+ backward) |
| ``"st"`` | :class:`~gradlab.relax.StraightThroughEstimator` (identity) | Bernoulli, OneHotCategorical | differentiable | no | 1 (+ backward) |
| ``"rebar"`` | :class:`~gradlab.relax.REBAR` ($\eta = 1$, $\tau = 0.5$) | Bernoulli, OneHotCategorical | differentiable on relaxed inputs | yes | 3 (+ backward) |
| ``"relax"`` | :class:`~gradlab.relax.RELAX` (a fixed :class:`~gradlab.relax.CoordinateSurrogate`) | Bernoulli, OneHotCategorical | differentiable on relaxed inputs | yes | 3 (+ backward) |

Deprecated aliases (:data:`gradlab.estimator.ALIASES`): ``"gumbel_softmax"`` → ``"concrete"``,
``"straight_through"`` → ``"st"`` (the old keys equal the sampler functions' names).

:func:`surrogate_loss` is the training-loop form: a scalar whose value is the Monte Carlo
estimate of $\mathbb E[f]$ and whose ``backward()`` puts the mean estimate into the
``.grad`` of whatever ``dist`` was built from.
:func:`exact_expectation_grad` enumerates small discrete distributions: the ground truth.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import distributions as D

from . import measure_valued, pathwise, relax, score  # noqa: F401  (each registers its estimators)
from .checks import check_callable, check_count, check_generator
from .distributions import check_distribution, unwrap_independent
from .estimator import ESTIMATORS, Estimator, check_theta, get_estimator, register_estimator

__all__ = [
    "ESTIMATORS",
    "register_estimator",
    "get_estimator",
    "expectation_grad",
    "surrogate_loss",
    "exact_expectation_grad",
]

MAX_ENUMERATION = 2**16  # joint states exact_expectation_grad agrees to enumerate


def expectation_grad(
    f: Callable[[torch.Tensor], torch.Tensor],
    make_dist: Callable[[torch.Tensor], D.Distribution],
    theta: torch.Tensor,
    *,
    estimator: object,
    num_samples: int,
    baseline: object = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Per-sample estimates of $\nabla_\theta \mathbb E_{x\sim \text{make\_dist}(\theta)}[f(x)]$.

    Args:
        f: batched cost, ``(N, *sample_shape) -> (N,)`` (or ``(N, B)`` per item), finite values.
        make_dist: ``theta -> torch.distributions.Distribution`` (differentiable in theta).
        theta: non-empty floating tensor of any shape; never modified, its ``.grad`` untouched.
        estimator: a key of :data:`ESTIMATORS` (``"score"``, ``"pathwise"``, ``"measure_valued"``,
            ``"concrete"``, ``"st"``, ``"rebar"``, ``"relax"``, ...) or an
            :class:`~gradlab.estimator.Estimator` instance (e.g. an adapted ``RELAX``).
        num_samples: $N \ge 1$ (``baseline="rloo"`` needs $N \ge 2$).
        baseline: estimators with ``uses_baseline`` (the score function) only: ``None``, a number,
            ``"rloo"``, ``"optimal"``, ``"optimal_loo"``, ``"delta"`` or a
            :class:`gradlab.control_variates.Baseline` (e.g. an :class:`~gradlab.control_variates.EMABaseline`).
        generator: ``torch.Generator`` or None; the same state gives the same numbers.

    Returns:
        Tensor of shape ``(num_samples, *theta.shape)``; ``.mean(0)`` is the estimate.
    """
    check_callable(f, "f")
    check_callable(make_dist, "make_dist")
    theta = check_theta(theta)
    check_count(num_samples, "num_samples")
    check_generator(generator)
    chosen = get_estimator(estimator)
    grads = chosen.per_sample_grads(
        f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
    )
    expected = (num_samples, *theta.shape)
    if not isinstance(grads, torch.Tensor) or tuple(grads.shape) != expected:
        got = tuple(grads.shape) if isinstance(grads, torch.Tensor) else type(grads).__name__
        raise ValueError(f"estimator {estimator!r} returned {got}, expected shape {expected}")
    return grads.detach() if grads.requires_grad else grads


def surrogate_loss(
    f: Callable[[torch.Tensor], torch.Tensor],
    dist: D.Distribution,
    *,
    estimator: object = "score",
    num_samples: int,
    baseline: object = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""A scalar whose value is the mean cost and whose ``.backward()`` gives the mean estimate.

    The gradient flows to the tensors ``dist`` was built from. Generic form (any
    estimator): $\bar f + \lambda\cdot\operatorname{stop}(\bar g_\lambda) -
    \operatorname{stop}(\lambda\cdot\bar g_\lambda)$ with $\lambda$ the distribution's
    parameters; ``"score"`` uses $\bar f + L - \operatorname{stop}(L)$ with
    $L = \frac1N\sum_n \operatorname{stop}(f_n - b_n)\log p(x_n)$ and ``"pathwise"`` $\bar f$
    over ``rsample`` draws, which have the same value and gradient. Use it in a training loop
    (policy gradient, latent-variable models).
    """
    check_callable(f, "f")
    check_distribution(dist, "dist")
    check_count(num_samples, "num_samples")
    check_generator(generator)
    chosen = get_estimator(estimator)
    if not isinstance(chosen, Estimator) and not callable(getattr(chosen, "surrogate_loss", None)):
        raise TypeError(f"estimator {estimator!r} has no surrogate_loss method")
    return chosen.surrogate_loss(f, dist, num_samples=num_samples, baseline=baseline, generator=generator)


def _support_states(dist: D.Distribution) -> torch.Tensor:
    """All joint outcomes of a product of Bernoulli/Categorical factors: shape (S, *sample_shape)."""
    base = unwrap_independent(dist)
    if type(base) not in (D.Bernoulli, D.Categorical):
        raise ValueError(
            f"exact_expectation_grad enumerates Bernoulli or Categorical (and products), got {type(dist).__name__}"
        )
    shape = base.batch_shape
    values = base.enumerate_support(expand=False).reshape(-1)  # the K outcomes of one factor
    count = len(values) ** shape.numel()
    if count > MAX_ENUMERATION:
        raise ValueError(f"exact_expectation_grad: {count} joint states exceed {MAX_ENUMERATION}")
    grids = torch.meshgrid(*[values] * shape.numel(), indexing="ij") if shape.numel() else []
    states = torch.stack([g.reshape(-1) for g in grids], dim=1) if grids else values[:1].reshape(1, 0)
    return states.reshape(-1, *shape)


def exact_expectation_grad(
    f: Callable[[torch.Tensor], torch.Tensor],
    make_dist: Callable[[torch.Tensor], D.Distribution],
    theta: torch.Tensor,
) -> torch.Tensor:
    r"""$\nabla_\theta \sum_x p_\theta(x) f(x)$ by enumerating every outcome $x$ and autograd.

    For Bernoulli and Categorical distributions and their products (a batch shape,
    or ``Independent``), up to :data:`MAX_ENUMERATION` joint states. ``f`` is
    batched as in :func:`expectation_grad`. Returns a tensor shaped like ``theta``.
    """
    theta = check_theta(theta)
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        dist = check_distribution(make_dist(leaf))
        states = _support_states(dist)
        with torch.no_grad():
            values = f(states)
        if not isinstance(values, torch.Tensor) or values.shape != (states.shape[0],):
            raise ValueError(f"f must map {states.shape[0]} states to shape ({states.shape[0]},)")
        log_prob = dist.log_prob(states).reshape(states.shape[0], -1).sum(1)
        expectation = (log_prob.exp() * values.to(log_prob.dtype)).sum()
        (grad,) = torch.autograd.grad(expectation, leaf, allow_unused=True)
    return torch.zeros_like(theta) if grad is None else grad


