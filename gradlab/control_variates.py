r"""Baselines and control variates for the score-function estimator.

The score-function estimator of $g = \nabla_\theta \mathbb E_{p_\theta}[f(x)]$ is
$\hat g_n = f(x_n)\, s_n$ with the score $s_n = \nabla_\theta \log p_\theta(x_n)$.
Since $\mathbb E[s] = 0$, subtracting a baseline $b$ that does not depend on $x_n$
keeps it unbiased and can shrink its variance:

$$\begin{gathered}
\hat g_n = \big(f(x_n) - b_n\big)\, s_n, \\
\mathbb E[b_n s_n] = 0 \\
\text{whenever } b_n \text{ is independent of } x_n.
\end{gathered}$$

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

**Independent items.** When ``f`` returns one cost per (sample, item), shape ``(N, B)``, for a
distribution batched over ``B`` items (its ``batch_shape[0] == B``) and each cost $f_{n,i}$
depends on its own item $x_{n,i}$ only, every baseline is formed per item:
$\hat g_n = \sum_i (f_{n,i} - b_{n,i})\,\nabla\log p(x_{n,i}) + \sum_i c_i$, e.g. RLOO's
$b_{n,i} = \frac{1}{N-1}\sum_{m\ne n} f_{m,i}$ (the other samples of the *same* item), the EMA
one running mean per item, the optimal one fitted per item and coordinate of the
distribution's own parameters, the delta method one expansion per item.

The variance-minimising constant for coordinate $j$ is
$b^\star_j = \mathbb E[f s_j^2] / \mathbb E[s_j^2]$ (set the derivative of
$\mathbb E[(f-b)^2 s_j^2]$ to zero); :class:`OptimalBaseline` plugs in batch averages.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import distributions as D

from .distributions import unwrap_independent

__all__ = [
    "ScoreBatch",
    "Baseline",
    "NoBaseline",
    "ConstantBaseline",
    "EMABaseline",
    "LeaveOneOut",
    "OptimalBaseline",
    "DeltaMethod",
    "Expansion",
    "BASELINES",
    "resolve_baseline",
    "leave_one_out_sums",
    "leave_one_out_means",
]


@dataclass
class ScoreBatch:
    """What a baseline may look at for one batch.

    ``values``: the costs, ``(N,)`` (one per joint sample) or ``(N, B)`` (one per sample and
    item). ``scores``: per-sample scores, ``(N, Q)`` (joint) or ``(N, B, Q)`` (per item, the
    coordinates of item ``i``'s own parameters), or None (in :func:`gradlab.surrogate_loss`).
    ``samples``, the distribution ``dist``, ``f``, and ``params``: the distribution's own
    parameters by name (the order of the flat parameter vector the corrections live in), or
    None when gradlab cannot read them.
    """

    values: torch.Tensor
    scores: Optional[torch.Tensor]
    samples: torch.Tensor
    dist: D.Distribution
    f: Callable
    params: Optional[Dict[str, torch.Tensor]] = None
    owns_scores: bool = False  # True when ``scores`` may be overwritten once the baseline has been formed

    @property
    def per_item(self) -> bool:
        return self.values.dim() == 2


class Baseline:
    r"""A baseline: ``__call__(batch)`` gives $b$, shaped like ``batch.values`` (one number per sample,
    or per sample and item) or, when ``per_coordinate``, like ``batch.scores``; ``correction(batch)``
    the term added back to every sample (a flat vector over the distribution's own parameters, or 0).

    :meth:`terms` returns both for one batch; the estimators call it once per batch (a stateful
    baseline such as :class:`EMABaseline` advances once per call).
    """

    per_coordinate = False  # True when b has one value per score coordinate
    needs_params = False  # True when the correction lives on the distribution's own parameters

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        raise NotImplementedError

    def correction(self, batch: ScoreBatch) -> Union[torch.Tensor, float]:
        return 0.0

    def surrogate_correction(self, batch: ScoreBatch) -> Union[torch.Tensor, float]:
        """A scalar whose gradient w.r.t. the distribution's parameters is :meth:`correction`."""
        return 0.0

    def terms(self, batch: ScoreBatch) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
        """``(b, correction)`` for one batch."""
        return self(batch), self.correction(batch)

    def surrogate_terms(self, batch: ScoreBatch) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
        """``(b, surrogate_correction)`` for one batch (what :func:`gradlab.surrogate_loss` uses)."""
        return self(batch), self.surrogate_correction(batch)

    def centred(self, batch: ScoreBatch) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
        """``(values - b, correction)`` for one batch (a baseline with one value per sample or item);
        the same numbers as :meth:`terms`, which a baseline may form in fewer steps."""
        b, correction = self.terms(batch)
        return batch.values.detach() - b, correction


class NoBaseline(Baseline):
    """$b = 0$: the plain score-function (REINFORCE) estimator."""

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return torch.zeros_like(batch.values)


class ConstantBaseline(Baseline):
    """A fixed number $b$ (e.g. $f(\\theta)$: Chapter 3's "forward" ES method), the same for every item. Unbiased."""

    def __init__(self, value: Union[float, torch.Tensor]):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"baseline must be a single number, got shape {tuple(value.shape)}")
            value = float(value)
        self.value = float(value)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return torch.full_like(batch.values, self.value)


class EMABaseline(Baseline):
    r"""Exponential moving average of past costs: $b \leftarrow \beta b + (1-\beta)\bar f$ after each batch.

    The value used for a batch was fixed before the batch was drawn, so the estimator stays
    unbiased. Stateful: keep one object across training steps. ``value`` starts at ``initial``
    (a float); with per-item costs ``(N, B)`` it becomes a ``(B,)`` tensor, one running mean per
    item position (the next per-item batch must have the same ``B``); ``reset()`` forgets the history.
    """

    def __init__(self, decay: float = 0.9, initial: float = 0.0):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.initial, self.value = float(decay), float(initial), float(initial)

    def reset(self) -> None:
        self.value = self.initial

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        values = batch.values.detach()
        if not batch.per_item:
            if isinstance(self.value, torch.Tensor):
                raise ValueError("EMABaseline holds per-item values; reset() it before joint costs")
            b = torch.full_like(values, self.value)
            self.value = self.decay * self.value + (1.0 - self.decay) * float(values.mean())
            return b
        current = torch.as_tensor(self.value, dtype=values.dtype, device=values.device)
        if current.dim() == 1 and current.shape[0] != values.shape[1]:
            raise ValueError(
                f"EMABaseline holds {current.shape[0]} per-item values, got costs of {values.shape[1]} items"
            )
        b = current.expand(values.shape[1]).clone()
        self.value = self.decay * b + (1.0 - self.decay) * values.mean(0)
        return b.expand_as(values)


MATMUL_LOO = 1 << 17  # at most this many multiply-adds: the masked product beats the prefix/suffix sums


@functools.lru_cache(maxsize=16)
def off_diagonal_ones(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``(count, count)`` matrix of ones with a zero diagonal (cached per size, dtype and device)."""
    return 1.0 - torch.eye(count, dtype=dtype, device=device)


def leave_one_out_sums(values: torch.Tensor) -> torch.Tensor:
    r"""$\sum_{m \neq n} v_m$ for every $n$ (dim 0), without the cancellation of ``sum - v``.

    Exclusive prefix plus exclusive suffix sums (for small batches of finite values: one product with
    the off-diagonal ones): when one sample dominates, ``sum - v_n`` leaves round-off where the exact
    answer is tiny or zero.
    """
    count = values.shape[0]
    if values.dim() <= 2 and count * count * max(values[0].numel(), 1) <= MATMUL_LOO and values.is_floating_point():
        # one product with the off-diagonal ones (cached): each sum formed directly, the excluded entry
        # multiplied by an exact 0 (the costs are finite), so no cancellation either
        return off_diagonal_ones(count, values.dtype, values.device) @ values
    padded = torch.nn.functional.pad(values, (0, 0) * (values.dim() - 1) + (1, 1))  # [0, v_0, ..., v_{N-1}, 0]
    prefix = padded[:-2].cumsum(0)  # sum_{m < n} v_m
    suffix = padded[2:].flip(0).cumsum(0).flip(0)  # sum_{m > n} v_m
    return prefix + suffix


def leave_one_out_means(values: torch.Tensor) -> torch.Tensor:
    r"""$\frac{1}{N-1}\sum_{m \neq n} v_m$ along dim 0 (per column for ``(N, B)``), exact as :func:`leave_one_out_sums`."""
    return leave_one_out_sums(values) / (values.shape[0] - 1)


class LeaveOneOut(Baseline):
    r"""RLOO: $b_n = \frac{1}{N-1}\sum_{m\ne n} f(x_m)$, the mean of the *other* samples' costs.

    Per item ($f$ of shape ``(N, B)``): $b_{n,i} = \frac{1}{N-1}\sum_{m\ne n} f_{m,i}$, the other
    samples of the same item. Unbiased: $b_n$ is independent of $x_n$. Equivalently
    $\hat g = \frac{1}{N-1}\sum_n (f_n - \bar f)\, s_n$ (Kool et al., 2019). Computed with
    :func:`leave_one_out_sums` (exact when one cost dominates). Needs ``num_samples >= 2``.
    """

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        values = batch.values.detach()
        if values.shape[0] < 2:
            raise ValueError("baseline='rloo' needs num_samples >= 2")
        return leave_one_out_means(values)

    def centred(self, batch: ScoreBatch) -> Tuple[torch.Tensor, float]:
        r"""$f_n - b_n$; for a small batch one product with the cached $I - (\mathbf 1\mathbf 1^\top - I)/(N-1)$
        (each $f_n - \frac1{N-1}\sum_{m\ne n} f_m$ formed directly, as in :func:`leave_one_out_sums`)."""
        values = batch.values.detach()
        count = values.shape[0]
        if count < 2:
            raise ValueError("baseline='rloo' needs num_samples >= 2")
        if values.dim() <= 2 and count * count * max(values[0].numel(), 1) <= MATMUL_LOO and values.is_floating_point():
            return rloo_centring(count, values.dtype, values.device) @ values, 0.0
        return values - leave_one_out_means(values), 0.0


@functools.lru_cache(maxsize=16)
def rloo_centring(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """$C$ with $C_{nn} = 1$, $C_{nm} = -1/(N-1)$: ``C @ f`` is $f_n$ minus the mean of the others (cached)."""
    eye = torch.eye(count, dtype=dtype, device=device)
    return eye - (1.0 - eye) / (count - 1)


class OptimalBaseline(Baseline):
    r"""Per-coordinate $\hat b_j = \sum_n f_n s_{nj}^2 / \sum_n s_{nj}^2$, fitted on the batch itself.

    Estimates the variance-minimising $b^\star_j = \mathbb E[f s_j^2]/\mathbb E[s_j^2]$ (per item
    and coordinate of the item's own parameters when the costs are per item). **Biased**
    (``"optimal"``): $\hat b_j$ depends on every sample, including $x_n$, so
    $\mathbb E[\hat b_j s_{nj}] \neq 0$. The bias is $O(1/N)$ but its constant can be large
    (heavy weights $s_{nj}^2$): for $\mathcal N(1, 0.7^2)$, $f = (x - 0.3)^2$ it removes
    about half of the gradient at $N = 4$ and 15–25% at $N = 16$ (see the tests).
    ``leave_one_out=True`` (``"optimal_loo"``) fits $\hat b_{nj}$ on the other $N - 1$
    samples only: unbiased, nearly the same variance for moderate $N$ (needs $N \ge 2$).
    Needs per-sample scores: :func:`gradlab.surrogate_loss` takes the generic surrogate of
    :class:`gradlab.estimator.Estimator` for it (the gradient of the mean of these estimates).
    """

    per_coordinate = True

    def __init__(self, leave_one_out: bool = False):
        self.leave_one_out = bool(leave_one_out)

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        if batch.scores is None:
            raise ValueError("baseline='optimal' needs per-sample scores; use gradlab.expectation_grad")
        squares = batch.scores.detach() ** 2
        weighted = batch.values.detach().unsqueeze(-1) * squares
        tiny = torch.finfo(squares.dtype).tiny
        if not self.leave_one_out:
            return (weighted.sum(0) / squares.sum(0).clamp_min(tiny)).expand_as(squares)
        if squares.shape[0] < 2:
            raise ValueError("baseline='optimal_loo' needs num_samples >= 2")
        num, den = leave_one_out_sums(weighted), leave_one_out_sums(squares)
        # Where no other sample has a non-zero score the fit is undefined: use b = 0 (still unbiased).
        return torch.where(den > 0, num / den.clamp_min(tiny), torch.zeros_like(num))


class Expansion(NamedTuple):
    """The delta method's expansion point for one batch: $f(\\mu)$ (``()`` or ``(B,)``) and $\\nabla f(\\mu)$."""

    value: torch.Tensor
    grad: torch.Tensor


class DeltaMethod(Baseline):
    r"""First-order Taylor control variate $h(x) = f(\mu) + \nabla f(\mu)^\top (x - \mu)$ for Gaussians.

    For $x\sim\mathcal N(\mu, \operatorname{diag}\sigma^2)$: $\mathbb E[h] = f(\mu)$ at the
    expansion point, $\partial\mathbb E[h]/\partial\mu = \nabla f(\mu)$ and
    $\partial\mathbb E[h]/\partial\sigma = 0$ (the expansion point is held fixed), so
    $\hat g_n = (f(x_n) - h(x_n))\, s_n + J^\top(\nabla f(\mu), 0)$ is unbiased. It removes
    the linear part of $f$ from the noisy term: large gains when $f$ is nearly linear
    on the scale of $\sigma$. Needs ``f`` differentiable (one extra evaluation and one
    backward pass at $\mu$ per batch: :meth:`expansion`, computed once by :meth:`terms` and
    passed to the others) and a Normal (or ``Independent`` Normal). Per item: $f(\mu)$ has
    shape ``(1, B)`` and item $i$'s expansion uses the gradient of $f_i$ w.r.t. its own $\mu_i$.
    """

    needs_params = True

    def expansion(self, batch: ScoreBatch) -> Expansion:
        """$f(\\mu)$ and $\\nabla_\\mu \\sum_i f_i(\\mu)$ at the mean of ``batch.dist``."""
        base = unwrap_independent(batch.dist)
        if type(base) is not D.Normal:
            raise ValueError(f"baseline='delta' needs a Normal distribution, got {type(base).__name__}")
        mu = base.loc.detach().clone().requires_grad_(True)
        expected = (1, *batch.values.shape[1:])
        with torch.enable_grad():
            value = batch.f(mu.unsqueeze(0))
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                raise ValueError(f"baseline='delta': f must return shape {expected} for a batch of one sample")
            (grad,) = torch.autograd.grad(value.sum(), mu)
        return Expansion(value.detach().reshape(expected[1:]), grad)

    def __call__(self, batch: ScoreBatch, expansion: Optional[Expansion] = None) -> torch.Tensor:
        value, grad = self.expansion(batch) if expansion is None else expansion
        shift = (batch.samples.detach() - batch.dist.mean.detach()) * grad
        shift = shift.reshape(*batch.values.shape, -1).sum(-1)
        return value + shift

    def correction(self, batch: ScoreBatch, expansion: Optional[Expansion] = None) -> torch.Tensor:
        if batch.params is None:
            raise ValueError("baseline='delta' needs a distribution gradlab can read the parameters of")
        grad = (self.expansion(batch) if expansion is None else expansion).grad
        blocks = [(grad if k.endswith("loc") else torch.zeros_like(v)).reshape(-1) for k, v in batch.params.items()]
        return torch.cat(blocks)

    def surrogate_correction(self, batch: ScoreBatch, expansion: Optional[Expansion] = None) -> torch.Tensor:
        grad = (self.expansion(batch) if expansion is None else expansion).grad
        return (unwrap_independent(batch.dist).loc * grad).sum()

    def terms(self, batch: ScoreBatch):
        expansion = self.expansion(batch)
        return self(batch, expansion), self.correction(batch, expansion)

    def surrogate_terms(self, batch: ScoreBatch):
        expansion = self.expansion(batch)
        return self(batch, expansion), self.surrogate_correction(batch, expansion)


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
