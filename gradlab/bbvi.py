r"""Black-box variational inference with a mean-field Gaussian $q$.

$q_\lambda(z) = \prod_i \mathcal N(z_i;\ \mu_i, \sigma_i^2)$ with $\lambda = (\mu, \log\sigma)$, and the ELBO

$$
\begin{aligned}
\mathcal L(\lambda) &= \mathbb E_{q}[\log p(x, z) - \log q_\lambda(z)] \\
&= \mathbb E_{q}[\log p(x, z)] + \sum_i \log\sigma_i \\
&\quad + \tfrac D2 \log(2\pi e).
\end{aligned}
$$

``log_joint`` maps a batch ``z`` of shape ``(N, D)`` to $\log p(x, z)$, shape ``(N,)``
(for ``"score_rb"`` it may return ``(N, D)``: column $i$ the terms of $\log p$ that contain
$z_i$, its Markov blanket). :func:`elbo_grad` returns per-sample estimates of
$\nabla_\lambda\mathcal L$, shape ``(N, 2, D)`` (row 0: $\mu$, row 1: $\log\sigma$), with
$z = \mu + \sigma\varepsilon$:

| estimator | per-sample estimate (for $\mu$; $\log\sigma$ analogous) | needs |
|---|---|---|
| ``"score"`` | $\nabla_\lambda\log q(z)\,(\log p(z) - \log q(z))$ | $\log p$ values |
| ``"score_rb"`` | coordinate $i$: $h_i\,(\log p_i(z) - \log q_i(z_i)) - \hat a_i h_i$, $h_i = \nabla_{\lambda_i}\log q_i(z_i)$ | $\log p$ values |
| ``"reparam"`` | $\nabla_z \log p(z)$; $\log\sigma$: $\nabla_z\log p(z)\odot\sigma\varepsilon + 1$ | $\nabla_z\log p$ |
| ``"stl"`` | $\nabla_z \log p(z) + \varepsilon/\sigma$; $\log\sigma$: $(\cdot)\odot\sigma\varepsilon$ | $\nabla_z\log p$ |

``"score_rb"`` is Ranganath, Gerrish & Blei (2014): Rao-Blackwellised per coordinate
(each coordinate's score multiplies only its own terms) with the control variate $h_i$, whose
coefficient $\hat a_i = \sum_d \operatorname{Cov}(f_i^d, h_i^d) / \sum_d \operatorname{Var}(h_i^d)$ is
fitted on the *other* samples (leave-one-out), so the estimate stays unbiased.
``"stl"`` (Roeder, Wu & Duvenaud 2017) drops the score term $-\nabla_\lambda\log q_\lambda(z)|_{z}$ of the
total derivative: unbiased, and exactly zero when $q$ is the posterior.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional

import torch

from .checks import check_callable, check_choice, check_count, check_positive

__all__ = ["BBVI_ESTIMATORS", "elbo", "elbo_grad", "fit_bbvi", "logistic_regression_log_joint"]

BBVI_ESTIMATORS = ("score", "score_rb", "reparam", "stl")


def _check_params(mu: object, log_sigma: object) -> None:
    for value, name in [(mu, "mu"), (log_sigma, "log_sigma")]:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 1:
            raise TypeError(f"{name} must be a 1-d floating tensor (D,), got {value!r:.60}")
    if mu.shape != log_sigma.shape:
        raise ValueError(f"mu and log_sigma must have the same shape, got {tuple(mu.shape)} and {tuple(log_sigma.shape)}")


def _log_p(log_joint: Callable, z: torch.Tensor, per_coordinate: bool = False) -> torch.Tensor:
    values = log_joint(z)
    n, d = z.shape
    allowed = [(n,), (n, d)] if per_coordinate else [(n,)]
    if not isinstance(values, torch.Tensor) or tuple(values.shape) not in allowed:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"log_joint must map z of shape {(n, d)} to one of {allowed}, got {got}")
    if not torch.isfinite(values).all():
        raise ValueError("log_joint returned non-finite values")
    return values


def _noise(mu: torch.Tensor, num_samples: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn((num_samples, mu.shape[0]), generator=generator, dtype=mu.dtype, device=mu.device)


def elbo(log_joint: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor, log_sigma: torch.Tensor, *,
         num_samples: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Per-sample ELBO estimates $\log p(x, z_n) + H[q]$ (analytic Gaussian entropy), shape ``(N,)``."""
    check_callable(log_joint, "log_joint")
    _check_params(mu, log_sigma)
    num_samples = check_count(num_samples, "num_samples")
    with torch.no_grad():
        z = mu + log_sigma.exp() * _noise(mu, num_samples, generator)
        entropy = log_sigma.sum() + 0.5 * mu.shape[0] * math.log(2 * math.pi * math.e)
        return _log_p(log_joint, z) + entropy


