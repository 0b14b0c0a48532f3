r"""ES for all parameters of a model at once: :func:`es_grad_model`, the population estimator.

The population of perturbed models $\theta + s\sigma\varepsilon_m$ is never a Python
loop: ``nn.Sequential`` MLPs take the fast path of :mod:`gradlab.es.fastpath`
(batched matmuls, layer by layer), any other model the generic path here
(``torch.func.functional_call`` + ``vmap`` over flat perturbed parameter vectors).
Noise is drawn chunk by chunk from a noise source (:mod:`gradlab.es.noise`) into one
reused buffer, so memory is bounded whatever ``num_samples`` is.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from ..batch import evaluate_batch
from ..checks import (
    as_scalar,
    check_callable,
    check_count,
    check_has_parameters,
    check_finite,
    check_module,
    check_optional_count,
    check_sigma,
    check_tensor,
)
from .point import METHODS, check_method, es_weights
from .fastpath import NoiseLayout, Workspace, fast_losses, fast_plan, fast_reduce
from .distributed import distributed_run
from .noise import NoiseTable, choose_source, draw_noise
from ..params import flatten_params, unflatten_params

__all__ = ["es_grad_model", "check_arguments", "Population", "pick_noise_source", "low_rank_matrix", "generic_noise", "generic_draw_size", "generic_losses"]

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
            distribution, see :mod:`gradlab.es.noise`; every draw goes through a noise
            source, one chunk of ``(count, draw size)`` at a time).
        fast: allow the Sequential fast path (with the same noise, i.e. the same
            generator state and ``chunk_size``, it agrees with the generic path up to
            floating-point rounding). It is taken only when the model's value at
            $\theta$ through the fast path equals ``model(inputs)``, so a hook that changes
            values sends the call to the generic path (see :mod:`gradlab.es.fastpath`).
        noise: a noise source instead of fresh normals, typically a
            :class:`gradlab.es.noise.NoiseTable`: each draw (dense $\varepsilon$, or the
            low-rank factors and bias noise) is then one slice of the table, and the
            offsets of all ``num_samples`` draws are drawn up front from ``generator``,
            so the result no longer depends on ``chunk_size``. Not with ``distribution``.
        group: a ``torch.distributed`` process group (needs ``noise`` a
            ``NoiseTable``, the same on every rank): each rank evaluates its share of
            the population, the ranks exchange only (offset, losses) per member, and
            every rank returns the same full estimate, equal up to rounding to the
            single-process one with the same ``generator`` seed (see
            :mod:`gradlab.es.distributed`). Every rank of the group must call with
            the same arguments.

    Fitness shaping is offered by :func:`es_grad` only: ranks need every loss before
    any draw is weighted, and here the noise of a chunk is dropped after use.

    Returns:
        A 1-D tensor with one entry per parameter scalar, in ``flatten_params`` /
        ``parameters_to_vector`` order.
    """
    sigma = check_arguments(model, loss_fn, inputs, sigma, num_samples, method, chunk_size, rank)
    source = pick_noise_source(noise, distribution, group)
    with torch.no_grad():
        population = Population(
            model, loss_fn, inputs, targets, sigma=sigma, num_samples=num_samples, method=method,
            chunk_size=chunk_size, generator=generator, rank=rank, source=source, fast=fast,
        )
        if group is None:
            population.run_all()
        else:
            distributed_run(population, group)
    return population.estimate()


def check_arguments(
    model: Any, loss_fn: Any, inputs: Any, sigma: Any, num_samples: Any, method: Any,
    chunk_size: Any, rank: Any,
) -> float:
    """The argument checks of :func:`es_grad_model` (through :mod:`gradlab.checks`); returns ``sigma``."""
    check_module(model)
    check_callable(loss_fn, "loss_fn")
    check_tensor(inputs, "inputs")
    sigma = check_sigma(sigma)
    check_count(num_samples, "num_samples")
    check_method(method)
    check_optional_count(chunk_size, "chunk_size")
    check_optional_count(rank, "rank")
    check_has_parameters(model)
    return sigma


