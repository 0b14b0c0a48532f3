r"""Baselines and control variates for the score-function estimator.

The score-function estimator of $g = \nabla_\theta \mathbb E_{p_\theta}[f(x)]$ is
$\hat g_n = f(x_n)\, s_n$ with the score $s_n = \nabla_\theta \log p_\theta(x_n)$.
Since $\mathbb E[s] = 0$, subtracting a baseline $b$ that does not depend on $x_n$
keeps it unbiased and can shrink its variance:

$$\hat g_n = \big(f(x_n) - b_n\big)\, s_n, \qquad
\mathbb E[b_n s_n] = 0 \text{ whenever } b_n \text{ is independent of } x_n.$$

More generally a control variate $h$ with a known $\mathbb E[h(x) s] = \nabla_\theta
\mathbb E[h]$ gives $\hat g_n = (f(x_n) - h(x_n)) s_n + \nabla_\theta\mathbb E[h]$.

| ``baseline=`` | class | $b_n$ | unbiased? |
|---|---|---|---|
| a number | :class:`ConstantBaseline` | $b$ | yes |
| ``EMABaseline(decay)`` | :class:`EMABaseline` | running mean of earlier batches' costs | yes (fixed before the batch) |
| ``"rloo"`` | :class:`LeaveOneOut` | $\frac{1}{N-1}\sum_{m\ne n} f(x_m)$ | yes (independent of $x_n$) |
| ``"optimal"`` | :class:`OptimalBaseline` | $b_j = \sum_n f_n s_{nj}^2 / \sum_n s_{nj}^2$ per coordinate | **no**: fitted on the same batch, bias $O(1/N)$ |
| ``"optimal_loo"`` | ``OptimalBaseline(leave_one_out=True)`` | the same fitted on the other $N-1$ samples | yes |
| ``"delta"`` | :class:`DeltaMethod` | $h(x) = f(\mu) + \nabla f(\mu)^\top (x - \mu)$, Gaussians only | yes ($\nabla\mathbb E[h]$ in closed form) |
| ``RegressionControlVariates(...)`` | :mod:`gradlab.control_variates_regression` | $\sum_k c_{kj} h_k(x)$, $c$ by least squares of $f s$ on $h s - \nabla\mathbb E[h]$ | yes cross-fitted or leave-one-out; **no** with ``fit="same"`` |
| ``RaoBlackwell()`` / ``RaoBlackwell(parts)`` | :mod:`gradlab.rao_blackwell` | conditional expectation given the other coordinates (discrete sum, or the local score of a separable $f$) | yes |

The variance-minimising constant for coordinate $j$ is
$b^\star_j = \mathbb E[f s_j^2] / \mathbb E[s_j^2]$ (set the derivative of
$\mathbb E[(f-b)^2 s_j^2]$ to zero); :class:`OptimalBaseline` plugs in batch averages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
from torch import distributions as D

from .distributions import distribution_params, flatten_param_dict, unwrap_independent

__all__ = [
    "ScoreBatch",
    "Baseline",
    "NoBaseline",
    "ConstantBaseline",
    "EMABaseline",
    "LeaveOneOut",
    "OptimalBaseline",
    "DeltaMethod",
    "BASELINES",
    "resolve_baseline",
]


@dataclass
class ScoreBatch:
    """What a baseline may look at: costs ``values`` (N,) or per item (N, B), per-sample ``scores``
    (N, P) w.r.t. the distribution's parameters or None (per-item costs, the surrogate loss), the
    ``samples``, the distribution and ``f``."""

    values: torch.Tensor
    scores: Optional[torch.Tensor]
    samples: torch.Tensor
    dist: D.Distribution
    f: Callable


class Baseline:
    """A baseline: ``__call__(batch)`` gives $b$ of shape (N, 1), (N, P) (``per_coordinate``) or,
    for per-item costs, (N, B); ``correction(batch)`` the term added back to every sample
    (a (P,) tensor in the distribution's parameters, or 0). :meth:`fit` returns both from
    one pass over the batch (what the score-function estimator calls)."""

    per_coordinate = False  # True when b has one value per coordinate of the parameters (N, P)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        raise NotImplementedError

    def correction(self, batch: ScoreBatch) -> Union[torch.Tensor, float]:
        return 0.0

    def fit(self, batch: ScoreBatch) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
        """``(b, correction)`` for this batch, each computed once."""
        return self(batch), self.correction(batch)

    def surrogate_correction(self, batch: ScoreBatch) -> Union[torch.Tensor, float]:
        """Deprecated (the generic surrogate of :class:`gradlab.estimator.Estimator` handles corrections)."""
        return 0.0


def as_column(b: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A baseline shaped like ``values`` as (N, 1) for one cost per sample, kept (N, B) per item."""
    return b.unsqueeze(1) if values.dim() == 1 else b


class NoBaseline(Baseline):
    """$b = 0$: the plain score-function (REINFORCE) estimator."""

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return as_column(torch.zeros_like(batch.values), batch.values)


class ConstantBaseline(Baseline):
    """A fixed number $b$ (e.g. $f(\\theta)$: Chapter 3's "forward" ES method). Unbiased."""

    def __init__(self, value: Union[float, torch.Tensor]):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"baseline must be a single number, got shape {tuple(value.shape)}")
            value = float(value)
        self.value = float(value)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return as_column(torch.full_like(batch.values, self.value), batch.values)


