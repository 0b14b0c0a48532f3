r"""Variational lower bounds on $I(X;Y)$ computed from a $K\times K$ matrix of critic scores.

``scores[i, j]`` $= f(x_i, y_j)$ for a batch of $K$ joint pairs $(x_i, y_i)$: the diagonal holds the
$K$ joint pairs, the $K(K-1)$ off-diagonal entries are pairs of the product of the marginals. Every
normalisation runs over the $x$'s for a fixed $y$ (down a column), as in the family
Barber–Agakov → TUBA → NWJ → DV of Poole et al. (2019); a baseline $a(y)$ is a vector of
$\log a(y_j)$, one per column. All functions are differentiable and return a scalar tensor.

* ``dv``: $\overline{f_{ii}} - \log\overline{e^{f_{ij}}}_{i\ne j}$ (the population DV value is a lower
  bound; the estimate of the log is biased upwards by Jensen).
* ``nwj``: $\overline{f_{ii}} - e^{-1}\,\overline{e^{f_{ij}}}_{i\ne j}$, unbiased for its bound.
* ``tuba``: $1 + \overline{f_{ii} - \log a_i} - \overline{e^{f_{ij} - \log a_j}}_{i\ne j}$, NWJ at $a = e$.
* ``infonce``: $\log K + \frac1K\sum_j \big(f_{jj} - \log\sum_i e^{f_{ij}}\big) \le \log K$.
* ``interpolated`` ($I_\alpha$): TUBA whose baseline mixes $\alpha$ times the leave-one-out mean
  of $e^{f}$ over the batch with $(1-\alpha)\,a(y)$.
* ``js``: the Jensen–Shannon f-GAN objective $-\overline{\operatorname{sp}(-f_{ii})} - \overline{\operatorname{sp}(f_{ij})}_{i\ne j}$
  (a training objective, not an MI bound).
* ``smile``: DV with the partition term clipped, $\overline{f_{ii}} - \log\overline{e^{\operatorname{clip}(f_{ij}, -\tau, \tau)}}$.
* ``barber_agakov``: $\overline{f_{ii}}$ for scores $f_{ij} = \log q(x_i\mid y_j) - \log p(x_i)$ of a normalised $q$.

:class:`MINE` trains the DV bound with a moving average in the denominator of its gradient, and
:func:`objective` maps a bound's name to its training surrogate and its reported value.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_scores", "log_mean_exp_off_diagonal", "dv", "nwj", "tuba", "infonce", "interpolated", "js",
           "smile", "barber_agakov", "MINE", "objective", "SCORE_BOUNDS", "LOWER_BOUNDS"]

# bound name -> what the trainer maximises / reports; LOWER_BOUNDS: values <= I(X;Y) in expectation.
SCORE_BOUNDS = ("dv", "mine", "nwj", "tuba", "infonce", "interpolated", "js", "js_dv", "smile", "ba")
LOWER_BOUNDS = ("nwj", "tuba", "infonce", "interpolated", "js", "ba")


def check_scores(scores: Any, name: str = "scores") -> Tensor:
    """``scores`` must be a floating ``(K, K)`` tensor with ``K >= 2`` and finite entries."""
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"{name} must be a square (K, K) matrix with K >= 2, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} has non-finite entries (inf or nan): the critic has diverged")
    return scores


def check_log_baseline(log_baseline: Any, K: int) -> Tensor:
    """``log_baseline``: one value $\\log a(y_j)$ per column, shape ``(K,)`` (or ``(K, 1)``), or a scalar."""
    if not isinstance(log_baseline, Tensor):
        raise TypeError(f"log_baseline must be a torch.Tensor, got {type(log_baseline).__name__}")
    if log_baseline.numel() == 1:
        return log_baseline.reshape(()).expand(K)
    if log_baseline.shape not in ((K,), (K, 1)):
        raise ValueError(f"log_baseline must have shape ({K},), one value per y, got {tuple(log_baseline.shape)}")
    return log_baseline.reshape(K)


def off_diagonal(K: int, device: Any) -> Tensor:
    """Boolean ``(K, K)`` mask, true off the diagonal."""
    return ~torch.eye(K, dtype=torch.bool, device=device)


def log_mean_exp_off_diagonal(scores: Tensor) -> Tensor:
    r"""$\log\frac1{K(K-1)}\sum_{i\ne j} e^{s_{ij}}$ by ``logsumexp`` (no overflow)."""
    K = scores.shape[0]
    masked = scores.masked_fill(~off_diagonal(K, scores.device), -math.inf)
    return torch.logsumexp(masked.reshape(-1), dim=0) - math.log(K * (K - 1))


def mean_off_diagonal(values: Tensor) -> Tensor:
    K = values.shape[0]
    return (values.sum() - values.diagonal().sum()) / (K * (K - 1))


def dv(scores: Tensor) -> Tensor:
    r"""Donsker–Varadhan: $\frac1K\sum_i f_{ii} - \log\frac1{K(K-1)}\sum_{i\ne j} e^{f_{ij}}$."""
    check_scores(scores)
    return scores.diagonal().mean() - log_mean_exp_off_diagonal(scores)


def nwj(scores: Tensor) -> Tensor:
    r"""Nguyen–Wainwright–Jordan: $\frac1K\sum_i f_{ii} - \frac1{K(K-1)}\sum_{i\ne j} e^{f_{ij} - 1}$."""
    check_scores(scores)
    return scores.diagonal().mean() - torch.exp(log_mean_exp_off_diagonal(scores) - 1)


def tuba(scores: Tensor, log_baseline: Tensor) -> Tensor:
    r"""TUBA: $1 + \frac1K\sum_i (f_{ii} - \log a_i) - \frac1{K(K-1)}\sum_{i\ne j} e^{f_{ij} - \log a_j}$.

    ``log_baseline[j]`` $= \log a(y_j)$, e.g. the output of a learned network of $y$; a constant
    $\log a = 1$ gives :func:`nwj`.
    """
    check_scores(scores)
    log_a = check_log_baseline(log_baseline, scores.shape[0])
    shifted = scores - log_a[None, :]
    return 1 + shifted.diagonal().mean() - torch.exp(log_mean_exp_off_diagonal(shifted))


def infonce(scores: Tensor) -> Tensor:
    r"""InfoNCE: $\log K + \frac1K\sum_j\big(f_{jj} - \log\sum_i e^{f_{ij}}\big)$, never above $\log K$.

    Each $y_j$ is scored against all $K$ $x$'s of the batch, of which $x_j$ is its partner.
    """
    check_scores(scores)
    K = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean() + math.log(K)


def log_leave_one_out_mean(rows: Tensor) -> Tensor:
    r"""``out[r, c]`` $= \log\frac1{K-1}\sum_{k\ne c} e^{\text{rows}[r, k]}$, stably.

    $\log\sum_{k\ne c} e^{s_k} = s_c + \log(e^{d_c} - 1)$ with $d_c = \operatorname{lse}(s) - s_c > 0$, and
    $\log(e^d - 1) = d + \log(-\operatorname{expm1}(-d))$ stays finite for large $d$.
    """
    K = rows.shape[1]
    lse = torch.logsumexp(rows, dim=1, keepdim=True)
    d = (lse - rows).clamp_min(torch.finfo(rows.dtype).tiny)  # d = 0 only if all other terms underflow
    return rows + d + torch.log(-torch.expm1(-d)) - math.log(K - 1)


def interpolated(scores: Tensor, log_baseline: Tensor, alpha: float) -> Tensor:
    r"""$I_\alpha$ (Poole et al. 2019): TUBA with the baseline $\alpha\, m + (1-\alpha)\, a(y)$.

    For a joint pair $(x_j, y_j)$ and each other $x_c$ left out, $m$ is the mean of $e^{f(x_k, y_j)}$ over
    the $K-1$ $x$'s other than $x_c$ (so it includes the partner $x_j$); for a product pair $(x_i, y_j)$,
    $m$ is the mean over the $K-1$ $x$'s other than $x_j$ (all independent of $y_j$). It is a lower bound
    for every $\alpha\in[0, 1]$: $\alpha = 0$ is :func:`tuba`, $\alpha\to 1$ a multi-sample bound like InfoNCE.
    """
    check_scores(scores)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    K = scores.shape[0]
    log_a = check_log_baseline(log_baseline, K)
    by_y = scores.T  # by_y[j, k] = f(x_k, y_j): row j normalises over the x's for y_j
    log_m = log_leave_one_out_mean(by_y)  # [j, c]: x_c left out
    parts = []
    if alpha > 0:
        parts.append(math.log(alpha) + log_m)
    if alpha < 1:
        parts.append(math.log1p(-alpha) + log_a[:, None].expand(K, K))
    log_base = torch.logsumexp(torch.stack(parts), dim=0)  # [j, c]
    joint = mean_off_diagonal(by_y.diagonal()[:, None] - log_base)  # (x_j, y_j) against base without x_c
    marginal = torch.exp(log_mean_exp_off_diagonal(by_y - log_base.diagonal()[:, None]))
    return 1 + joint - marginal


def js(scores: Tensor) -> Tensor:
    r"""Jensen–Shannon f-GAN objective $-\overline{\operatorname{softplus}(-f_{ii})} - \overline{\operatorname{softplus}(f_{ij})}_{i\ne j}$.

    Its maximiser is $f = \log\frac{p(x, y)}{p(x)p(y)}$, the same critic as DV's: a stable way to train a
    critic that is then *evaluated* with :func:`nwj` (at $f + 1$) or :func:`dv` (see :func:`objective`).
    """
    check_scores(scores)
    return -F.softplus(-scores.diagonal()).mean() - mean_off_diagonal(F.softplus(scores))


def smile(scores: Tensor, clip: float = 5.0) -> Tensor:
    r"""SMILE value (Song & Ermon 2020): DV with $e^{f}$ clipped to $[e^{-\tau}, e^{\tau}]$ in the log term.

    Clipping bounds the variance of the partition estimate (at most $e^{2\tau}$-ish per pair) at the
    price of a bias; as $\tau\to\infty$ it is :func:`dv`. Not a lower bound for finite $\tau$.
    """
    check_scores(scores)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    return scores.diagonal().mean() - log_mean_exp_off_diagonal(scores.clamp(-clip, clip))


def barber_agakov(scores: Tensor) -> Tensor:
    r"""Barber–Agakov: $\frac1K\sum_i f_{ii}$ where $f_{ij} = \log q(x_i\mid y_j) - \log p(x_i)$.

    A lower bound for every *normalised* conditional $q$ and the true marginal $p(x)$ (known entropy);
    tight when $q(x\mid y) = p(x\mid y)$. Only the diagonal is used.
    """
    check_scores(scores)
    return scores.diagonal().mean()


class MINE:
    r"""MINE's moving average for the DV bound (Belghazi et al. 2018).

    The DV gradient $\nabla\overline{f_{ii}} - \nabla\overline{e^{f_{ij}}}/\overline{e^{f_{ij}}}$ divides by a
    minibatch mean, a ratio of averages biased by $O(1/K)$. MINE divides instead by
    $m \leftarrow (1-r)\,m + r\,\overline{e^{f}}$ (kept as $\log m$, initialised by the first batch): a
    smaller bias (the average has variance $\approx r/(2-r)$ times a batch's, plus a lag), not none.
    Call with the joint mean and the log of the marginal mean of $e^f$ (sample form), or use :meth:`scores`.
    """

    def __init__(self, ema_rate: float = 0.01) -> None:
        if isinstance(ema_rate, bool) or not isinstance(ema_rate, (int, float)) or not 0 < ema_rate <= 1:
            raise ValueError(f"ema_rate must be a float in (0, 1], got {ema_rate!r}")
        self.ema_rate = float(ema_rate)
        self.log_avg_exp: Optional[Tensor] = None

    def __call__(self, joint_mean: Tensor, log_marginal_mean: Tensor) -> Tuple[Tensor, Tensor]:
        """``(surrogate, value)``: the surrogate has MINE's gradient, ``value`` is the DV estimate."""
        new = log_marginal_mean.detach()
        rate = self.ema_rate
        if self.log_avg_exp is None or rate == 1:
            self.log_avg_exp = new
        else:
            self.log_avg_exp = torch.logaddexp(self.log_avg_exp + math.log1p(-rate), new + math.log(rate))
        surrogate = joint_mean - torch.exp(log_marginal_mean - self.log_avg_exp)
        return surrogate, joint_mean.detach() - new

    def scores(self, scores: Tensor) -> Tuple[Tensor, Tensor]:
        """The same from a score matrix (off-diagonal pairs as the marginal sample)."""
        check_scores(scores)
        return self(scores.diagonal().mean(), log_mean_exp_off_diagonal(scores))


def objective(name: str, scores: Tensor, *, log_baseline: Optional[Tensor] = None, alpha: float = 0.5,
              clip: float = 5.0, mine: Optional[MINE] = None) -> Tuple[Tensor, Tensor]:
    """``(surrogate to maximise, reported value)`` of the bound ``name`` (one of :data:`SCORE_BOUNDS`).

    ``js`` and ``smile`` train with :func:`js` and report :func:`nwj` at ``scores + 1`` (``js``),
    :func:`dv` (``js_dv``) or :func:`smile`; ``mine`` needs a :class:`MINE` state; ``tuba`` and
    ``interpolated`` need ``log_baseline``.
    """
    if name not in SCORE_BOUNDS:
        raise ValueError(f"bound must be one of {SCORE_BOUNDS}, got {name!r}")
    if name in ("tuba", "interpolated") and log_baseline is None:
        raise ValueError(f"bound {name!r} needs log_baseline, the log a(y) of each y")
    if name == "dv":
        value = dv(scores)
        return value, value.detach()
    if name == "mine":
        return (mine if mine is not None else MINE()).scores(scores)
    if name in ("js", "js_dv", "smile"):
        surrogate = js(scores)
        value = {"js": lambda: nwj(scores + 1), "js_dv": lambda: dv(scores), "smile": lambda: smile(scores, clip)}
        return surrogate, value[name]().detach()
    if name == "tuba":
        value = tuba(scores, log_baseline)
    elif name == "interpolated":
        value = interpolated(scores, log_baseline, alpha)
    else:
        value = {"nwj": nwj, "infonce": infonce, "ba": barber_agakov}[name](scores)
    return value, value.detach()
