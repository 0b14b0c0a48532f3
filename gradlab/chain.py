r"""The chain rule from a distribution's own parameters $\lambda$ to $\theta$, for every estimator.

$\hat g_\theta^{(n)} = J^\top \hat g_\lambda^{(n)}$ with $J = \partial\,\mathrm{flat}(\lambda)/\partial\theta$,
applied to the per-sample rows ``(N, P)`` an estimator's hook returns. :func:`theta_chain`
looks at ``make_dist`` once per call and picks the cheapest exact form:

- a single parameter that *is* ``theta`` (``Bernoulli(logits=theta)``): $J = I$, nothing to do
  and ``make_dist`` is not called again;
- a parameter with as many entries as ``theta`` is probed with two vector-Jacobian products
  ($J^\top r_1$, $J^\top r_2$): when $J^\top r_2 = (J^\top r_1 / r_1)\odot r_2$ to round-off, $J$ is
  diagonal (an elementwise function such as ``sigmoid``) and the chain rule is a product
  $\hat g \odot \operatorname{diag} J$, with no dense Jacobian. For a Categorical's ``logits``
  (normalised by torch: $\lambda = \ell - \operatorname{logsumexp}\ell$, so $J$ is never diagonal) the
  rows are first mapped exactly through the normalisation, $h = g - p\,\mathbf 1^\top g$, and the
  probes are zero-sum per row (the subspace that map leaves);
- every other ``make_dist`` gets the exact dense chain rule: a few plain backward passes for at
  most 8 parameters, else one batched vector-Jacobian product over the $N$ rows or over the $P$
  parameters, whichever is fewer (the Jacobian row by row where an op has no batching rule).

``create_graph`` keeps the graph of the rows (REBAR/RELAX differentiate their estimates); the
Jacobian itself is never differentiated.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

import torch
from torch import distributions as D

from .distributions import distribution_params, jacobian_of, unwrap_independent

__all__ = ["ParamChain", "theta_chain", "chain_rule"]

Params = Dict[str, torch.Tensor]
IDENTITY = object()  # marks a parameter that is theta itself (J = I)
ROW_BY_ROW = 8  # at most this many parameters: plain backward passes beat one vmapped one


@functools.lru_cache(maxsize=32)
def cached_probes(shape: torch.Size, dtype: torch.dtype, device: torch.device, zero_sum: bool):
    """The probes of :func:`probe_vectors`, made once per shape, dtype and device (never written to)."""
    gen = torch.Generator(device=device).manual_seed(0)
    r2 = 0.5 + torch.rand(shape, generator=gen, dtype=dtype, device=device)
    r1 = torch.ones(shape, dtype=dtype, device=device)
    if zero_sum:  # rows (1, ..., 1, -(K - 1)) and r2 centred: both in the zero-sum subspace
        r1[..., -1] = 1.0 - shape[-1]
        r2 = r2 - r2.mean(-1, keepdim=True)
    return r1, r2


def probe_vectors(v: torch.Tensor, zero_sum: bool):
    """Two probes shaped like ``v``: ``r1`` (no zero entry; all ones unless ``zero_sum``) and a fixed
    pseudo-random ``r2`` (cached: never write to them)."""
    return cached_probes(v.shape, v.dtype, v.device, bool(zero_sum))


def diagonal_of(v: torch.Tensor, leaf: torch.Tensor, zero_sum: bool):
    """diag J (flat) if $J = \\partial v/\\partial\\theta$ is diagonal (on the probed subspace), else None."""
    if v is leaf:
        return IDENTITY
    r1, r2 = probe_vectors(v, zero_sum)
    (a,) = torch.autograd.grad(v, leaf, r1, retain_graph=True, allow_unused=True)
    if a is None:
        return torch.zeros(v.numel(), dtype=v.dtype, device=v.device)
    (b,) = torch.autograd.grad(v, leaf, r2, retain_graph=True)
    d = a.reshape(-1) / r1.reshape(-1) if zero_sum else a.reshape(-1)  # r1 is all ones otherwise
    guess, got = d * r2.reshape(-1), b.reshape(-1)
    eps = 32 * torch.finfo(v.dtype).eps
    # allclose(got, guess, rtol=eps, atol=eps * scale), scale = the largest entry of either: one sync
    excess = ((got - guess).abs() - eps * guess.abs()).max()
    excess, scale = torch.stack((excess, torch.maximum(guess.abs().max(), got.abs().max()))).tolist()
    return d if excess <= eps * scale else None


class ParamChain:
    """Maps per-sample rows over the flat parameters ``lam`` (N, P) to rows over ``leaf`` (N, D).

    ``lam``: the parameters computed from ``leaf`` (with their graph); ``categorical``: True when
    ``lam``'s ``logits`` entries are a Categorical's normalised logits.
    """

    def __init__(self, lam: Params, leaf: torch.Tensor, categorical: bool = False, create_graph: bool = False):
        self.leaf, self.params, self.create_graph = leaf, lam, create_graph
        self.sizes = [v.numel() for v in lam.values()]
        self.dtype = next(iter(lam.values())).dtype if lam else leaf.dtype
        self.logit_probs = {
            k: v.detach().softmax(-1) for k, v in lam.items() if categorical and k.endswith("logits")
        }
        self.diagonals: Optional[List[Optional[torch.Tensor]]] = []
        with torch.enable_grad():
            for k, v in lam.items():
                if not v.requires_grad:
                    self.diagonals.append(None)
                    continue
                d = diagonal_of(v, leaf, k in self.logit_probs) if v.numel() == leaf.numel() else None
                if d is None:
                    self.diagonals = None
                    break
                self.diagonals.append(d)

    @property
    def diagonal(self) -> bool:
        """True when the chain rule is a product with diag J (identity or elementwise ``make_dist``)."""
        return self.diagonals is not None

    @property
    def needed(self) -> torch.Tensor:
        """Bool (P,): which flat parameters are computed from theta (per tensor: ``requires_grad``)."""
        return torch.cat([torch.full((v.numel(),), bool(v.requires_grad)) for v in self.params.values()])

    def zeros(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.zeros(rows.shape[0], self.leaf.numel(), dtype=rows.dtype, device=rows.device)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Categorical logits: $h = g - p\\,\\mathbf 1^\\top g$ per row of K (the VJP of torch's normalisation)."""
        if not self.logit_probs:
            return rows
        blocks = list(rows.split(self.sizes, dim=1))
        for i, k in enumerate(self.params):
            if k in self.logit_probs:
                p = self.logit_probs[k]
                g = blocks[i].reshape(rows.shape[0], *p.shape)
                blocks[i] = (g - p * g.sum(-1, keepdim=True)).reshape(rows.shape[0], -1)
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(self.dtype)
        if self.diagonals is None:
            with torch.enable_grad():
                return self.dense(rows)
        rows = self.project(rows)
        blocks = [rows] if len(self.sizes) == 1 else rows.split(self.sizes, dim=1)
        out = None
        for block, d in zip(blocks, self.diagonals):
            if d is None:
                continue
            term = block if d is IDENTITY else block * d
            out = term if out is None else out + term
        return self.zeros(rows) if out is None else out

    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([v.reshape(-1) for v in self.params.values()])
        total = flat.numel()
        if not flat.requires_grad:
            return self.zeros(rows)
        if total <= ROW_BY_ROW:  # a few plain backward passes: cheaper than a vmapped one
            return rows @ jacobian_of(flat, self.leaf)
        if rows.shape[0] <= total:  # one VJP per row
            try:
                (g,) = torch.autograd.grad(flat, self.leaf, rows, is_grads_batched=True, retain_graph=True,
                                           create_graph=self.create_graph, allow_unused=True)
            except RuntimeError:  # an op of make_dist without a batching rule: the Jacobian below works
                return rows @ jacobian_of(flat, self.leaf)
            return self.zeros(rows) if g is None else g.reshape(rows.shape[0], -1)
        return rows @ jacobian_of(flat, self.leaf)