class EMABaseline(Baseline):
    r"""Exponential moving average of past costs: $b \leftarrow \beta b + (1-\beta)\bar f$ after each batch.

    The value used for a batch was fixed before the batch was drawn, so the
    estimator stays unbiased. Stateful: keep one object across training steps.
    ``value`` starts at ``initial``; ``reset()`` forgets the history.
    """

    def __init__(self, decay: float = 0.9, initial: float = 0.0):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.initial, self.value = float(decay), float(initial), float(initial)

    def reset(self) -> None:
        self.value = self.initial

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        b = as_column(torch.full_like(batch.values, self.value), batch.values)
        mean = float(batch.values.detach().mean())
        self.value = self.decay * self.value + (1.0 - self.decay) * mean
        return b


class LeaveOneOut(Baseline):
    r"""RLOO: $b_n = \frac{1}{N-1}\sum_{m\ne n} f(x_m)$, the mean of the *other* samples' costs.

    Unbiased: $b_n$ is independent of $x_n$. Equivalently $\hat g = \frac{1}{N-1}\sum_n
    (f_n - \bar f)\, s_n$ (Kool et al., 2019). Needs ``num_samples >= 2``. The sums over the
    other samples are exact (:func:`leave_one_out_sums`, no ``sum - f_n`` cancellation); with
    per-item costs (N, B) each item gets its own leave-one-out mean.
    """

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        values = batch.values.detach()
        count = values.shape[0]
        if count < 2:
            raise ValueError("baseline='rloo' needs num_samples >= 2")
        return as_column(leave_one_out_sums(values) / (count - 1), values)


class OptimalBaseline(Baseline):
    r"""Per-coordinate $\hat b_j = \sum_n f_n s_{nj}^2 / \sum_n s_{nj}^2$, fitted on the batch itself.

    Estimates the variance-minimising $b^\star_j = \mathbb E[f s_j^2]/\mathbb E[s_j^2]$.
    **Biased** (``"optimal"``): $\hat b_j$ depends on every sample, including $x_n$, so
    $\mathbb E[\hat b_j s_{nj}] \neq 0$. The bias is $O(1/N)$ but its constant can be large
    (heavy weights $s_{nj}^2$): for $\mathcal N(1, 0.7^2)$, $f = (x - 0.3)^2$ it removes
    about half of the gradient at $N = 4$ and 15–25% at $N = 16$ (see the tests).
    ``leave_one_out=True`` (``"optimal_loo"``) fits $\hat b_{nj}$ on the other $N - 1$
    samples only: unbiased, nearly the same variance for moderate $N$ (needs $N \ge 2$).
    Needs per-sample scores, so :func:`gradlab.surrogate_loss` does not accept it.
    """

    per_coordinate = True

    def __init__(self, leave_one_out: bool = False):
        self.leave_one_out = bool(leave_one_out)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        if batch.scores is None:
            raise ValueError("baseline='optimal' needs per-sample scores; use gradlab.expectation_grad")
        squares = batch.scores.detach() ** 2
        weighted = batch.values.detach().unsqueeze(1) * squares
        tiny = torch.finfo(squares.dtype).tiny
        if not self.leave_one_out:
            return (weighted.sum(0) / squares.sum(0).clamp_min(tiny)).expand_as(squares)
        if squares.shape[0] < 2:
            raise ValueError("baseline='optimal_loo' needs num_samples >= 2")
        num, den = leave_one_out_sums(weighted), leave_one_out_sums(squares)
        # Where no other sample has a non-zero score the fit is undefined: use b = 0 (still unbiased).
        return torch.where(den > 0, num / den.clamp_min(tiny), torch.zeros_like(num))