class Population:
    r"""One call of :func:`es_grad_model`: the population $\theta + s\sigma\varepsilon_m$ and its accumulator.

    Chooses the evaluation path (the Sequential fast path of :mod:`gradlab.es.fastpath` or
    the generic ``functional_call`` + ``vmap`` one), sizes the chunks, owns the noise buffer
    and the running sum $\sum_m w_m \varepsilon_m$. The driver (:meth:`run_all`, or
    :func:`gradlab.es.distributed.distributed_run`) calls :meth:`draw`, :meth:`losses` and
    :meth:`accumulate` chunk by chunk.
    """

    def __init__(
        self, model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: Any, *,
        sigma: float, num_samples: int, method: str, chunk_size: Optional[int],
        generator: Optional[torch.Generator], rank: Optional[int], source: Any, fast: bool,
    ) -> None:
        self.model, self.loss_fn, self.inputs, self.targets = model, loss_fn, inputs, targets
        self.sigma, self.num_samples, self.method, self.rank = sigma, num_samples, method, rank
        self.generator, self.source = generator, source
        self.theta = flatten_params(model)
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.signs = (1.0, -1.0) if method == "antithetic" else (1.0,)
        self.at_theta = self.loss_at_theta() if method == "forward" else None
        self.plan = fast_plan(model, inputs) if fast else None
        per_member = self.setup_fast() if self.plan is not None else self.setup_generic()
        self.chunk = chunk_size or max(1, min(num_samples, CHUNK_BUDGET // per_member))
        self.buffer = torch.empty((self.chunk, self.draw_size), dtype=self.dtype, device=self.device)
        self.table = source if isinstance(source, NoiseTable) else None
        self.offsets = (
            self.table.offsets(num_samples, self.draw_size, generator) if self.table is not None else None
        )

    def loss_at_theta(self) -> torch.Tensor:
        r"""$\ell(\theta)$, the baseline of ``"forward"``."""
        value = as_scalar(self.loss_fn(self.model(self.inputs), self.targets), "loss_fn").to(self.dtype)
        return check_finite(value, "loss_fn", "evaluations at the model's own parameters")

    def setup_fast(self) -> int:
        """Noise layout and buffers of the fast path; returns the work memory per member."""
        plan = self.plan
        self.layout = NoiseLayout(plan, self.rank)
        self.workspace = Workspace(self.dtype, self.device)
        self.grads = [torch.zeros_like(p) for p in self.model.parameters()]
        self.x = plan[0][1].forward(self.inputs) if plan[0][0] == "flatten" else self.inputs
        widths = sum(layer["out"] for layer in self.layout.layers)
        largest = max(layer["out"] * layer["in"] for layer in self.layout.layers)
        materialised = largest if self.rank is None else 0
        self.draw_size = self.layout.size
        return self.layout.size + len(self.signs) * (self.x.shape[0] * widths + materialised)

    def setup_generic(self) -> int:
        """Accumulator of the generic path; returns the work memory per member."""
        self.total = torch.zeros_like(self.theta)
        self.draw_size = generic_draw_size(self.model, self.rank)
        return 2 * self.theta.numel() * len(self.signs)

    def draw(self, start: int, stop: int, offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Noise of members ``start … stop - 1``: table rows at ``offsets`` (default: this call's), or fresh."""
        out = self.buffer[: stop - start]
        if self.table is not None:
            at = self.offsets if offsets is None else offsets
            return self.table.rows(at[start:stop], self.draw_size, out=out)
        return draw_noise(
            self.source, (stop - start, self.draw_size), generator=self.generator, dtype=self.dtype,
            device=self.device, out=out,
        )

    def losses(self, noise_draw: torch.Tensor) -> torch.Tensor:
        """Losses of the members of one draw, shape ``(len(signs), chunk)``."""
        if self.plan is not None:
            values = fast_losses(
                self.plan, self.layout, noise_draw, self.x, self.loss_fn, self.targets, self.sigma,
                self.signs, self.workspace,
            )
        else:
            perturbation = generic_noise(self.model, noise_draw, self.rank)
            values = generic_losses(
                self.model, self.loss_fn, self.inputs, self.targets, self.theta, perturbation,
                self.sigma, self.signs,
            )
        return check_finite(values, "loss_fn", "perturbed models").to(self.dtype)

    def accumulate(self, noise_draw: torch.Tensor, losses: torch.Tensor) -> None:
        r"""Add $\sum_m w_m\varepsilon_m$ of one draw (:func:`gradlab.es.point.es_weights`)."""
        minus = losses[1] if self.method == "antithetic" else None
        weights = es_weights(self.method, self.sigma, losses[0], minus, self.at_theta, None)
        if self.plan is not None:
            fast_reduce(self.layout, noise_draw, weights, self.grads)
        else:
            self.total.add_(weights @ generic_noise(self.model, noise_draw, self.rank))

    def chunks(self, first: int = 0, last: Optional[int] = None):
        """``(start, stop)`` of every chunk of members ``first … last - 1``."""
        last = self.num_samples if last is None else last
        for start in range(first, last, self.chunk):
            yield start, min(start + self.chunk, last)

    def run_all(self) -> None:
        """Evaluate and accumulate every member in this process."""
        for start, stop in self.chunks():
            noise_draw = self.draw(start, stop)
            self.accumulate(noise_draw, self.losses(noise_draw))

    def estimate(self) -> torch.Tensor:
        r"""$\frac1N\sum_m w_m\varepsilon_m$ as one flat vector."""
        if self.plan is not None:
            self.total = torch.cat([g.reshape(-1) for g in self.grads])
        return self.total / self.num_samples


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
