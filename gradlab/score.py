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

from typing import Callable

import torch
import torch.autograd.forward_ad as fwAD
from torch import distributions as D

from .control_variates import ScoreBatch, resolve_baseline
from .distributions import (
    distribution_params,
    draw,
    evaluate_costs,
    item_count,
    per_sample_param_grads,
    rebuild,
    repeat_params,
)
from .estimator import Estimate, Estimator, chain_rule, mean_cost, register_estimator

__all__ = ["ScoreFunction", "per_sample_scores", "per_sample_log_prob", "check_log_prob"]


def has_log_prob(dist: D.Distribution) -> bool:
    return type(dist).log_prob is not D.Distribution.log_prob


def check_log_prob(dist: D.Distribution) -> None:
    """Deprecated: :meth:`ScoreFunction.check` raises :class:`~gradlab.estimator.UnsupportedDistribution`."""
    ScoreFunction().check(dist)


def per_sample_log_prob(dist: D.Distribution, x: torch.Tensor, items: bool = False) -> torch.Tensor:
    r"""$\log p(x_n)$ summed over everything but the sample dim: (N,); per item (dim 1 kept): (N, B)."""
    log_prob = dist.log_prob(x)
    if items:
        return log_prob.reshape(*log_prob.shape[:2], -1).sum(2)
    return log_prob.reshape(x.shape[0], -1).sum(1)


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


def per_sample_scores(make_dist: Callable, dist: D.Distribution, theta: torch.Tensor, x: torch.Tensor):
    r"""Scores $\nabla_\theta \log p_\theta(x_n)$ as an (N, D) tensor, and None (kept for the labs' references).

    One forward and one backward pass over per-sample copies of the parameters, then the
    chain rule of :mod:`gradlab.estimator`; forward-mode AD for distributions whose
    parameters gradlab cannot read.
    """
    lam = {k: v.detach() for k, v in distribution_params(dist).items()}
    if not lam:
        return log_prob_jacobian(make_dist, theta, x), None
    copies = repeat_params(lam, x.shape[0])
    with torch.enable_grad():
        scores = per_sample_param_grads(per_sample_log_prob(rebuild(dist, copies), x).sum(), copies)
        leaf = theta.detach().requires_grad_(True)
        return chain_rule(distribution_params(make_dist(leaf)), leaf, scores), None


class ScoreFunction(Estimator):
    r"""The score-function estimator; registered as ``"score"``.

    Baselines act on the costs; a per-coordinate baseline (``"optimal"``) acts per
    coordinate of the distribution's parameters $\lambda$. With per-item costs ``(N, B)``
    each item's score is weighted by its own cost (and per-item baseline).
    """

    name = "score"
    uses_baseline = True
    unbiased = True  # except with baseline="optimal" (fitted on the same batch)
    needs_f = "black box"
    cost = "1 evaluation of f per sample and one batched backward pass through log_prob"

    def check(self, dist: D.Distribution) -> None:
        if not has_log_prob(dist):
            raise self.unsupported(dist, "a distribution with log_prob")

    def weights_and_correction(self, control, values, x, dist, f, scores):
        """Baseline-corrected costs (N, 1 | P) or (N, B) and the correction added to every sample."""
        per_item = values.dim() == 2
        if per_item and (control.per_coordinate or getattr(control, "needs_jacobian", False)):
            raise ValueError(f"baseline {type(control).__name__} does not support per-item costs (N, B)")
        b, correction = control.fit(ScoreBatch(values, scores, x, dist, f))
        weights = values - b if per_item else values.unsqueeze(1) - b
        return weights, correction

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        control = resolve_baseline(baseline)
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        copies = repeat_params(lam, num_samples)
        per_item = values.dim() == 2
        with torch.enable_grad():
            log_prob = per_sample_log_prob(rebuild(dist, copies), x, items=per_item)
        if per_item:
            weights, correction = self.weights_and_correction(control, values, x, dist, f, None)
            grads = per_sample_param_grads((weights.detach() * log_prob).sum(), copies)
        else:
            scores = per_sample_param_grads(log_prob.sum(), copies)
            weights, correction = self.weights_and_correction(control, values, x, dist, f, scores)
            grads = weights * scores
        return Estimate(values, grads + correction)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        """Deprecated: the hook of the protocol before :mod:`gradlab.estimator` (the labs list it); (N, D)."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
        ).grads.reshape(num_samples, -1)

    def unreadable_grads(self, f, make_dist, theta, dist, *, num_samples, baseline, generator) -> Estimate:
        control = resolve_baseline(baseline)
        if control.per_coordinate or getattr(control, "needs_jacobian", False):
            raise ValueError(f"baseline {baseline!r} needs a distribution gradlab can read the parameters of")
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples)
        scores = log_prob_jacobian(make_dist, theta, x)
        weights, _ = self.weights_and_correction(control, values, x, dist, f, scores)
        return Estimate(values, weights * scores)

    def surrogate(self, f, dist, *, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\bar f + L - \operatorname{stop}(L)$, $L = \frac1N\sum_n \operatorname{stop}(f_n - b_n)\log p(x_n)$.

        (Baselines with a correction term or one value per coordinate use the generic surrogate.)
        """
        control = resolve_baseline(baseline)
        if control.per_coordinate or getattr(control, "needs_jacobian", False):
            return super().surrogate(f, dist, num_samples=num_samples, baseline=baseline, generator=generator)
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        weights, _ = self.weights_and_correction(control, values, x, dist, f, None)
        per_item = values.dim() == 2
        log_prob = per_sample_log_prob(dist, x, items=per_item)
        weights = weights.detach() if per_item else weights.detach().squeeze(1)
        term = (weights * log_prob).sum() / num_samples
        return mean_cost(values).to(term.dtype) + term - term.detach()


register_estimator("score", ScoreFunction())
