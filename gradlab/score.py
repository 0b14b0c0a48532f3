r"""The score-function estimator (REINFORCE, likelihood ratio).

$$\nabla_\theta \mathbb E_{p_\theta}[f(x)] = \mathbb E_{p_\theta}\big[f(x)\,\nabla_\theta\log p_\theta(x)\big]
\quad\Rightarrow\quad \hat g_n = \big(f(x_n) - b_n\big)\,\nabla_\theta \log p_\theta(x_n).$$

Assumptions: $p_\theta$ has a differentiable ``log_prob``; $f$ is any black box
(never differentiated, may be discontinuous). Unbiased for every baseline of
:mod:`gradlab.control_variates` except ``"optimal"``. Cost per sample: one
evaluation of $f$ and a share of one batched backward pass through ``log_prob``.

**Vectorized scores.** The per-sample scores with respect to the distribution's own
parameters $\lambda$ are closed forms for Normal, Bernoulli and Categorical (and their
``Independent`` products; :mod:`gradlab.score_fastpath`); for other families they come
from ONE forward and ONE backward pass with the parameters repeated once per sample. The
baseline is applied on $\lambda$ (a per-coordinate one, ``"optimal"``, per coordinate of
$\lambda$) and the chain rule to $\theta$ comes last, in the base class of the one protocol
(:mod:`gradlab.estimator`, :mod:`gradlab.chain`: $\hat g_\theta = J^\top \hat g_\lambda$, a product with
$\operatorname{diag}J$ when ``make_dist`` is elementwise in $\theta$).
:func:`score_param_grads` is the hook's body, usable on its own. For a distribution whose parameters gradlab
cannot read, forward-mode AD gives the Jacobian of the per-sample log-probs with respect
to $\theta$ (one pass per coordinate of $\theta$).

**Independent items.** ``f`` may return costs of shape ``(N, B)``, one per sample and item
of a distribution batched over ``B`` items (``batch_shape[0] == B``), each cost depending on
its own item only; then $\hat g_n = \sum_i (f_{n,i} - b_{n,i})\nabla\log p(x_{n,i})$ with
per-item baselines (:mod:`gradlab.control_variates`), and :meth:`ScoreFunction.surrogate`'s
value is $\frac1N\sum_n\sum_i f_{n,i}$.

**Link with Chapter 3.** For $p_\theta = \mathcal N(\theta, \sigma^2 I)$ the score is
$(x - \theta)/\sigma^2 = z/\sigma$ with $x = \theta + \sigma z$, so with the constant
baseline $b = f(\theta)$ this estimator is exactly ES's ``"forward"`` method
(:func:`gradlab.es_grad`, same numbers for the same generator); ES's ``"antithetic"``
method is the average of the estimates at the coupled pair $z, -z$.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.autograd.forward_ad as fwAD
from torch import distributions as D

from .control_variates import Baseline, ScoreBatch, resolve_baseline
from .distributions import draw, evaluate_costs, item_count, rebuild
from .estimator import Estimate, Estimator, mean_cost, register_estimator
from .score_fastpath import (
    autograd_scores,
    closed_form_scores,
    flat_rows,
    has_closed_form,
    score_params,
    theta_chain,
)

__all__ = [
    "ScoreFunction",
    "ScoreEstimate",
    "score_param_grads",
    "weighted_scores",
    "per_sample_scores",
    "per_sample_log_prob",
    "log_prob_jacobian",
    "check_log_prob",
]


def has_log_prob(dist: D.Distribution) -> bool:
    return type(dist).log_prob is not D.Distribution.log_prob


def check_log_prob(dist: D.Distribution) -> None:
    """Deprecated: :meth:`ScoreFunction.check` raises :class:`~gradlab.estimator.UnsupportedDistribution`."""
    ScoreFunction().check(dist)


def per_sample_log_prob(dist: D.Distribution, x: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    r"""$\log p(x_n)$ summed over everything but the sample dim: shape (N,), or (N, B) per item."""
    log_prob = dist.log_prob(x)
    if per_item:
        return log_prob.reshape(x.shape[0], dist.batch_shape[0], -1).sum(-1)
    return log_prob.reshape(x.shape[0], -1).sum(1)


def log_prob_jacobian(make_dist: Callable, theta: torch.Tensor, x: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    """(N, D) Jacobian of the per-sample log-probs w.r.t. theta by forward-mode AD ((N, B, D) per item).

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
                out = per_sample_log_prob(make_dist(dual), x, per_item)
                columns.append(fwAD.unpack_dual(out).tangent)
    return torch.stack(columns, dim=-1)


