r"""Discrete random variables: sampling them and getting gradients through them.

* Gumbel-max: with $g_k = -\log(-\log u_k)$, $u_k \sim U(0, 1)$ i.i.d.,
  $\arg\max_k (\lambda_k + g_k)$ is a sample of $\mathrm{Categorical}(\mathrm{softmax}(\lambda))$.
* Gumbel-softmax / Concrete (Jang et al. 2017; Maddison et al. 2017): replace the
  $\arg\max$ by $\mathrm{softmax}((\lambda + g)/\tau)$, a point of the simplex that is
  differentiable in $\lambda$ and tends to the one-hot sample as $\tau \to 0$.
* Straight-through (Bengio et al. 2013): sample the hard value on the forward pass,
  pretend the sampler was the identity (or the soft relaxation) on the backward pass.
* Sinkhorn (Sinkhorn 1964) and Gumbel-Sinkhorn (Mena et al. 2018): alternate row and
  column normalisation of $\exp(X/\tau)$ in log space to get a doubly-stochastic
  matrix, a relaxed permutation; the hard permutation is the Hungarian algorithm's.

This module holds the samplers only. The estimators built on them (Gumbel-softmax,
straight-through, REBAR, RELAX) live in :mod:`gradlab.relax`, which imports this module;
``gradlab.discrete.REBAR`` etc. still resolve (looked up lazily, so there is no import cycle).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .checks import check_count, check_generator, check_tensor

__all__ = [
    "uniform",
    "sample_gumbel",
    "perturb",
    "hard_with_soft_grad",
    "sample_z_b_ztilde",
    "gumbel_max",
    "gumbel_softmax",
    "binary_concrete",
    "straight_through",
    "BernoulliStraightThrough",
    "CategoricalStraightThrough",
    "sinkhorn",
    "gumbel_sinkhorn",
    "hungarian",
]

Temperature = Union[float, torch.Tensor]


# --------------------------------------------------------------------------- input checks
def check_tau(tau: object, name: str = "tau") -> Temperature:
    """A temperature: a positive number or a tensor of positive numbers."""
    if isinstance(tau, torch.Tensor):
        if not tau.is_floating_point() or not bool((tau > 0).all()):
            raise ValueError(f"{name} must be positive, got {tau}")
        return tau
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"{name} must be a positive number, got {tau!r}")
    return float(tau)


# --------------------------------------------------------------------------- noise
def uniform(shape, *, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Uniform numbers in the *open* interval $(0, 1)$, on ``like``'s device and dtype.

    ``torch.rand`` draws from $[0, 1)$; an exact $0$ would give $\log 0$ downstream, so it
    is raised to the smallest normal number of the dtype (probability $\approx 2^{-24}$
    per draw in float32, so it happens).
    """
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return u.clamp_(min=torch.finfo(like.dtype).tiny)


