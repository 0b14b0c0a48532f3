r"""The score-function estimator (REINFORCE, likelihood ratio).

$$\nabla_\theta \mathbb E_{p_\theta}[f(x)] = \mathbb E_{p_\theta}\big[f(x)\,\nabla_\theta\log p_\theta(x)\big]
\quad\Rightarrow\quad \hat g_n = \big(f(x_n) - b_n\big)\,\nabla_\theta \log p_\theta(x_n).$$

Assumptions: $p_\theta$ has a differentiable ``log_prob``; $f$ is any black box
(never differentiated, may be discontinuous). Unbiased for every baseline of
:mod:`gradlab.control_variates` except ``"optimal"``. Cost per sample: one
evaluation of $f$ and a share of one batched backward pass through ``log_prob``.

**Vectorized scores.** The per-sample scores with respect to the distribution's own
parameters $\lambda$ come from ONE forward and ONE backward pass: the parameters are
repeated once per sample (``repeat_params``), so the gradient of
$\sum_n \log p(x_n;\lambda^{(n)})$ with respect to the copy $\lambda^{(n)}$ is
$\nabla_\lambda \log p(x_n)$. The chain rule to $\theta$ is one matmul with the
Jacobian $J = \partial\lambda/\partial\theta$. For a distribution whose parameters
gradlab cannot read, forward-mode AD gives the Jacobian of the vector of per-sample
log-probs with respect to $\theta$ (one pass per coordinate of $\theta$).

**Link with Chapter 3.** For $p_\theta = \mathcal N(\theta, \sigma^2 I)$ the score is
$(x - \theta)/\sigma^2 = z/\sigma$ with $x = \theta + \sigma z$, so with the constant
baseline $b = f(\theta)$ this estimator is exactly ES's ``"forward"`` method
(:func:`gradlab.es_grad`, same numbers for the same generator); ES's ``"antithetic"``
method is the average of the estimates at the coupled pair $z, -z$.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import distributions as D

from .control_variates import ScoreBatch, resolve_baseline
from .distributions import (
    Estimator,
    distribution_params,
    draw,
    evaluate_costs,
    parameter_jacobian,
    per_sample_param_grads,
    rebuild,
    repeat_params,
)

__all__ = ["ScoreFunction", "per_sample_scores", "check_log_prob"]


def check_log_prob(dist: D.Distribution) -> None:
    if type(dist).log_prob is D.Distribution.log_prob:
        raise ValueError(
            f"estimator='score' needs make_dist(theta) to have log_prob; {type(dist).__name__} has none"
        )


def per_sample_log_prob(dist: D.Distribution, x: torch.Tensor) -> torch.Tensor:
    r"""$\log p(x_n)$ summed over everything but the sample dim: shape (N,)."""
    return dist.log_prob(x).reshape(x.shape[0], -1).sum(1)


def log_prob_jacobian(make_dist: Callable, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, D) Jacobian of the per-sample log-probs w.r.t. theta by forward-mode AD.

    The fallback for distributions gradlab cannot rebuild from their parameters: one
    forward pass over all samples per coordinate of theta (a loop over coordinates,
    not samples; reverse mode would need N backward passes).
    """
    flat = theta.detach().reshape(-1)
    columns = []
    with torch.no_grad():
        for j in range(flat.numel()):
            with fwAD.dual_level():
                tangent = torch.zeros_like(flat)
                tangent[j] = 1.0
                dual = fwAD.make_dual(flat, tangent).reshape(theta.shape)
                out = per_sample_log_prob(make_dist(dual), x)
                columns.append(fwAD.unpack_dual(out).tangent)
    return torch.stack(columns, dim=1)


def per_sample_scores(
    make_dist: Callable, dist: D.Distribution, theta: torch.Tensor, x: torch.Tensor
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scores $\\nabla_\\theta \\log p_\\theta(x_n)$ as an (N, D) tensor, and the Jacobian J (or None)."""
    count = x.shape[0]
    params = distribution_params(dist)
    try:
        copies = repeat_params(params, count)
        with torch.enable_grad():
            log_prob = per_sample_log_prob(rebuild(dist, copies), x)
    except (TypeError, ValueError, RuntimeError):
        copies = None
    if not params or copies is None or not log_prob.requires_grad:
        return log_prob_jacobian(make_dist, theta, x), None
    jacobian = parameter_jacobian(make_dist, theta)
    return per_sample_param_grads(log_prob.sum(), copies) @ jacobian, jacobian


class ScoreFunction(Estimator):
    """The score-function estimator; registered as ``"score"``."""

    name = "score"
    uses_baseline = True

    def check(self, dist: D.Distribution) -> None:
        check_log_prob(dist)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        control = resolve_baseline(baseline)
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples)
        scores, jacobian = per_sample_scores(make_dist, dist, theta, x)
        if getattr(control, "needs_jacobian", False) and jacobian is None:
            raise ValueError(f"baseline {baseline!r} needs a distribution gradlab can read the parameters of")
        batch = ScoreBatch(values, scores, x, dist, f, jacobian)
        return (values.unsqueeze(1) - control(batch)) * scores + control.correction(batch)

    def surrogate(self, f, dist, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\bar f + L - \operatorname{stop}(L)$ with $L = \frac1N\sum_n \operatorname{stop}(f_n - b_n)\log p(x_n)$."""
        control = resolve_baseline(baseline)
        if control.per_coordinate:
            raise ValueError(f"surrogate_loss does not support baseline={baseline!r} (one value per coordinate)")
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples)
        batch = ScoreBatch(values, None, x, dist, f, None)
        weights = values - control(batch).squeeze(1)
        term = (weights * per_sample_log_prob(dist, x)).mean() + control.surrogate_correction(batch)
        return values.mean() + term - term.detach()
