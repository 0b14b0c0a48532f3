r"""ES for all parameters of a model at once: :func:`es_grad_model`, the population estimator.

The population of perturbed models $\theta + s\sigma\varepsilon_m$ is never a Python
loop: ``nn.Sequential`` MLPs take the fast path of :mod:`gradlab.es_fastpath`
(batched matmuls, layer by layer), any other model the generic path here
(``torch.func.functional_call`` + ``vmap`` over flat perturbed parameter vectors).
Noise is drawn chunk by chunk from a noise source (:mod:`gradlab.noise`) into one
reused buffer, so memory is bounded whatever ``num_samples`` is.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from .batch import evaluate_batch
from .checks import (
    as_scalar,
    check_callable,
    check_count,
    check_finite,
    check_module,
    check_optional_count,
    check_sigma,
    check_tensor,
)
from .es_point import METHODS, check_method, es_weights
from .es_fastpath import NoiseLayout, Workspace, fast_losses, fast_plan, fast_reduce
from .es_distributed import check_group, check_same_setup, exchange, member_share
from .noise import NoiseTable, choose_source, draw_noise
from .params import flatten_params, unflatten_params

__all__ = ["es_grad_model", "pick_noise_source", "low_rank_matrix", "generic_noise", "generic_draw_size", "generic_losses"]

# Elements of noise + perturbed weights + activations per chunk when chunk_size is None
# (about 32 MB in float32): large enough for efficient batched matmuls, small enough to
# stay in cache and never to allocate N copies of a big model.
CHUNK_BUDGET = 2**23


def es_grad_model(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    inputs: torch.Tensor,
    targets: Any,
    *,
    sigma: float,
    num_samples: int,
    method: str = "antithetic",
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    rank: Optional[int] = None,
    distribution: Any = None,
    fast: bool = True,
    noise: Any = None,
    group: Any = None,
) -> torch.Tensor:
    r"""ES estimate of $\nabla_\theta\, \mathbb E_\varepsilon[\ell(\theta + \sigma\varepsilon)]$ for all parameters of a model.

    $\ell(\theta) = $ ``loss_fn(model(inputs), targets)`` with the model's parameters
    replaced by $\theta$; $\varepsilon$ is standard Gaussian (dense) or low rank
    (``rank``). The estimators and the $1/\sigma$ scaling are those of
    :func:`es_grad`; ``num_samples`` counts draws.

    **Speed.** The population is never a Python loop. For an ``nn.Sequential`` of
    ``Linear`` layers and elementwise activations, the perturbed models are
    evaluated layer by layer with batched matmuls: the first layer's
    $x(W + s\sigma E_m)^\top = xW^\top + s\sigma\,xE_m^\top$ shares $xW^\top$ across all members
    and $xE_m^\top$ between the $+$ and $-$ halves of antithetic pairs; later layers
    multiply by $W \pm \sigma E_m$ built for one chunk of draws at a time in a reused
    buffer (low rank: $hW^\top$ as one GEMM plus thin products). Noise and buffers
    live for one chunk, so memory is bounded whatever ``num_samples`` is. Any other
    model goes through ``torch.func.functional_call`` + ``torch.func.vmap`` over flat
    perturbed parameter vectors (``fast=False`` forces this path).
    Measurements: ``benchmarks/README.md``.

    **Low rank** (``rank=r``): each weight matrix $W \in \mathbb R^{o\times i}$ is
    perturbed by $E = A B^\top/\sqrt r$ with $A\in\mathbb R^{o\times r}$, $B\in\mathbb R^{i\times r}$
    i.i.d. standard normal (biases and other 1-D parameters keep dense noise).
    The $1/\sqrt r$ makes every entry of $E$ have mean 0 and variance 1 and
    distinct entries uncorrelated, so $\mathrm{Cov}(\varepsilon) = I$ as for dense noise
    and the estimate still targets $\nabla\ell(\theta)$ (exactly for a quadratic
    $\ell$, to $O(\sigma^2)$ in general); but $E$ is not Gaussian, so this is a
    different smoothing than $\ell_\sigma$, and the estimate is noisier. It
    needs $r(o + i)$ normals per matrix instead of $oi$ and no $o\times i$
    perturbation, which is what makes it fast for large models.

    Args:
        model: the ``nn.Module``; its parameters are not modified.
        loss_fn: ``loss_fn(outputs, targets)`` returning a scalar (a mean over the batch).
        inputs, targets: one batch, shared by every population member.
        sigma, num_samples, method: as in :func:`es_grad`.
        chunk_size: draws per batched evaluation (default: sized to ~32 MB of work
            memory). The noise is drawn chunk by chunk, so the numbers a seed gives
            depend on the chunk size: pass the same ``chunk_size`` to reproduce or to
            compare two calls (e.g. ``fast=True`` and ``fast=False``, whose default
            chunks differ).
        generator: ``torch.Generator`` for the noise.
        rank: ``None`` (dense Gaussian noise) or the rank $r \geq 1$ of the weight noise.
        distribution: replaces the standard-normal draws (a TorchOpt-style
            distribution, see :mod:`gradlab.noise`; every draw goes through a noise
            source, one chunk of ``(count, draw size)`` at a time).
        fast: allow the Sequential fast path (with the same noise, i.e. the same
            generator state and ``chunk_size``, it agrees with the generic path up to
            floating-point rounding).
        noise: a noise source instead of fresh normals, typically a
            :class:`gradlab.noise.NoiseTable`: each draw (dense $\varepsilon$, or the
            low-rank factors and bias noise) is then one slice of the table, and the
            offsets of all ``num_samples`` draws are drawn up front from ``generator``,
            so the result no longer depends on ``chunk_size``. Not with ``distribution``.
        group: a ``torch.distributed`` process group (needs ``noise`` a
            ``NoiseTable``, the same on every rank): each rank evaluates its share of
            the population, the ranks exchange only (offset, losses) per member, and
            every rank returns the same full estimate, equal up to rounding to the
            single-process one with the same ``generator`` seed (see
            :mod:`gradlab.es_distributed`). Every rank of the group must call with
            the same arguments.

    Fitness shaping is offered by :func:`es_grad` only: ranks need every loss before
    any draw is weighted, and here the noise of a chunk is dropped after use.

    Returns:
        A 1-D tensor with one entry per parameter scalar, in ``flatten_params`` /
        ``parameters_to_vector`` order.
    """
    check_module(model)
    check_callable(loss_fn, "loss_fn")
    check_tensor(inputs, "inputs")
    sigma = check_sigma(sigma)
    check_count(num_samples, "num_samples")
    check_method(method)
    check_optional_count(chunk_size, "chunk_size")
    check_optional_count(rank, "rank")
    source = pick_noise_source(noise, distribution, group)
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters")
    theta = flatten_params(model)
    dtype, device = theta.dtype, theta.device
    signs = (1.0, -1.0) if method == "antithetic" else (1.0,)
    plan = fast_plan(model, inputs) if fast else None

    with torch.no_grad():
        at_theta = None
        if method == "forward":
            at_theta = as_scalar(loss_fn(model(inputs), targets), "loss_fn").to(dtype)
            check_finite(at_theta, "loss_fn", "evaluations at the model's own parameters")
        if plan is not None:
            layout = NoiseLayout(plan, rank)
            workspace = Workspace(dtype, device)
            grads = [torch.zeros_like(p) for p in params]
            x = plan[0][1](inputs) if plan[0][0] == "flatten" else inputs
            widths = sum(l["out"] for l in layout.layers)
            largest = max(l["out"] * l["in"] for l in layout.layers)
            materialised = largest if rank is None else 0
            per_member = layout.size + len(signs) * (x.shape[0] * widths + materialised)
            draw_size = layout.size
        else:
            per_member = 2 * theta.numel() * len(signs)
            draw_size = generic_draw_size(model, rank)
            total = torch.zeros_like(theta)
        chunk = chunk_size or max(1, min(num_samples, CHUNK_BUDGET // per_member))
        buffer = torch.empty((chunk, draw_size), dtype=dtype, device=device)
        table = source if isinstance(source, NoiseTable) else None
        offsets = table.offsets(num_samples, draw_size, generator) if table is not None else None

        def draw(start: int, stop: int, at: Optional[torch.Tensor] = None) -> torch.Tensor:
            """Noise of members start … stop - 1 (from the table at offsets ``at``, or fresh)."""
            if table is not None:
                at = offsets if at is None else at
                return table.rows(at[start:stop], draw_size, out=buffer[: stop - start])
            return draw_noise(
                source, (stop - start, draw_size), generator=generator, dtype=dtype,
                device=device, out=buffer[: stop - start],
            )

        def losses_of(noise_draw: torch.Tensor) -> torch.Tensor:
            if plan is not None:
                values = fast_losses(plan, layout, noise_draw, x, loss_fn, targets, sigma, signs, workspace)
            else:
                values = generic_losses(
                    model, loss_fn, inputs, targets, theta, generic_noise(model, noise_draw, rank),
                    sigma, signs,
                )
            return check_finite(values, "loss_fn", "perturbed models").to(dtype)

        def accumulate(noise_draw: torch.Tensor, losses: torch.Tensor) -> None:
            minus = losses[1] if method == "antithetic" else None
            weights = es_weights(method, sigma, losses[0], minus, at_theta, None)
            if plan is not None:
                fast_reduce(layout, noise_draw, weights, grads)
            else:
                total.add_(weights @ generic_noise(model, noise_draw, rank))

        if group is None:
            for start in range(0, num_samples, chunk):
                stop = min(start + chunk, num_samples)
                noise_draw = draw(start, stop)
                accumulate(noise_draw, losses_of(noise_draw))
        else:
            me, world = check_group(group)
            settings = {
                "noise table size": table.size, "noise table seed": table.seed,
                "noise table contents": float(table.checksum()[2]),
                "noise table contents (weighted)": float(table.checksum()[3]),
                "num_samples": num_samples, "sigma": sigma, "method": METHODS.index(method),
                "rank": rank or 0, "draw size": draw_size,
            }
            check_same_setup(group, settings, device)
            first, last = member_share(num_samples, me, world)
            mine = [
                losses_of(draw(start, min(start + chunk, last)))
                for start in range(first, last, chunk)
            ]
            mine = torch.cat(mine, dim=1) if mine else torch.empty((len(signs), 0), dtype=dtype, device=device)
            everyone_offsets, everyone_losses = exchange(offsets[first:last], mine, num_samples, group)
            for start in range(0, num_samples, chunk):
                stop = min(start + chunk, num_samples)
                accumulate(draw(start, stop, everyone_offsets), everyone_losses[:, start:stop])

    if plan is not None:
        total = torch.cat([g.reshape(-1) for g in grads])
    return total / num_samples


def pick_noise_source(noise: Any, distribution: Any, group: Any) -> Any:
    """The noise source of :func:`es_grad_model` from its ``noise``/``distribution``/``group`` arguments."""
    source = choose_source(noise, distribution)
    if group is not None and not isinstance(noise, NoiseTable):
        raise ValueError(
            "group needs noise=gradlab.NoiseTable(size, seed) built identically on every rank: "
            "ranks exchange table offsets, not noise"
        )
    return source


def low_rank_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""$E = A B^\top / \sqrt r$ for a batch of factors ``a`` (c, out, r), ``b`` (c, in, r)."""
    return torch.bmm(a, b.transpose(1, 2)) / math.sqrt(a.shape[-1])