def param_scores(dist: D.Distribution, x: torch.Tensor, params: dict):
    """Per-sample scores w.r.t. ``params`` (closed form, else autograd), or None."""
    scores = closed_form_scores(dist, x, params)
    return autograd_scores(dist, x, params) if scores is None else scores


def item_rows(blocks: dict, items: int) -> torch.Tensor:
    """``{name: (N, B, ...)}`` -> ``(N, B, Q)``: each item's own parameter coordinates."""
    if len(blocks) == 1:
        (only,) = blocks.values()
        return only.reshape(only.shape[0], items, -1)
    return torch.cat([v.reshape(v.shape[0], items, -1) for v in blocks.values()], dim=-1)


def flat_from_items(rows: torch.Tensor, params: dict) -> torch.Tensor:
    """Inverse layout of :func:`item_rows`: ``(N, B, Q)`` -> ``(N, P)`` in the flat parameter order."""
    if len(params) == 1:
        return rows.reshape(rows.shape[0], -1)
    sizes = [v.numel() // rows.shape[1] for v in params.values()]
    return torch.cat([b.reshape(rows.shape[0], -1) for b in rows.split(sizes, dim=-1)], dim=1)


def weighted_scores(control: Baseline, batch: ScoreBatch) -> torch.Tensor:
    r"""$(f_n - b_n) s_n$ (per item: $\sum_i (f_{n,i} - b_{n,i}) s_{n,i}$) plus the correction, per sample.

    ``batch.scores`` is ``(N, Q)`` or ``(N, B, Q)`` (per item); the result is ``(N, Q)``, or the
    flat parameter rows ``(N, P)`` per item (``batch.params`` gives the layout).
    """
    scores = batch.scores
    if control.per_coordinate:
        b, correction = control.terms(batch)
        grads = (batch.values.detach().unsqueeze(-1) - b) * scores
    else:
        weights, correction = control.centred(batch)
        if batch.owns_scores and not scores.requires_grad:
            grads = scores.mul_(weights.unsqueeze(-1))  # fresh scores of this batch: reuse their memory
        else:
            grads = weights.unsqueeze(-1) * scores
    if batch.per_item:
        grads = flat_from_items(grads, batch.params)
    return grads if isinstance(correction, float) and correction == 0.0 else grads + correction


class ScoreEstimate(NamedTuple):
    costs: torch.Tensor  # (N,) or (N, B)
    grads: torch.Tensor  # (N, P): per-sample estimates w.r.t. the flat parameters


def score_param_grads(
    f: Callable,
    dist: D.Distribution,
    *,
    num_samples: int,
    baseline: object = None,
    generator: Optional[torch.Generator] = None,
    params: Optional[dict] = None,
) -> ScoreEstimate:
    r"""Per-sample score-function estimates w.r.t. the distribution's own parameters $\lambda$.

    ``params``: the parametrisation (default :func:`gradlab.score_fastpath.score_params`); a
    per-coordinate baseline is fitted per coordinate of $\lambda$ (per item and coordinate with
    per-item costs). The body of :meth:`ScoreFunction.param_grads`.
    """
    control = resolve_baseline(baseline)
    params = score_params(dist) if params is None else params
    x = draw(dist, (num_samples,), generator=generator)
    with torch.no_grad():
        values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        scores = closed_form_scores(dist, x, params)
    if scores is None:
        scores = autograd_scores(dist, x, params)
    if scores is None:
        raise ValueError(f"score_param_grads cannot read the parameters of {type(dist).__name__}")
    plain = {k: v.detach() if v.requires_grad else v for k, v in params.items()}
    batch = ScoreBatch(values, None, x, dist, f, plain, owns_scores=True)
    batch.scores = item_rows(scores, values.shape[1]) if batch.per_item else flat_rows(scores)
    return ScoreEstimate(values, weighted_scores(control, batch))


def per_sample_scores(make_dist: Callable, dist: D.Distribution, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scores $\\nabla_\\theta \\log p_\\theta(x_n)$ as an (N, D) tensor."""
    params = score_params(dist)
    scores = param_scores(dist, x, params)
    if scores is None:
        return log_prob_jacobian(make_dist, theta, x)
    return theta_chain(make_dist, theta, list(params), dist)(flat_rows(scores))


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
    cost = "1 evaluation of f per sample; closed-form scores (else one batched backward pass through log_prob)"

    def check(self, dist: D.Distribution) -> None:
        if not has_log_prob(dist):
            raise self.unsupported(dist, "a distribution with log_prob")

    def params(self, dist: D.Distribution) -> dict:
        """:func:`~gradlab.score_fastpath.score_params`: a Bernoulli/Categorical built from logits is read in its logits."""
        return score_params(dist)

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        costs, grads = score_param_grads(f, dist, num_samples=num_samples, baseline=baseline,
                                         generator=generator, params=lam)
        return Estimate(costs, grads)

    def unreadable_grads(self, f, make_dist, theta, dist, *, num_samples, baseline, generator) -> Estimate:
        """Parameters gradlab cannot read: scores w.r.t. theta by forward-mode AD."""
        control = resolve_baseline(baseline)
        if control.needs_params:
            raise ValueError(f"baseline {baseline!r} needs a distribution gradlab can read the parameters of")
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        rows = log_prob_jacobian(make_dist, theta, x, per_item=values.dim() == 2)
        b, correction = control.terms(ScoreBatch(values, rows, x, dist, f, None))
        weights = values.unsqueeze(-1) - b if control.per_coordinate else (values - b).unsqueeze(-1)
        grads = weights * rows
        grads = grads.sum(1) if values.dim() == 2 else grads
        return Estimate(values, grads if isinstance(correction, float) and correction == 0.0 else grads + correction)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        """Deprecated: the hook of the protocol before :mod:`gradlab.estimator` (the labs list it); (N, D)."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
        ).grads.reshape(num_samples, -1)

    def surrogate(self, f, dist, *, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\bar f + L - \operatorname{stop}(L)$ with $L = \lambda\cdot\operatorname{stop}(\bar g_\lambda)$.

        With closed-form scores (Normal, Bernoulli, Categorical and their products) or a baseline with
        a correction or one value per coordinate: the generic surrogate of the base class over the
        closed-form estimates of :meth:`param_grads` (one backward pass through ``make_dist`` only).
        Otherwise $L = \frac1N\sum_n \operatorname{stop}(f_n - b_n)\log p(x_n)$ (per item: $\sum_i$ over the
        items of both $f$ and $L$): one backward pass through ``log_prob``.
        """
        control = resolve_baseline(baseline)
        params = score_params(dist)
        if has_closed_form(dist, params):
            return self.closed_form_surrogate(f, dist, params, num_samples=num_samples, baseline=control,
                                              generator=generator)
        if control.per_coordinate or control.needs_params:
            return super().surrogate(f, dist, num_samples=num_samples, baseline=baseline, generator=generator)
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        per_item = values.dim() == 2
        detached = {k: v.detach() for k, v in params.items()}
        b, extra = control.surrogate_terms(ScoreBatch(values, None, x, dist, f, detached))
        weights = (values - b).detach()
        term = (weights * per_sample_log_prob(dist, x, per_item)).reshape(num_samples, -1).sum(1).mean() + extra
        return mean_cost(values).to(term.dtype) + term - term.detach()


    def closed_form_surrogate(self, f, dist, params, *, num_samples, baseline, generator) -> torch.Tensor:
        r"""The base class's surrogate $\bar f + \lambda\cdot\operatorname{stop}(\bar g_\lambda) - \operatorname{stop}(\cdot)$
        over closed-form scores, in as few steps: the parameters read once, one product for the term."""
        detached = {k: v.detach() for k, v in params.items()}
        try:
            plain = rebuild(dist, detached)
        except (TypeError, ValueError):
            plain = dist
        flat = flat_params(params)
        x = draw(plain, (num_samples,), generator=generator)
        with torch.no_grad():
            values = evaluate_costs(f, x, num_samples, items=item_count(plain))
            scores = closed_form_scores(plain, x, detached)
        if values.dim() == 2 or baseline.per_coordinate:  # per item / per coordinate: the per-sample rows
            batch = ScoreBatch(values, None, x, plain, f, detached, owns_scores=True)
            batch.scores = item_rows(scores, values.shape[1]) if batch.per_item else flat_rows(scores)
            mean = weighted_scores(baseline, batch).mean(0)
        else:  # the mean estimate as one product: (f - b) . S / N (+ the correction), no per-sample rows
            batch = ScoreBatch(values, flat_rows(scores), x, plain, f, detached)
            weights, correction = baseline.centred(batch)
            mean = weights.to(batch.scores.dtype) @ batch.scores / num_samples
            mean = mean if isinstance(correction, float) and correction == 0.0 else mean + correction
        term = torch.dot(flat, mean.to(flat.dtype))
        return term + (mean_cost(values).to(term.dtype) - term.detach())


def flat_params(params: dict) -> torch.Tensor:
    """The flat parameter vector (a view when there is one parameter)."""
    if len(params) == 1:
        return next(iter(params.values())).reshape(-1)
    return torch.cat([v.reshape(-1) for v in params.values()])


register_estimator("score", ScoreFunction())
