r"""Importance sampling for score-function gradients (Chapter 5).

Draw from a proposal $q$ instead of $p_\lambda$ and reweight by $w = p_\lambda/q$:

$$\nabla_\lambda \mathbb E_{p_\lambda}[f] = \mathbb E_{q}\big[w(x)\, f(x)\, \nabla_\lambda \log p_\lambda(x)\big],
\qquad \hat g_n = w_n\,(f(x_n) - b)\, s_n, \quad x_n \sim q,$$

unbiased whenever $q > 0$ wherever $p_\lambda f s \ne 0$. The variance trades two effects: $q$ can
put more samples where $|f s|$ is large (the zero-variance ideal $q \propto p\,|f s_j|$, one per
coordinate), and heavy weights where $q$ is thinner than $p$ can make it infinite. For
$p = \mathcal N(\mu, \sigma^2)$, $q = \mathcal N(\mu, c^2\sigma^2)$ the second moment
$\mathbb E_p[w\,(f s)^2]$ is finite only for $c^2 > 1/2$.

``self_normalised=True`` divides by the sample mean of the weights instead of $1$,
$\hat g_n = \tilde w_n (f(x_n) - b) s_n$ with $\tilde w_n = w_n / \frac1N\sum_m w_m$: usable when $p$ is
known up to a constant, often of lower variance, **biased** by $O(1/N)$.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import distributions as D

from .checks import check_positive
from .control_variates import ScoreBatch, resolve_baseline
from .distributions import check_distribution, draw, evaluate_costs, per_sample_param_grads, rebuild, repeat_params
from .estimator import Estimate, Estimator
from .score import has_log_prob, per_sample_log_prob

__all__ = ["ImportanceSampledScore", "scaled_proposal"]

Proposal = Union[D.Distribution, Callable[[D.Distribution], D.Distribution]]


def scaled_proposal(factor: float) -> Callable[[D.Distribution], D.Distribution]:
    r"""A proposal for Gaussians: $q = \mathcal N(\mu, (c\sigma)^2)$ with $c$ = ``factor`` (same mean,
    scale times $c$; ``Independent`` kept). ``factor > 1`` widens: heavier tails than $p$, bounded weights."""
    factor = check_positive(factor, "factor")

    def proposal(dist: D.Distribution) -> D.Distribution:
        inner = dist.base_dist if isinstance(dist, D.Independent) else dist
        if type(inner) is not D.Normal:
            raise ValueError(f"scaled_proposal needs a Normal distribution, got {type(inner).__name__}")
        q = D.Normal(inner.loc.detach(), factor * inner.scale.detach())
        return D.Independent(q, dist.reinterpreted_batch_ndims) if isinstance(dist, D.Independent) else q

    return proposal


class ImportanceSampledScore(Estimator):
    r"""Score-function estimates from samples of a proposal ``q``, weighted by $p_\lambda / q$.

    ``proposal``: a distribution over the same sample shape, or a callable ``dist -> q`` (e.g.
    :func:`scaled_proposal`), treated as fixed (not differentiated). ``self_normalised``: divide by
    the mean weight (biased). Baselines: ``None``, a number, ``"rloo"`` or any baseline with one value
    per sample ($\mathbb E_q[w s] = 0$ keeps them unbiased). Not registered (it needs a proposal):
    pass the object, ``expectation_grad(..., estimator=ImportanceSampledScore(q))``. The costs it
    reports are $w_n f(x_n)$, whose mean estimates $\mathbb E_p[f]$.
    """

    name = "score_is"
    uses_baseline = True
    needs_f = "black box"
    cost = "1 evaluation of f per sample, one log_prob of p and of q, one batched backward pass"

    def __init__(self, proposal: Proposal, *, self_normalised: bool = False):
        if not (isinstance(proposal, D.Distribution) or callable(proposal)):
            raise TypeError(f"proposal must be a torch Distribution or a callable dist -> Distribution, got {type(proposal).__name__}")
        if not isinstance(self_normalised, bool):
            raise TypeError(f"self_normalised must be a bool, got {type(self_normalised).__name__}")
        self.proposal, self.self_normalised = proposal, self_normalised
        self.unbiased = not self_normalised

    def check(self, dist: D.Distribution) -> None:
        if not has_log_prob(dist):
            raise self.unsupported(dist, "a distribution with log_prob")

    def proposal_for(self, dist: D.Distribution) -> D.Distribution:
        q = self.proposal if isinstance(self.proposal, D.Distribution) else self.proposal(dist)
        q = check_distribution(q, "proposal")
        if q.batch_shape + q.event_shape != dist.batch_shape + dist.event_shape:
            raise ValueError(
                f"proposal must draw samples of shape {tuple(dist.batch_shape + dist.event_shape)} like the "
                f"distribution, got {tuple(q.batch_shape + q.event_shape)}"
            )
        return q

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        control = resolve_baseline(baseline)
        if control.per_coordinate or getattr(control, "needs_params", False):
            raise ValueError(f"baseline {type(control).__name__} is not supported with importance sampling")
        q = self.proposal_for(dist)
        x = draw(q, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples)
            log_q = per_sample_log_prob(q, x)
        copies = repeat_params(lam, num_samples)
        with torch.enable_grad():
            log_p = per_sample_log_prob(rebuild(dist, copies), x)
            scores = per_sample_param_grads(log_p.sum(), copies)
        weights = torch.exp(log_p.detach() - log_q).to(scores.dtype)
        if self.self_normalised:
            weights = weights / weights.mean()
        b, _ = control.terms(ScoreBatch(values, scores, x, dist, f))
        b = b.reshape(num_samples, 1)  # one baseline per sample (a baseline has the costs' shape)
        costs = values.to(scores.dtype)
        grads = (weights * costs).unsqueeze(1) * scores - (weights.unsqueeze(1) * b.to(scores.dtype)) * scores
        return Estimate(weights * costs, grads)