def generic_noise(model: nn.Module, draw: torch.Tensor, rank: Optional[int]) -> torch.Tensor:
    r"""Flat perturbations $\varepsilon$ (c, d) from a draw; low rank for every parameter with ≥ 2 dims."""
    if rank is None:
        return draw
    chunk, parts, offset = draw.shape[0], [], 0
    for p in model.parameters():
        if p.dim() >= 2:
            rows, cols = p.shape[0], p.numel() // p.shape[0]
            a = draw[:, offset : offset + rows * rank].view(chunk, rows, rank)
            b = draw[:, offset + rows * rank : offset + (rows + cols) * rank].view(chunk, cols, rank)
            parts.append(low_rank_matrix(a, b).reshape(chunk, -1))
            offset += (rows + cols) * rank
        else:
            parts.append(draw[:, offset : offset + p.numel()])
            offset += p.numel()
    return torch.cat(parts, dim=1)


def generic_draw_size(model: nn.Module, rank: Optional[int]) -> int:
    if rank is None:
        return sum(p.numel() for p in model.parameters())
    size = 0
    for p in model.parameters():
        size += (p.shape[0] + p.numel() // p.shape[0]) * rank if p.dim() >= 2 else p.numel()
    return size


def generic_losses(
    model: nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: Any,
    theta: torch.Tensor,
    noise: torch.Tensor,
    sigma: float,
    signs: Tuple[float, ...],
) -> torch.Tensor:
    """Losses of $\\theta + s\\sigma\\varepsilon_m$ via functional_call + vmap (loop fallback), shape (G, c)."""

    def loss_at(flat: torch.Tensor) -> torch.Tensor:
        outputs = torch.func.functional_call(model, unflatten_params(flat, model), (inputs,))
        return loss_fn(outputs, targets)

    population = torch.cat([theta + (s * sigma) * noise for s in signs])
    values = evaluate_batch(loss_at, population, name="loss_fn")
    return values.view(len(signs), noise.shape[0])