def leave_one_out_sums(values: torch.Tensor) -> torch.Tensor:
    r"""$\sum_{m \neq n} v_m$ for every $n$ (dim 0), without the cancellation of ``sum - v``.

    Exclusive prefix plus exclusive suffix sums: when one sample dominates, ``sum - v_n``
    leaves round-off where the exact answer is tiny or zero.
    """
    zero = torch.zeros_like(values[:1])
    prefix = torch.cat([zero, values.cumsum(0)[:-1]])
    suffix = torch.cat([values.flip(0).cumsum(0)[:-1].flip(0), zero])
    return prefix + suffix


class DeltaMethod(Baseline):
    r"""First-order Taylor control variate $h(x) = f(\mu) + \nabla f(\mu)^\top (x - \mu)$ for Gaussians.

    For $x\sim\mathcal N(\mu, \operatorname{diag}\sigma^2)$: $\mathbb E[h] = f(\mu)$ at the
    expansion point, $\partial\mathbb E[h]/\partial\mu = \nabla f(\mu)$ and
    $\partial\mathbb E[h]/\partial\sigma = 0$ (the expansion point is held fixed), so
    $\hat g_n = (f(x_n) - h(x_n))\, s_n + J^\top(\nabla f(\mu), 0)$ is unbiased. It removes
    the linear part of $f$ from the noisy term: large gains when $f$ is nearly linear
    on the scale of $\sigma$. Needs ``f`` differentiable (one extra evaluation and one
    backward pass at $\mu$ per batch) and a Normal (or ``Independent`` Normal).
    """

    needs_jacobian = True  # needs the distribution's parameters (a Normal's loc) and one cost per sample

    def expansion(self, batch: ScoreBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""$f(\mu)$ and $\nabla f(\mu)$ at the mean of the batch's Normal: one evaluation, one backward."""
        base = unwrap_independent(batch.dist)
        if type(base) is not D.Normal:
            raise ValueError(
                f"baseline='delta' needs a Normal distribution, got {type(base).__name__}"
            )
        mu = base.loc.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = batch.f(mu.unsqueeze(0))
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError("baseline='delta': f must return shape (1,) for a batch of one sample")
            (grad,) = torch.autograd.grad(value.sum(), mu)
        return value.detach().reshape(()), grad

    def baseline_from(self, batch: ScoreBatch, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        shift = (batch.samples.detach() - batch.dist.mean.detach()) * grad
        return (value + shift.reshape(shift.shape[0], -1).sum(1)).unsqueeze(1)

    def correction_from(self, batch: ScoreBatch, grad: torch.Tensor) -> torch.Tensor:
        r"""$\nabla_\lambda \mathbb E[h] = (\nabla f(\mu), 0)$ over the flat (``loc``, ``scale``)."""
        params = distribution_params(batch.dist)
        mean_grad = {k: grad if k.endswith("loc") else torch.zeros_like(v) for k, v in params.items()}
        return flatten_param_dict(mean_grad)

    def fit(self, batch: ScoreBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        value, grad = self.expansion(batch)  # once per batch, passed on explicitly
        return self.baseline_from(batch, value, grad), self.correction_from(batch, grad)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return self.baseline_from(batch, *self.expansion(batch))

    def correction(self, batch: ScoreBatch) -> torch.Tensor:
        return self.correction_from(batch, self.expansion(batch)[1])


BASELINES = {
    "rloo": LeaveOneOut,
    "optimal": OptimalBaseline,
    "optimal_loo": lambda: OptimalBaseline(leave_one_out=True),
    "delta": DeltaMethod,
}


def resolve_baseline(baseline: object) -> Baseline:
    """``None``, a number, a name in :data:`BASELINES` or a :class:`Baseline` object → a Baseline."""
    if baseline is None:
        return NoBaseline()
    if isinstance(baseline, Baseline):
        return baseline
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {sorted(BASELINES)}, a number or a Baseline, got {baseline!r}")
        return BASELINES[baseline]()
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return ConstantBaseline(baseline)
    if isinstance(baseline, torch.Tensor):
        return ConstantBaseline(baseline)
    raise TypeError(
        f"baseline must be None, a number, one of {sorted(BASELINES)} or a Baseline, got {type(baseline).__name__}"
    )
