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

**Chain rule to** $\theta$. $\hat g_\theta = J^\top \hat g_\lambda$ with $J = \partial\lambda/\partial\theta$.
:func:`theta_chain` looks at ``make_dist`` once per call: a parameter that *is* ``theta`` has
$J = I$; one with as many entries as ``theta`` is probed with two vector-Jacobian products
($J^\top r_1$, $J^\top r_2$): when $J^\top r_2 = (J^\top r_1 / r_1)\odot r_2$ to round-off, $J$ is
diagonal (an elementwise function such as ``sigmoid``) and the chain rule is a product
$\hat g \odot \operatorname{diag} J$, with no dense Jacobian. For a Categorical's ``logits``
(normalised by torch: $\lambda = \ell - \operatorname{logsumexp}\ell$, so $J$ is never diagonal) the
probes are zero-sum per row, the subspace the scores live in after the exact projection
$h = g - p\,\mathbf 1^\top g$. Every other ``make_dist`` gets the exact dense chain rule: one
batched vector-Jacobian product (over the $N$ rows, or over the $P$ parameters when $P < N$).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import distributions as D

from .distributions import distribution_params, rebuild, repeat_params, unwrap_independent

__all__ = ["score_params", "closed_form_scores", "autograd_scores", "theta_chain", "flat_rows"]

Params = Dict[str, torch.Tensor]
_IDENTITY = object()  # marks a parameter that is theta itself (J = I)
_ROW_BY_ROW = 8  # at most this many parameters: plain backward passes beat one vmapped one


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


def closed_form_scores(dist: D.Distribution, x: torch.Tensor, params: Params) -> Optional[Params]:
    """Per-sample scores ``{name: (N, *param.shape)}`` in closed form, or None for other families."""
    base = unwrap_independent(dist)
    names = [k.rsplit(".", 1)[-1] for k in params]
    keys = list(params)
    x = x.detach()
    if type(base) is D.Normal and names == ["loc", "scale"]:
        loc, scale = base.loc.detach(), base.scale.detach()
        z = (x - loc) / scale
        return {keys[0]: z / scale, keys[1]: (z * z - 1.0) / scale}
    if type(base) is D.Bernoulli and names in (["logits"], ["probs"]):
        p = base.probs.detach()
        if names == ["logits"]:
            return {keys[0]: x - p}
        return {keys[0]: (x - p) / (p * (1.0 - p))}
    if type(base) is D.Categorical and names in (["logits"], ["probs"]):
        p = base.probs.detach()
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


def _probe_vectors(v: torch.Tensor, zero_sum: bool):
    """Two probes shaped like ``v``: ``r1`` (no zero entry) and a fixed pseudo-random ``r2``."""
    gen = torch.Generator(device=v.device).manual_seed(0)
    r2 = 0.5 + torch.rand(v.shape, generator=gen, dtype=v.dtype, device=v.device)
    r1 = torch.ones_like(v)
    if zero_sum:  # rows (1, ..., 1, -(K - 1)) and r2 centred: both in the zero-sum subspace
        r1[..., -1] = 1.0 - v.shape[-1]
        r2 = r2 - r2.mean(-1, keepdim=True)
    return r1, r2


def _diagonal(v: torch.Tensor, leaf: torch.Tensor, zero_sum: bool) -> Optional[torch.Tensor]:
    """diag J (flat) if $J = \\partial v/\\partial\\theta$ is diagonal (on the probed subspace), else None."""
    if v is leaf:
        return _IDENTITY
    r1, r2 = _probe_vectors(v, zero_sum)
    (a,) = torch.autograd.grad(v, leaf, r1, retain_graph=True, allow_unused=True)
    if a is None:
        return torch.zeros(v.numel(), dtype=v.dtype, device=v.device)
    (b,) = torch.autograd.grad(v, leaf, r2, retain_graph=True)
    d = a.reshape(-1) / r1.reshape(-1)
    guess, got = d * r2.reshape(-1), b.reshape(-1)
    eps = 32 * torch.finfo(v.dtype).eps
    scale = float(guess.abs().max().clamp_min(got.abs().max()))
    if torch.allclose(got, guess, rtol=eps, atol=eps * scale):
        return d
    return None


