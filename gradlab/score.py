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
baseline is applied on $\lambda$ and the chain rule to $\theta$ comes last
($\hat g_\theta = J^\top \hat g_\lambda$, a product with $\operatorname{diag}J$ when
``make_dist`` is elementwise in $\theta$). For a distribution whose parameters gradlab
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

from .checks import check_finite
from .control_variates import Baseline, ScoreBatch, resolve_baseline
from .distributions import Estimator, draw
from .score_fastpath import autograd_scores, closed_form_scores, flat_rows, score_params, theta_chain

__all__ = [
    "ScoreFunction",
    "ScoreEstimate",
    "score_param_grads",
    "score_costs",
    "weighted_scores",
    "per_sample_scores",
    "log_prob_jacobian",
    "check_log_prob",
]


def check_log_prob(dist: D.Distribution) -> None:
    if type(dist).log_prob is D.Distribution.log_prob:
        raise ValueError(
            f"estimator='score' needs make_dist(theta) to have log_prob; {type(dist).__name__} has none"
        )


def _items(dist: D.Distribution) -> Optional[int]:
    return dist.batch_shape[0] if len(dist.batch_shape) else None


def score_costs(f: Callable, x: torch.Tensor, num_samples: int, dist: D.Distribution) -> torch.Tensor:
    """``f(x)`` checked: finite, shape ``(num_samples,)`` or ``(num_samples, B)`` with ``B = dist.batch_shape[0]``."""
    values = f(x)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"f must return a tensor of shape ({num_samples},), got {type(values).__name__}")
    items = _items(dist)
    if values.shape != (num_samples,) and not (items is not None and values.shape == (num_samples, items)):
        per_item = f" or ({num_samples}, {items}) (one cost per item)" if items is not None else ""
        raise ValueError(
            f"f must map a batch of {num_samples} samples (shape {tuple(x.shape)}) to costs of shape "
            f"({num_samples},){per_item}, got shape {tuple(values.shape)}; wrap a function of one "
            "sample with gradlab.per_sample(f)"
        )
    check_finite(values.detach(), "f", where="samples")
    return values


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


def _item_rows(blocks: dict, items: int) -> torch.Tensor:
    """``{name: (N, B, ...)}`` -> ``(N, B, Q)``: each item's own parameter coordinates."""
    if len(blocks) == 1:
        (only,) = blocks.values()
        return only.reshape(only.shape[0], items, -1)
    return torch.cat([v.reshape(v.shape[0], items, -1) for v in blocks.values()], dim=-1)