def _loo_coefficient(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r"""$\hat a_{n,i}$ from the samples other than $n$: f, h of shape (N, 2, D) -> (N, D)."""
    n = f.shape[0]
    if n < 3:
        raise ValueError("estimator 'score_rb' needs num_samples >= 3 (leave-one-out control variates)")
    sf, sh, sfh, shh = f.sum(0), h.sum(0), (f * h).sum(0), (h * h).sum(0)
    mf, mh = (sf - f) / (n - 1), (sh - h) / (n - 1)
    cov = (sfh - f * h) - (n - 1) * mf * mh
    var = (shh - h * h) - (n - 1) * mh * mh
    return cov.sum(1) / var.sum(1).clamp_min(torch.finfo(f.dtype).tiny)


def elbo_grad(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    *,
    estimator: str,
    num_samples: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Per-sample estimates of $\nabla_{(\mu, \log\sigma)}$ ELBO, shape ``(num_samples, 2, D)``; mean: the estimate.

    Args:
        log_joint: batched $\log p(x, z)$: ``(N, D) -> (N,)`` (``"score_rb"``: or ``(N, D)`` per coordinate).
        mu, log_sigma: the variational parameters, 1-d tensors of length D (never modified).
        estimator: one of :data:`BBVI_ESTIMATORS` (see the module table).
        num_samples: $N$ draws of $z$ (``"score_rb"``: $N \ge 3$).
        generator: ``torch.Generator``; the same state gives the same numbers.
    """
    check_callable(log_joint, "log_joint")
    _check_params(mu, log_sigma)
    check_choice(estimator, "estimator", BBVI_ESTIMATORS)
    num_samples = check_count(num_samples, "num_samples")
    mu, log_sigma = mu.detach(), log_sigma.detach()
    sigma, eps = log_sigma.exp(), _noise(mu, num_samples, generator)
    z = mu + sigma * eps
    h = torch.stack([eps / sigma, eps**2 - 1], 1)  # scores of q: (N, 2, D)
    log_q = (-0.5 * eps**2 - log_sigma - 0.5 * math.log(2 * math.pi))  # per coordinate (N, D)
    if estimator == "score":
        with torch.no_grad():
            weight = _log_p(log_joint, z) - log_q.sum(1)
        return h * weight[:, None, None]
    if estimator == "score_rb":
        with torch.no_grad():
            log_p = _log_p(log_joint, z, per_coordinate=True)
            log_p = log_p[:, None] if log_p.dim() == 1 else log_p
            f = h * (log_p - log_q)[:, None, :]
        return f - _loo_coefficient(f, h)[:, None, :] * h
    with torch.enable_grad():
        leaf = z.clone().requires_grad_(True)
        (grad_z,) = torch.autograd.grad(_log_p(log_joint, leaf).sum(), leaf)
    if estimator == "reparam":
        return torch.stack([grad_z, grad_z * sigma * eps + 1], 1)
    path = grad_z + eps / sigma  # d/dz [log p(z) - log q_stop(z)]
    return torch.stack([path, path * sigma * eps], 1)


def fit_bbvi(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    estimator: str,
    num_steps: int,
    num_samples: int,
    lr: float = 0.05,
    seed: int = 0,
    eval_every: int = 10,
    num_eval: int = 256,
    dtype: torch.dtype = torch.float64,
    device: Optional[torch.device] = None,
    markov_blanket: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = False,
) -> Dict[str, object]:
    r"""Maximise the ELBO with Adam from $\mu = 0$, $\log\sigma = -1$.

    ``log_joint`` returns $\log p(x, z)$, shape (N,); ``markov_blanket`` (optional, ``"score_rb"`` only)
    returns its per-coordinate terms (N, D) and is then used for the gradient, ``log_joint`` for the ELBO.

    Every ``eval_every`` steps the ELBO is estimated on ``num_eval`` fixed draws (common random
    numbers, outside the clock). Returns ``{"mu", "log_sigma", "step", "elbo", "seconds",
    "evaluations"}``: ``seconds`` is the optimisation time so far, ``evaluations`` the number of
    evaluations of ``log_joint`` (draws) so far.
    """
    check_callable(log_joint, "log_joint")
    dim = check_count(dim, "dim")
    check_choice(estimator, "estimator", BBVI_ESTIMATORS)
    num_steps, num_samples = check_count(num_steps, "num_steps"), check_count(num_samples, "num_samples")
    eval_every, num_eval = check_count(eval_every, "eval_every"), check_count(num_eval, "num_eval")
    lr = check_positive(lr, "lr")
    if markov_blanket is not None:
        check_callable(markov_blanket, "markov_blanket")
        if estimator != "score_rb":
            raise ValueError(f"markov_blanket is used by estimator 'score_rb' only, got estimator={estimator!r}")
    gradient_fn = markov_blanket if markov_blanket is not None else log_joint
    generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    eval_generator = torch.Generator(device=device or "cpu").manual_seed(seed + 1)
    eval_eps = torch.randn((num_eval, dim), generator=eval_generator, dtype=dtype, device=device)
    mu = torch.zeros(dim, dtype=dtype, device=device, requires_grad=True)
    log_sigma = torch.full((dim,), -1.0, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_sigma], lr=lr)
    history: Dict[str, list] = {"step": [], "elbo": [], "seconds": [], "evaluations": []}
    seconds = 0.0
    entropy_const = 0.5 * dim * math.log(2 * math.pi * math.e)
    from tqdm import tqdm  # text bar, imported on first use (import gradlab loads no tqdm)
    for step in tqdm(range(num_steps + 1), desc=f"BBVI ({estimator})", disable=not progress, mininterval=5):
        if step % eval_every == 0 or step == num_steps:
            with torch.no_grad():
                value = _log_p(log_joint, mu + log_sigma.exp() * eval_eps).mean() + log_sigma.sum() + entropy_const
            history["step"].append(step)
            history["elbo"].append(float(value))
            history["seconds"].append(seconds)
            history["evaluations"].append(step * num_samples)
        if step == num_steps:
            continue  # the last step only evaluates (continue, not break: the bar ends at its total)
        start = time.perf_counter()
        grads = elbo_grad(gradient_fn, mu, log_sigma, estimator=estimator, num_samples=num_samples,
                          generator=generator).mean(0)
        optimizer.zero_grad()
        mu.grad, log_sigma.grad = -grads[0], -grads[1]  # Adam minimises the negative ELBO
        optimizer.step()
        seconds += time.perf_counter() - start
    return {"mu": mu.detach(), "log_sigma": log_sigma.detach(), **history}


def logistic_regression_log_joint(features: torch.Tensor, labels: torch.Tensor, *, prior_scale: float = 1.0,
                                  per_coordinate: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""$\log p(y, z) = \sum_j \log\sigma\big((2y_j - 1)\, x_j^\top z\big) + \sum_i \log\mathcal N(z_i; 0, s^2)$.

    ``features`` (M, D) (include a column of ones for an intercept), ``labels`` (M,) in {0, 1}.
    The returned function is batched over ``z`` (N, D); with ``per_coordinate=True`` it returns
    (N, D): column $i$ is the likelihood plus the prior of $z_i$ alone (the Markov blanket of $z_i$,
    for ``"score_rb"``).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise TypeError(f"features must be a 2-d tensor (M, D), got {features!r:.60}")
    if not isinstance(labels, torch.Tensor) or labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape ({features.shape[0]},)")
    scale = check_positive(prior_scale, "prior_scale")
    signs = (2 * labels.to(features.dtype) - 1)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        likelihood = torch.nn.functional.logsigmoid((z @ features.T) * signs).sum(1)
        prior = -0.5 * (z / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
        return likelihood[:, None] + prior if per_coordinate else likelihood + prior.sum(1)

    return log_joint