def sample_gumbel(shape, *, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Standard Gumbel noise $g = -\log(-\log u)$, finite for every draw."""
    return -torch.log(-torch.log(uniform(shape, like=like, generator=generator)))


def gumbel_max(
    logits: torch.Tensor, *, num_samples: Optional[int] = None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    r"""Exact categorical samples by the Gumbel-max trick, as indices.

    $\arg\max_k(\lambda_k + g_k)$ has $P(k) = \mathrm{softmax}(\lambda)_k$ over the last
    dimension of ``logits``. With ``num_samples`` the result gets a leading sample dimension.
    """
    logits = check_tensor(logits, "logits")
    generator = check_generator(generator)
    shape = logits.shape if num_samples is None else (num_samples, *logits.shape)
    return (logits + sample_gumbel(shape, like=logits, generator=generator)).argmax(dim=-1)


def perturb(logits: torch.Tensor, kind: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""$z = \lambda + \text{noise}$ whose threshold / argmax is an exact sample.

    ``kind="bernoulli"``: logistic noise $\log u - \log(1-u)$, and $\mathbb 1[z > 0]\sim\mathrm{Bernoulli}(\sigma(\lambda))$;
    otherwise standard Gumbel noise on every entry, and $\arg\max z$ over the last dim is categorical.
    """
    if kind == "bernoulli":
        u = uniform(logits.shape, like=logits, generator=generator)
        return logits + torch.log(u) - torch.log1p(-u)
    return logits + sample_gumbel(logits.shape, like=logits, generator=generator)


def hard_with_soft_grad(y_soft: torch.Tensor, kind: str) -> torch.Tensor:
    """The hard sample behind a relaxed one (a bit: ``y > 1/2``; a category: one-hot argmax), with ``y_soft``'s gradient."""
    if kind == "bernoulli":
        y_hard = (y_soft > 0.5).to(y_soft.dtype)
    else:
        y_hard = torch.zeros_like(y_soft).scatter_(-1, y_soft.argmax(dim=-1, keepdim=True), 1.0)
    return y_hard - y_soft.detach() + y_soft


def gumbel_softmax(
    logits: torch.Tensor,
    tau: Temperature = 1.0,
    hard: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""A Gumbel-softmax (Concrete) sample $y = \mathrm{softmax}((\lambda + g)/\tau)$ over the last dim.

    The relaxation is the gradient's target: $\nabla_\lambda \mathbb E[f(y)]$ of the *relaxed*
    objective, which tends to the discrete one as $\tau \to 0$ while the variance grows like
    $1/\tau$. ``hard=True`` returns the one-hot $\arg\max$ (an exact categorical sample) with
    the gradient of the soft sample (ST-Gumbel-softmax). Finite for logits of any size:
    the noise is finite and softmax subtracts the maximum.
    """
    logits = check_tensor(logits, "logits")
    tau = check_tau(tau)
    generator = check_generator(generator)
    y_soft = torch.softmax(perturb(logits, "categorical", generator) / tau, dim=-1)
    return hard_with_soft_grad(y_soft, "categorical") if hard else y_soft


def binary_concrete(
    logits: torch.Tensor,
    tau: Temperature = 1.0,
    hard: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""The two-class Gumbel-softmax written with one logit per Bernoulli variable.

    $z = \lambda + \log u - \log(1 - u)$ is logistic, $b = \mathbb 1[z > 0] \sim
    \mathrm{Bernoulli}(\sigma(\lambda))$, and the relaxed sample is $\sigma(z/\tau)$.
    ``hard=True`` returns $b$ with the gradient of $\sigma(z/\tau)$.
    """
    logits = check_tensor(logits, "logits")
    tau = check_tau(tau)
    generator = check_generator(generator)
    soft = torch.sigmoid(perturb(logits, "bernoulli", generator) / tau)
    return hard_with_soft_grad(soft, "bernoulli") if hard else soft


# --------------------------------------------------------------------------- REBAR's conditional sample
def sample_z_b_ztilde(kind: str, lam: torch.Tensor, generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""$z$, the hard sample $b$ as $f$ takes it, the score $\nabla_\lambda\log p(b)$, and $\tilde z \sim p(z\mid b)$.

    Bernoulli ($z = \lambda + \operatorname{logit} u$, $b = \mathbb 1[z>0]$): given $b = 1$, $u$ is uniform on
    $(1-p, 1)$, which gives $\tilde z = \operatorname{softplus}(\lambda + \log v) - \log(1 - v)$;
    given $b = 0$ the mirror image, $\tilde z = -[\operatorname{softplus}(-\lambda + \log v) - \log(1 - v)]$.

    Categorical ($z_k = \lambda_k + g_k$, $\lambda$ normalised, $b = \arg\max z$): given $b$, the maximum
    $\tilde z_b = -\log(-\log v_b)$ is standard Gumbel and $\tilde z_k = -\log(-\log v_k\, e^{-\lambda_k} - \log v_b)$
    for $k \ne b$ (Tucker et al. 2017, appendix), computed with ``logaddexp``.
    """
    if kind == "bernoulli":
        z = perturb(lam, kind, generator)
        v = uniform(lam.shape, like=lam, generator=generator)
        b = (z.detach() > 0).to(lam.dtype)
        s = 2.0 * b - 1.0
        z_tilde = s * (F.softplus(s * lam + torch.log(v)) - torch.log1p(-v))
        score = b - torch.sigmoid(lam.detach())
        return z, b, score, z_tilde
    lam = torch.log_softmax(lam, dim=-1)
    z = perturb(lam, kind, generator)
    v = uniform(lam.shape, like=lam, generator=generator)
    index = z.detach().argmax(dim=-1, keepdim=True)
    onehot = torch.zeros_like(lam).scatter_(-1, index, 1.0)
    log_e = torch.log(-torch.log(v))  # log of the standard exponential -log v
    log_e_b = log_e.gather(-1, index)
    z_others = -torch.logaddexp(log_e - lam, log_e_b)
    z_tilde = torch.where(onehot.bool(), -log_e_b, z_others)
    score = onehot - torch.softmax(lam.detach(), dim=-1)
    b = onehot if kind == "onehot" else index.squeeze(-1)
    return z, b, score, z_tilde


# --------------------------------------------------------------------------- straight-through
class BernoulliStraightThrough(torch.autograd.Function):
    r"""$b = \mathbb 1[u < p]$ forward; $\partial b/\partial p := 1$ backward (the identity estimator)."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (u < probs).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad_b: torch.Tensor):
        return grad_b, None


class CategoricalStraightThrough(torch.autograd.Function):
    r"""One-hot sample of $\mathrm{Categorical}(p)$ forward; $\partial b/\partial p := I$ backward."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)

    @staticmethod
    def backward(ctx, grad_b: torch.Tensor):
        return grad_b, None


def straight_through(
    logits: torch.Tensor,
    *,
    dist: str = "bernoulli",
    method: str = "identity",
    tau: Temperature = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""An exact discrete sample with a straight-through gradient.

    ``dist="bernoulli"``: one variable per entry of ``logits`` ($p = \sigma(\lambda)$), returns $b \in \{0,1\}$.
    ``dist="categorical"``: classes along the last dim ($p = \mathrm{softmax}(\lambda)$), returns one-hot $b$.

    ``method="identity"`` (Bengio et al. 2013): backward treats $b$ as if it were $p$, so
    $\nabla_\lambda f \approx (\partial p/\partial\lambda)^\top f'(b)$. For a Bernoulli
    its expectation is $\mathbb E[f'(b)]\,p(1-p)$, while the true gradient is
    $(f(1) - f(0))\,p(1-p)$: biased unless $f$ is linear on $[0, 1]$.
    ``method="gumbel"``: backward differentiates the Gumbel-softmax / binary Concrete sample
    at temperature ``tau`` (ST-Gumbel-softmax, Jang et al. 2017).
    """
    logits = check_tensor(logits, "logits")
    generator = check_generator(generator)
    if dist not in ("bernoulli", "categorical"):
        raise ValueError(f"dist must be 'bernoulli' or 'categorical', got {dist!r}")
    if method == "gumbel":
        relax = binary_concrete if dist == "bernoulli" else gumbel_softmax
        return relax(logits, tau, hard=True, generator=generator)
    if method != "identity":
        raise ValueError(f"method must be 'identity' or 'gumbel', got {method!r}")
    if dist == "bernoulli":
        u = uniform(logits.shape, like=logits, generator=generator)
        return BernoulliStraightThrough.apply(torch.sigmoid(logits), u)
    index = gumbel_max(logits.detach(), generator=generator)
    return CategoricalStraightThrough.apply(torch.softmax(logits, dim=-1), index)


# --------------------------------------------------------------------------- permutations
def sinkhorn(log_alpha: torch.Tensor, n_iters: int = 20, tau: Temperature = 1.0) -> torch.Tensor:
    r"""The Sinkhorn operator $S(X/\tau)$, computed in log space, for square matrices in the last two dims.

    Starting from $\log A = X/\tau$, each iteration subtracts the row log-sum-exp, then the
    column log-sum-exp; $\exp$ of the result tends to a doubly-stochastic matrix
    (Sinkhorn 1964). After the last step columns sum to one exactly, rows approximately.
    As $\tau \to 0$, $S(X/\tau)$ tends to the permutation matrix that maximises
    $\langle P, X\rangle_F$ (Mena et al. 2018). Log space keeps it finite for any $\tau$.
    """
    log_alpha = check_tensor(log_alpha, "log_alpha")
    if log_alpha.dim() < 2 or log_alpha.shape[-1] != log_alpha.shape[-2]:
        raise ValueError(f"log_alpha must have square matrices in its last two dims, got shape {tuple(log_alpha.shape)}")
    check_count(n_iters, "n_iters")
    tau = check_tau(tau)
    log_p = log_alpha / tau
    for _ in range(n_iters):  # iterations are sequential by nature
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
    return log_p.exp()


def hungarian(scores: torch.Tensor) -> torch.Tensor:
    r"""Permutation matrices $\arg\max_P \langle P, X\rangle_F$ for each matrix in ``scores`` (Kuhn 1955).

    Runs ``scipy.optimize.linear_sum_assignment`` on the CPU and returns the permutation
    matrices on ``scores``' device and dtype (no gradient: it is piecewise constant).
    """
    from scipy.optimize import linear_sum_assignment

    scores = check_tensor(scores, "scores")
    if scores.dim() < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores must have square matrices in its last two dims, got shape {tuple(scores.shape)}")
    n = scores.shape[-1]
    flat = scores.detach().reshape(-1, n, n).cpu().double().numpy()
    out = torch.zeros(flat.shape, dtype=scores.dtype)
    for k, matrix in enumerate(flat):  # scipy solves one assignment problem per call
        rows, cols = linear_sum_assignment(matrix, maximize=True)
        out[k, torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
    return out.reshape(scores.shape).to(scores.device)


def gumbel_sinkhorn(
    log_alpha: torch.Tensor,
    tau: Temperature = 1.0,
    n_iters: int = 20,
    *,
    num_samples: Optional[int] = None,
    noise_factor: float = 1.0,
    hard: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Relaxed random permutations $S((X + \epsilon)/\tau)$, $\epsilon$ i.i.d. Gumbel (Mena et al. 2018).

    With ``num_samples`` a leading sample dimension is added. ``hard=True`` returns the
    Hungarian permutation of $X + \epsilon$ with the gradient of the soft matrix (straight-through).
    """
    log_alpha = check_tensor(log_alpha, "log_alpha")
    generator = check_generator(generator)
    shape = log_alpha.shape if num_samples is None else (num_samples, *log_alpha.shape)
    noisy = log_alpha + noise_factor * sample_gumbel(shape, like=log_alpha, generator=generator)
    soft = sinkhorn(noisy, n_iters=n_iters, tau=tau)
    if not hard:
        return soft
    return hungarian(noisy) - soft.detach() + soft


_ESTIMATORS_IN_RELAX = ("REBAR", "RELAX", "GumbelSoftmaxEstimator", "StraightThroughEstimator")


def __getattr__(name: str):
    # The estimators live above the samplers (gradlab.relax imports this module): resolved on use.
    if name in _ESTIMATORS_IN_RELAX:
        from . import relax

        return getattr(relax, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