def _flat_from_items(rows: torch.Tensor, params: dict) -> torch.Tensor:
    """Inverse layout of :func:`_item_rows`: ``(N, B, Q)`` -> ``(N, P)`` in the flat parameter order."""
    if len(params) == 1:
        return rows.reshape(rows.shape[0], -1)
    sizes = [v.numel() // rows.shape[1] for v in params.values()]
    return torch.cat([b.reshape(rows.shape[0], -1) for b in rows.split(sizes, dim=-1)], dim=1)


def weighted_scores(control: Baseline, batch: ScoreBatch) -> torch.Tensor:
    r"""$(f_n - b_n) s_n$ (per item: $\sum_i (f_{n,i} - b_{n,i}) s_{n,i}$) plus the correction, per sample.

    ``batch.scores`` is ``(N, Q)`` or ``(N, B, Q)`` (per item); the result is ``(N, Q)``, or the
    flat parameter rows ``(N, P)`` per item (``batch.params`` gives the layout).
    """
    b, correction = control.terms(batch)
    values = batch.values.detach()
    scores = batch.scores
    if control.per_coordinate:
        grads = (values.unsqueeze(-1) - b) * scores
    elif batch.owns_scores and not scores.requires_grad:
        grads = scores.mul_((values - b).unsqueeze(-1))  # fresh scores of this batch: reuse their memory
    else:
        grads = (values - b).unsqueeze(-1) * scores
    if batch.per_item:
        grads = _flat_from_items(grads, batch.params)
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
    coordinates: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> ScoreEstimate:
    r"""Per-sample score-function estimates w.r.t. the distribution's own parameters $\lambda$.

    ``params``: the parametrisation (default :func:`gradlab.score_fastpath.score_params`).
    ``coordinates``: optional map of ``(N, P)`` rows to other coordinates (e.g. the chain rule
    to $\theta$); a per-coordinate baseline with joint costs is then fitted, and the result
    returned, in those coordinates (without it, per-coordinate baselines work on $\lambda$).
    """
    control = resolve_baseline(baseline)
    params = score_params(dist) if params is None else params
    x = draw(dist, (num_samples,), generator=generator)
    with torch.no_grad():
        values = score_costs(f, x, num_samples, dist)
    scores = param_scores(dist, x, params)
    if scores is None:
        raise ValueError(f"score_param_grads cannot read the parameters of {type(dist).__name__}")
    grads, _ = _param_estimate(control, ScoreBatch(values, None, x, dist, f, None), scores, params, coordinates)
    return ScoreEstimate(values, grads)


def _param_estimate(control, batch, scores, params, coordinates):
    """Weighted scores on the flat parameters, or in ``coordinates`` for a joint per-coordinate baseline.

    Returns ``(grads, in_coordinates)``. ``batch`` carries the costs and samples; its scores are filled in.
    """
    batch.params = {k: v.detach() for k, v in params.items()}
    if batch.per_item:
        batch.scores, batch.owns_scores = _item_rows(scores, batch.values.shape[1]), True
        return weighted_scores(control, batch), False
    rows = flat_rows(scores)
    if control.per_coordinate and coordinates is not None:  # the joint fit per coordinate of theta
        batch.scores = coordinates(rows)
        return weighted_scores(control, batch), True
    batch.scores, batch.owns_scores = rows, True
    return weighted_scores(control, batch), False


def per_sample_scores(make_dist: Callable, dist: D.Distribution, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scores $\\nabla_\\theta \\log p_\\theta(x_n)$ as an (N, D) tensor."""
    params = score_params(dist)
    scores = param_scores(dist, x, params)
    if scores is None:
        return log_prob_jacobian(make_dist, theta, x)
    return theta_chain(make_dist, theta, list(params))(flat_rows(scores))


class ScoreFunction(Estimator):
    """The score-function estimator; registered as ``"score"``."""

    name = "score"
    uses_baseline = True

    def check(self, dist: D.Distribution) -> None:
        check_log_prob(dist)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        control = resolve_baseline(baseline)
        params = score_params(dist)
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = score_costs(f, x, num_samples, dist)
        scores = param_scores(dist, x, params)
        if scores is None:  # parameters gradlab cannot read: scores w.r.t. theta by forward-mode AD
            if control.needs_params:
                raise ValueError(f"baseline {baseline!r} needs a distribution gradlab can read the parameters of")
            rows = log_prob_jacobian(make_dist, theta, x, per_item=values.dim() == 2)
            batch = ScoreBatch(values, rows, x, dist, f, None)
            b, correction = control.terms(batch)
            weights = values.unsqueeze(-1) - b if control.per_coordinate else (values - b).unsqueeze(-1)
            grads = weights * rows
            grads = grads.sum(1) if values.dim() == 2 else grads
            return grads if isinstance(correction, float) and correction == 0.0 else grads + correction
        chain = theta_chain(make_dist, theta, list(params), dist)
        batch = ScoreBatch(values, None, x, dist, f, None)
        grads, in_theta = _param_estimate(control, batch, scores, params, chain)
        return grads if in_theta else chain(grads)

    def surrogate(self, f, dist, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\bar f + L - \operatorname{stop}(L)$ with $L = \frac1N\sum_n \operatorname{stop}(f_n - b_n)\log p(x_n)$
        (per item: $\sum_i$ over the items of both $f$ and $L$)."""
        control = resolve_baseline(baseline)
        if control.per_coordinate:
            raise ValueError(f"surrogate_loss does not support baseline={baseline!r} (one value per coordinate)")
        x = draw(dist, (num_samples,), generator=generator)
        with torch.no_grad():
            values = score_costs(f, x, num_samples, dist)
        per_item = values.dim() == 2
        params = {k: v.detach() for k, v in score_params(dist).items()}
        b, extra = control.surrogate_terms(ScoreBatch(values, None, x, dist, f, params))
        weights = (values - b).detach()
        term = (weights * per_sample_log_prob(dist, x, per_item)).reshape(num_samples, -1).sum(1).mean() + extra
        return values.reshape(num_samples, -1).sum(1).mean() + term - term.detach()
