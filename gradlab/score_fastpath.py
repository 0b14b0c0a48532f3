r"""Per-sample scores without per-call autograd set-up: closed forms and a cheap chain rule.

**Closed-form scores** $\nabla_\lambda \log p(x_n;\lambda)$ w.r.t. a distribution's own
parameters, for the common families (and their ``Independent`` products, any batch shape):

| family | parameter $\lambda$ | score |
|---|---|---|
| Normal | ``loc`` $\mu$, ``scale`` $\sigma$ | $z/\sigma$, $(z^2 - 1)/\sigma$ with $z = (x-\mu)/\sigma$ |
| Bernoulli | ``logits`` $\ell$ / ``probs`` $p$ | $x - p$ / $(x - p)/(p(1-p))$ |
| Categorical | ``logits`` / ``probs`` | $e_x - p$ / $e_x / p_x - 1$ |

(the Categorical forms are those of torch's own normalisation of ``logits`` and ``probs``;
``e_x`` is the one-hot vector of $x$). Any other family falls back to autograd through
``log_prob`` (:func:`autograd_scores`).

**Chain rule to** $\theta$: :func:`theta_chain`, the one chain rule of :mod:`gradlab.chain`
(identity, diagonal or dense, whichever is exact and cheapest) on these parameters.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import distributions as D

from . import chain
from .distributions import distribution_params, rebuild, repeat_params, unwrap_independent

__all__ = ["score_params", "has_closed_form", "closed_form_scores", "autograd_scores", "theta_chain", "flat_rows"]

Params = Dict[str, torch.Tensor]


def _built_from_logits(dist: D.Distribution) -> bool:
    # torch keeps the argument a Bernoulli/Categorical was built from in ``_param``.
    return "logits" in dist.__dict__ and getattr(dist, "_param", None) is dist.__dict__["logits"]


def score_params(dist: D.Distribution) -> Params:
    """The parameters the fast path differentiates: :func:`distribution_params`, except that a
    Bernoulli or Categorical built from ``logits`` is differentiated w.r.t. its ``logits``."""
    if isinstance(dist, D.Independent):
        return {f"base.{k}": v for k, v in score_params(dist.base_dist).items()}
    if type(dist) in (D.Bernoulli, D.Categorical) and _built_from_logits(dist):
        return {"logits": dist.logits}
    return distribution_params(dist)


def has_closed_form(dist: D.Distribution, params: Params) -> bool:
    """True when :func:`closed_form_scores` covers ``dist`` read in ``params``."""
    base = unwrap_independent(dist)
    names = [k.rsplit(".", 1)[-1] for k in params]
    if type(base) is D.Normal:
        return names == ["loc", "scale"]
    return type(base) in (D.Bernoulli, D.Categorical) and names in (["logits"], ["probs"])


def plain(v: torch.Tensor) -> torch.Tensor:
    """``v`` without its graph (``v`` itself when it has none: no new alias per call)."""
    return v.detach() if v.requires_grad else v


def closed_form_scores(dist: D.Distribution, x: torch.Tensor, params: Params) -> Optional[Params]:
    """Per-sample scores ``{name: (N, *param.shape)}`` in closed form, or None for other families."""
    base = unwrap_independent(dist)
    names = [k.rsplit(".", 1)[-1] for k in params]
    keys = list(params)
    x = x.detach() if x.requires_grad else x
    if type(base) is D.Normal and names == ["loc", "scale"]:
        loc, scale = plain(base.loc), plain(base.scale)
        z = (x - loc) / scale
        return {keys[0]: z / scale, keys[1]: (z * z - 1.0) / scale}
    if type(base) is D.Bernoulli and names in (["logits"], ["probs"]):
        p = plain(base.probs)
        if names == ["logits"]:
            return {keys[0]: x - p}
        return {keys[0]: (x - p) / (p * (1.0 - p))}
    if type(base) is D.Categorical and names in (["logits"], ["probs"]):
        p = plain(base.probs)
        onehot = torch.nn.functional.one_hot(x.long(), p.shape[-1]).to(p.dtype)
        if names == ["logits"]:
            return {keys[0]: onehot - p}
        return {keys[0]: onehot / p - 1.0}
    return None


def autograd_scores(dist: D.Distribution, x: torch.Tensor, params: Params) -> Optional[Params]:
    """Per-sample scores by ONE backward pass through ``log_prob`` with the parameters repeated per
    sample (:func:`gradlab.distributions.repeat_params`); None when ``dist`` cannot be rebuilt."""
    if not params:
        return None
    count = x.shape[0]
    try:
        copies = repeat_params(params, count)
        with torch.enable_grad():
            log_prob = rebuild(dist, copies).log_prob(x).reshape(count, -1).sum()
    except (TypeError, ValueError, RuntimeError):
        return None
    if not log_prob.requires_grad:
        return None
    grads = torch.autograd.grad(log_prob, list(copies.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(copies.items(), grads)}


def flat_rows(blocks: Params) -> torch.Tensor:
    """``{name: (N, ...)}`` -> ``(N, P)``: the per-sample rows of the flat parameter vector."""
    if len(blocks) == 1:
        (only,) = blocks.values()
        return only.reshape(only.shape[0], -1)
    return torch.cat([v.reshape(v.shape[0], -1) for v in blocks.values()], dim=1)


def theta_chain(make_dist: Callable, theta: torch.Tensor, names: List[str],
                dist: Optional[D.Distribution] = None):
    """The chain rule ``(N, P) -> (N, D)`` from the score parameters ``names`` of ``make_dist(theta)``
    to ``theta`` (:func:`gradlab.chain.theta_chain` with :func:`score_params`)."""
    return chain.theta_chain(make_dist, theta, score_params, dist, names=names)