class _Chain:
    """Maps per-sample rows over the flat parameters, ``(N, P)``, to rows over ``theta``, ``(N, D)``."""

    def __init__(self, make_dist: Callable, theta: torch.Tensor, names: List[str]):
        self.theta_shape = theta.shape
        self.leaf = theta.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            dist = make_dist(self.leaf)
            params = score_params(dist)
        if list(params) != names:
            raise ValueError(f"make_dist(theta) has parameters {list(params)}, expected {names}")
        self.params = params
        self.sizes = [v.numel() for v in params.values()]
        categorical = type(unwrap_independent(dist)) is D.Categorical
        self.logit_probs = {
            k: v.detach().softmax(-1) for k, v in params.items() if categorical and k.endswith("logits")
        }
        self.diagonals: Optional[List[Optional[torch.Tensor]]] = []
        with torch.enable_grad():
            for k, v in params.items():
                if not v.requires_grad:
                    self.diagonals.append(None)
                    continue
                d = _diagonal(v, self.leaf, k in self.logit_probs) if v.numel() == theta.numel() else None
                if d is None:
                    self.diagonals = None
                    break
                self.diagonals.append(d)

    @property
    def diagonal(self) -> bool:
        """True when the chain rule is a product with diag J (identity or elementwise ``make_dist``)."""
        return self.diagonals is not None

    def _project(self, rows: torch.Tensor) -> torch.Tensor:
        """Categorical logits: $h = g - p\\,\\mathbf 1^\\top g$ per row of K (the VJP of torch's normalisation)."""
        if not self.logit_probs:
            return rows
        blocks = list(rows.split(self.sizes, dim=1))
        for i, k in enumerate(self.params):
            if k in self.logit_probs:
                p = self.logit_probs[k]
                g = blocks[i].reshape(rows.shape[0], *p.shape)
                blocks[i] = (g - p * g.sum(-1, keepdim=True)).reshape(rows.shape[0], -1)
        return torch.cat(blocks, dim=1)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if self.diagonals is None:
            return self._dense(rows)
        blocks = [rows] if len(self.sizes) == 1 else self._project(rows).split(self.sizes, dim=1)
        if len(self.sizes) == 1 and self.logit_probs:
            blocks = [self._project(rows)]
        out = None
        for block, d in zip(blocks, self.diagonals):
            if d is None:
                continue
            term = block if d is _IDENTITY else block * d
            out = term if out is None else out + term
        if out is None:
            return torch.zeros(rows.shape[0], self.leaf.numel(), dtype=rows.dtype, device=rows.device)
        return out

    def _dense(self, rows: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([v.reshape(-1) for v in self.params.values()])
        total = flat.numel()
        if not flat.requires_grad:
            return torch.zeros(rows.shape[0], self.leaf.numel(), dtype=rows.dtype, device=rows.device)
        if total <= _ROW_BY_ROW:
            jac = torch.zeros(total, self.leaf.numel(), dtype=flat.dtype, device=flat.device)
            for i in range(total):  # a few plain backward passes: cheaper than a vmapped one
                (g,) = torch.autograd.grad(flat[i], self.leaf, retain_graph=True, allow_unused=True)
                if g is not None:
                    jac[i] = g.reshape(-1)
            return rows @ jac
        if rows.shape[0] <= total:  # one VJP per row
            (g,) = torch.autograd.grad(flat, self.leaf, rows.to(flat.dtype), is_grads_batched=True,
                                       allow_unused=True)
            if g is None:
                return torch.zeros(rows.shape[0], self.leaf.numel(), dtype=rows.dtype, device=rows.device)
            return g.reshape(rows.shape[0], -1)
        eye = torch.eye(total, dtype=flat.dtype, device=flat.device)
        (g,) = torch.autograd.grad(flat, self.leaf, eye, is_grads_batched=True, allow_unused=True)
        if g is None:
            return torch.zeros(rows.shape[0], self.leaf.numel(), dtype=rows.dtype, device=rows.device)
        return rows @ g.reshape(total, -1)


def _is_theta(v: torch.Tensor, theta: torch.Tensor) -> bool:
    """``v`` is ``theta`` itself (a detached alias: same memory, shape, strides and dtype)."""
    return (v.data_ptr() == theta.data_ptr() and v.shape == theta.shape and v.stride() == theta.stride()
            and v.dtype == theta.dtype and v.storage_offset() == theta.storage_offset())


def _identity(rows: torch.Tensor) -> torch.Tensor:
    return rows


def theta_chain(make_dist: Callable, theta: torch.Tensor, names: List[str],
                dist: Optional[D.Distribution] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The chain rule ``(N, P) -> (N, D)`` from the parameters ``names`` of ``make_dist(theta)`` to ``theta``.

    ``dist``: ``make_dist(theta.detach())`` when at hand; if its only parameter *is* ``theta`` (e.g.
    ``Bernoulli(logits=theta)``), the chain rule is the identity and ``make_dist`` is not called again.
    """
    if dist is not None:
        params = score_params(dist)
        if len(params) == 1 and _is_theta(next(iter(params.values())), theta):
            return _identity
    return _Chain(make_dist, theta, names)