def is_theta(v: torch.Tensor, theta: torch.Tensor) -> bool:
    """``v`` is ``theta`` itself (a detached alias: same memory, shape, strides and dtype)."""
    return (v.data_ptr() == theta.data_ptr() and v.shape == theta.shape and v.stride() == theta.stride()
            and v.dtype == theta.dtype and v.storage_offset() == theta.storage_offset())


class Identity:
    """$J = I$: the rows are already w.r.t. ``theta``."""

    diagonal = True

    def __init__(self, size: int):
        self.size = size

    @property
    def needed(self) -> torch.Tensor:
        return torch.ones(self.size, dtype=torch.bool)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


def is_categorical(dist: D.Distribution) -> bool:
    return type(unwrap_independent(dist)) is D.Categorical


def theta_chain(
    make_dist: Callable,
    theta: torch.Tensor,
    params_of: Callable[[D.Distribution], Params] = distribution_params,
    dist: Optional[D.Distribution] = None,
    *,
    names: Optional[List[str]] = None,
    create_graph: bool = False,
):
    """The chain rule ``(N, P) -> (N, D)`` from the parameters ``params_of(make_dist(theta))`` to ``theta``.

    ``dist``: ``make_dist(theta.detach())`` when at hand; if its only parameter *is* ``theta`` (e.g.
    ``Bernoulli(logits=theta)``), the chain rule is the identity and ``make_dist`` is not called again.
    ``names``: the parameter names expected (ValueError otherwise). The result has ``.needed``.
    """
    if dist is not None:
        params = params_of(dist)
        if len(params) == 1 and is_theta(next(iter(params.values())), theta):
            return Identity(theta.numel())
    leaf = theta.detach().requires_grad_(True)  # an alias of theta's memory: autograd never writes to it
    with torch.enable_grad():
        built = make_dist(leaf)
        lam = params_of(built)
    if names is not None and list(lam) != list(names):
        raise ValueError(f"make_dist(theta) has parameters {list(lam)}, expected {list(names)}")
    return ParamChain(lam, leaf, is_categorical(built), create_graph=create_graph)


def chain_rule(lam: Params, leaf: torch.Tensor, grads: torch.Tensor, *, create_graph: bool = False,
               categorical: bool = False) -> torch.Tensor:
    r"""Per-sample $J^\top g_n$ for ``grads`` (N, P), $J = \partial\,\mathrm{flat}(\lambda)/\partial\theta$: (N, D).

    ``lam`` are the parameters computed from ``leaf`` (with their graph).
    """
    count = grads.shape[0]
    values = list(lam.values())
    if len(values) == 1 and values[0] is leaf:
        return grads.reshape(count, -1)
    return ParamChain(lam, leaf, categorical, create_graph=create_graph)(grads)
