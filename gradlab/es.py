r"""Evolution strategies (ES): gradients of a Gaussian-smoothed function from function values.

**The smoothed objective.** For $f:\mathbb R^d\to\mathbb R$ and $\sigma > 0$,

$$f_\sigma(x) = \mathbb E_{z\sim\mathcal N(0, I)}[f(x + \sigma z)], \qquad
\nabla f_\sigma(x) = \frac{1}{\sigma}\,\mathbb E_z[f(x + \sigma z)\, z]$$

(Stein's identity). $f_\sigma$ is smooth even when $f$ is not, and
$\nabla f_\sigma \to \nabla f$ as $\sigma \to 0$ for smooth $f$ (for a quadratic
they are equal; in general they differ by $O(\sigma^2)$).

**The estimators** (the three methods of TorchOpt's zero-order module), with
$z_1, \dots, z_N$ i.i.d. draws; **``num_samples`` = N counts draws**:

| method | estimate of $\nabla f_\sigma(x)$ | evaluations of $f$ |
|---|---|---|
| ``"naive"`` | $\frac1N\sum_n f(x+\sigma z_n)\,z_n/\sigma$ | $N$ |
| ``"forward"`` | $\frac1N\sum_n \big(f(x+\sigma z_n) - f(x)\big)\,z_n/\sigma$ | $N + 1$ |
| ``"antithetic"`` | $\frac1N\sum_n \big(f(x+\sigma z_n) - f(x-\sigma z_n)\big)\,z_n/(2\sigma)$ | $2N$ |

All three are unbiased for $\nabla f_\sigma(x)$ (the baseline $f(x)$ multiplies
$\mathbb E[z] = 0$; the $-z$ half has the same distribution as the $+z$ half).
**Scaling convention, used everywhere in gradlab:** the noise $z$ has unit
variance and the estimate is divided by $\sigma$ (as in TorchOpt); a seed that
draws $v = \sigma z$ and divides by $\sigma^2$ computes the same number.

``es_grad`` treats ``f`` as a black box of one tensor; ``es_grad_model`` does the
same for all parameters $\theta$ of an ``nn.Module`` and is fast (see its
docstring); ``zero_order`` / ``ZeroOrderModule`` plug the estimate into autograd
with TorchOpt's interface. The seed-style helpers ``ES_grad`` / ``ES_step`` are
thin wrappers for the lab.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .finite_diff import (
    Vectorized,
    _check_count,
    _check_positive,
    _check_tensor,
    _check_vectorized,
    evaluate_batch,
)
from .params import assign_params, flatten_params, unflatten_params

__all__ = [
    "METHODS",
    "sample_noise",
    "centered_ranks",
    "es_grad",
    "es_grad_model",
    "zero_order",
    "ZeroOrderModule",
    "get_model_weights",
    "set_model_weights",
    "ES_grad",
    "ES_step",
]

METHODS = ("naive", "forward", "antithetic")
FITNESS_SHAPINGS = (None, "centered_rank")

# Elements of noise + perturbed weights + activations per chunk when chunk_size is None
# (about 32 MB in float32): large enough for efficient batched matmuls, small enough to
# stay in cache and never to allocate N copies of a big model.
_CHUNK_BUDGET = 2**23


# =========================================================================== validation
def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    return _check_positive(sigma, "sigma")


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method  # type: ignore[return-value]


def _check_shaping(fitness_shaping: object) -> Optional[str]:
    if fitness_shaping not in FITNESS_SHAPINGS:
        raise ValueError(
            f"fitness_shaping must be None or 'centered_rank', got {fitness_shaping!r}"
        )
    return fitness_shaping  # type: ignore[return-value]


def _check_optional_count(value: object, name: str) -> Optional[int]:
    return None if value is None else _check_count(value, name)


# =========================================================================== noise
def sample_noise(
    shape: Sequence[int],
    *,
    distribution: Any = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device, None] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""A ``shape``-shaped tensor of i.i.d. unit-variance noise.

    ``distribution=None`` draws $\mathcal N(0, 1)$ with ``torch.randn`` from
    ``generator``. Otherwise ``distribution`` is any object with
    ``sample(sample_shape)`` (e.g. ``torch.distributions.Normal(0., 1.)``) or a
    function ``sample_shape -> tensor``, as in TorchOpt; it should have mean 0 and
    variance 1 per entry. The result is moved to ``dtype``/``device``. ``out``
    (contiguous, of ``shape``) is filled in place when the default Gaussian can be
    drawn on its device: the same numbers as a fresh draw, without a new allocation.
    """
    shape = torch.Size(shape)
    if distribution is None and out is not None and out.shape == shape and (
        generator is None or generator.device == out.device
    ):
        return out.normal_(generator=generator)
    if distribution is None:
        draw_device = generator.device if generator is not None else device
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=draw_device)
        return noise.to(device) if device is not None else noise
    sampler = getattr(distribution, "sample", distribution)
    if not callable(sampler):
        raise TypeError(
            "distribution must have a sample(sample_shape) method or be a function of the "
            f"sample shape, got {type(distribution).__name__}"
        )
    noise = torch.as_tensor(sampler(shape))
    if noise.shape != shape:
        raise ValueError(
            f"distribution.sample({tuple(shape)}) returned shape {tuple(noise.shape)}; a "
            "scalar distribution (batch_shape ()) is expected"
        )
    return noise.to(dtype=dtype, device=device)


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    r"""Fitness shaping of OpenAI's ES: replace each value by its rank, scaled to $[-\tfrac12, \tfrac12]$.

    The estimate then depends only on the *order* of the function values, which
    makes ES invariant to monotone transformations of $f$ and robust to outliers
    (it is no longer an unbiased estimate of $\nabla f_\sigma$, only an ascent/descent
    direction). With one value the result is 0.
    """
    count = values.numel()
    ranks = torch.empty(count, dtype=values.dtype, device=values.device)
    ranks[values.reshape(-1).argsort()] = torch.arange(count, dtype=values.dtype, device=values.device)
    if count == 1:
        return torch.zeros_like(values)
    return (ranks / (count - 1) - 0.5).view_as(values)


def _weights(
    method: str,
    sigma: float,
    plus: torch.Tensor,
    minus: Optional[torch.Tensor],
    at_x: Optional[torch.Tensor],
    fitness_shaping: Optional[str],
) -> torch.Tensor:
    r"""Per-draw weights $w_n$ with estimate $= \frac1N \sum_n w_n z_n$."""
    if fitness_shaping == "centered_rank":
        if method == "antithetic":
            shaped = centered_ranks(torch.cat([plus, minus]))
            plus, minus = shaped[: plus.numel()], shaped[plus.numel():]
        else:
            plus, at_x = centered_ranks(plus), None  # a constant baseline does not change ranks
    if method == "antithetic":
        return (plus - minus) / (2 * sigma)
    if method == "forward" and at_x is not None:
        return (plus - at_x) / sigma
    return plus / sigma


# =========================================================================== es_grad
def _es_grad(
    f: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    sigma: float,
    num_samples: int,
    method: str,
    distribution: Any,
    generator: Optional[torch.Generator],
    fitness_shaping: Optional[str],
    vectorized: Vectorized,
    chunk_size: Optional[int],
    value_at_x: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """es_grad without input validation; ``value_at_x`` reuses a known f(x) for 'forward'."""
    x0 = x.detach()
    z = sample_noise(
        (num_samples, *x0.shape), distribution=distribution, generator=generator,
        dtype=x0.dtype, device=x0.device,
    )
    evaluate = functools.partial(evaluate_batch, f, vectorized=vectorized, chunk_size=chunk_size)
    minus = at_x = None
    if method == "antithetic":
        values = evaluate(torch.cat([x0 + sigma * z, x0 - sigma * z]))
        plus, minus = values[:num_samples], values[num_samples:]
    else:
        plus = evaluate(x0 + sigma * z)
    if method == "forward" and fitness_shaping is None:
        at_x = value_at_x if value_at_x is not None else evaluate(x0.unsqueeze(0))[0]
    weights = _weights(method, sigma, plus, minus, at_x, fitness_shaping)
    return torch.tensordot(weights.to(x0.dtype), z, dims=1) / num_samples


def es_grad(
    f: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    sigma: float,
    num_samples: int,
    method: str = "antithetic",
    distribution: Any = None,
    generator: Optional[torch.Generator] = None,
    fitness_shaping: Optional[str] = None,
    vectorized: Vectorized = "auto",
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    r"""ES estimate of $\nabla f_\sigma(x) = \nabla_x \mathbb E_{z\sim\mathcal N(0,I)}[f(x + \sigma z)]$.

    Args:
        f: scalar black box of a tensor shaped like ``x``; never differentiated.
        x: the point (any shape, floating dtype).
        sigma: smoothing scale $\sigma > 0$ (the estimate is divided by $\sigma$).
        num_samples: number $N$ of noise draws $z_n$ (``"antithetic"`` evaluates
            $f$ $2N$ times, ``"forward"`` $N + 1$ times, ``"naive"`` $N$ times).
        method: ``"naive"``, ``"forward"`` or ``"antithetic"`` (see the module docstring).
        distribution: noise source other than $\mathcal N(0, I)$, see :func:`sample_noise`.
        generator: ``torch.Generator`` for the default Gaussian noise.
        fitness_shaping: ``None`` or ``"centered_rank"`` (:func:`centered_ranks`
            applied to all function values before they weight the noise).
        vectorized: evaluate the whole population with ``torch.func.vmap``
            (``True``), with a Python loop (``False``), or try vmap and fall back to
            the loop (``"auto"``, for black boxes vmap cannot trace).
        chunk_size: population members per vmap call (bounds memory).

    Returns:
        The estimate, shaped like ``x``.

    Raises:
        ValueError: ``sigma <= 0``, ``num_samples < 1``, an unknown ``method``,
            ``f`` returning more than one number, or NaN/inf from ``f``.
    """
    _check_tensor(x)
    sigma = _check_sigma(sigma)
    _check_count(num_samples, "num_samples")
    _check_method(method)
    _check_shaping(fitness_shaping)
    _check_vectorized(vectorized)
    _check_optional_count(chunk_size, "chunk_size")
    return _es_grad(
        f, x, sigma, num_samples, method, distribution, generator, fitness_shaping,
        vectorized, chunk_size,
    )


# =========================================================================== es_grad_model
_ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid,
    nn.Softsign, nn.Tanhshrink, nn.Identity,
)


def _is_gradlab(module: nn.Module, names: Tuple[str, ...]) -> bool:
    kind = type(module)
    return kind.__module__ == f"{__package__}.nn" and kind.__name__ in names


def _is_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear or _is_gradlab(module, ("Linear",))


def _is_elementwise(module: nn.Module) -> bool:
    if type(module) in _ELEMENTWISE or _is_gradlab(module, ("ReLU", "ReQU")):
        return True
    return type(module) is nn.Dropout and (not module.training or module.p == 0)


def _fast_plan(model: nn.Module, inputs: torch.Tensor) -> Optional[List[Tuple[str, Any]]]:
    """Layers of an ``nn.Sequential`` of Linear + elementwise modules, else ``None``.

    The fast path needs: only Linear layers (``torch.nn`` or ``gradlab.nn``),
    elementwise activations (and optionally a leading ``nn.Flatten``), 2-D inputs
    after flattening, and the parameters in layer order (weight, then bias).
    """
    if type(model) is not nn.Sequential or len(model) == 0:
        return None
    plan: List[Tuple[str, Any]] = []
    expected: List[torch.Tensor] = []
    for index, module in enumerate(model):
        if module._forward_hooks or module._forward_pre_hooks:
            return None
        if _is_linear(module):
            plan.append(("linear", module))
            expected += [module.weight] + ([module.bias] if module.bias is not None else [])
        elif _is_elementwise(module):
            plan.append(("act", module))
        elif type(module) is nn.Flatten and index == 0 and module.end_dim == -1:
            plan.append(("flatten", module))
        else:
            return None
    params = list(model.parameters())
    if len(params) != len(expected) or any(p is not q for p, q in zip(params, expected)):
        return None
    first = plan[0][1](inputs) if plan[0][0] == "flatten" else inputs
    if first.dim() != 2 or not any(kind == "linear" for kind, _ in plan):
        return None
    return plan


class _Layout:
    """Where each Linear layer's noise lives in a chunk's noise draw.

    Dense: the draw is the flat perturbation $\\varepsilon \\in \\mathbb R^{c\\times d}$ in
    ``flatten_params`` order. Low rank $r$: per layer the draw holds $A$ (out, r),
    $B$ (in, r) and the bias noise $e$ (out), and $E = A B^\\top/\\sqrt r$.
    """

    def __init__(self, plan: List[Tuple[str, Any]], rank: Optional[int]) -> None:
        self.rank = rank
        self.layers: List[Dict[str, Any]] = []
        offset = 0
        for kind, module in plan:
            if kind != "linear":
                continue
            out_f, in_f = module.weight.shape
            has_bias = module.bias is not None
            layer: Dict[str, Any] = {"out": out_f, "in": in_f, "bias": has_bias}
            if rank is None:
                layer["w"] = offset
                offset += out_f * in_f
            else:
                layer["a"], layer["b"] = offset, offset + out_f * rank
                offset += (out_f + in_f) * rank
            if has_bias:
                layer["e"] = offset
                offset += out_f
            self.layers.append(layer)
        self.size = offset  # entries of one draw

    def weight_noise(self, draw: torch.Tensor, layer: Dict[str, Any]):
        c, o, i = draw.shape[0], layer["out"], layer["in"]
        if self.rank is None:
            return draw[:, layer["w"] : layer["w"] + o * i].view(c, o, i)
        r = self.rank
        a = draw[:, layer["a"] : layer["a"] + o * r].view(c, o, r)
        b = draw[:, layer["b"] : layer["b"] + i * r].view(c, i, r)
        return a, b

    def bias_noise(self, draw: torch.Tensor, layer: Dict[str, Any]) -> Optional[torch.Tensor]:
        if not layer["bias"]:
            return None
        return draw[:, layer["e"] : layer["e"] + layer["out"]]


def _low_rank_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""$E = A B^\top / \sqrt r$ for a batch of factors ``a`` (c, out, r), ``b`` (c, in, r)."""
    return torch.bmm(a, b.transpose(1, 2)) / math.sqrt(a.shape[-1])


def _is_plain_cross_entropy(loss_fn: Callable, outputs: torch.Tensor, targets: Any) -> bool:
    """Mean cross-entropy with class-index targets and default options (nothing else)."""
    if loss_fn is nn.functional.cross_entropy:
        pass
    elif type(loss_fn) is nn.CrossEntropyLoss:
        if loss_fn.weight is not None or loss_fn.reduction != "mean" or loss_fn.label_smoothing != 0:
            return False
    else:
        return False
    return (
        isinstance(targets, torch.Tensor)
        and targets.dtype == torch.int64
        and outputs.dim() == 3
        and targets.shape == outputs.shape[1:2]
        and bool((targets >= 0).all())
        and bool((targets < outputs.shape[2]).all())
    )


def _population_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy of every member at once: $\frac1B\sum_b \big(\log\sum_k e^{o_{bk}} - o_{b,y_b}\big)$.

    The same numbers as ``vmap(F.cross_entropy)`` up to rounding, about 10x faster on
    CPU for few classes (torch's log_softmax kernel is slow for short rows).
    """
    top = logits.amax(-1, keepdim=True)
    log_norm = (logits - top).exp_().sum(-1).log_() + top.squeeze(-1)
    index = targets.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return (log_norm - logits.gather(-1, index).squeeze(-1)).mean(-1)


def _member_losses(loss_fn: Callable, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
    """``loss_fn(outputs[m], targets)`` for every population member m, vmapped when possible."""
    if _is_plain_cross_entropy(loss_fn, outputs, targets):
        return _population_cross_entropy(outputs, targets)
    try:
        losses = torch.func.vmap(loss_fn, in_dims=(0, None))(outputs, targets)
    except Exception:  # noqa: BLE001
        # Some losses cannot be vmapped (e.g. they call .item()); loop over members then.
        losses = torch.stack([_scalar_loss(loss_fn(out, targets)) for out in outputs])
    if not isinstance(losses, torch.Tensor) or losses.numel() != outputs.shape[0]:
        shape = tuple(losses.shape[1:]) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn must return a scalar, got {shape}")
    return losses.reshape(-1)


def _scalar_loss(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return value.reshape(())


class _Workspace:
    """Buffers reused across chunks (large fresh allocations cost page faults on every chunk)."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._buffers: Dict[Any, torch.Tensor] = {}

    def get(self, key: Any, shape: Sequence[int]) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=self.dtype, device=self.device)
            self._buffers[key] = buffer
        return buffer[:numel].view(*shape)


def _activate(module: nn.Module, h: torch.Tensor, in_place: bool) -> torch.Tensor:
    """Apply an elementwise module, in place on gradlab's own buffers where torch allows it."""
    kind = type(module)
    if in_place:
        if kind is nn.ReLU:
            return h.relu_()
        if kind is nn.Tanh:
            return h.tanh_()
        if kind is nn.Sigmoid:
            return h.sigmoid_()
        if kind is nn.SiLU:
            return nn.functional.silu(h, inplace=True)
        if kind is nn.LeakyReLU:
            return nn.functional.leaky_relu_(h, module.negative_slope)
    return module(h)


def _fast_losses(
    plan: List[Tuple[str, Any]],
    layout: _Layout,
    draw: torch.Tensor,
    inputs: torch.Tensor,
    loss_fn: Callable,
    targets: Any,
    sigma: float,
    signs: Tuple[float, ...],
    workspace: _Workspace,
) -> torch.Tensor:
    r"""Losses of the perturbed models $\theta + s\sigma\varepsilon_m$ for every sign s and draw m.

    Returns shape ``(len(signs), c)``. The first Linear layer sees the same input
    for every member, so $x (W + s\sigma E_m)^\top = xW^\top + s\sigma\, xE_m^\top$: $xW^\top$ is
    computed once and $xE_m^\top$ once for both signs. Later layers see
    member-specific inputs $h_{s,m}$. Dense noise then uses one batched matmul with
    the perturbed weights $W + s\sigma E_m$ written into a buffer of one chunk: a
    cheap elementwise pass, where the split form would cost a second batched
    matmul as large as the first. Low-rank noise uses the split form
    $h W^\top + s\sigma\,(h B_m) A_m^\top/\sqrt r$: one big GEMM for all members plus
    two thin ones.
    """
    groups, chunk = len(signs), draw.shape[0]
    h = inputs  # (B, in) while shared by all members, then (G, c, B, width)
    shared = True
    layers = iter(layout.layers)
    for position, (kind, module) in enumerate(plan):
        if kind != "linear":
            h = _activate(module, h, in_place=not shared)
            continue
        layer = next(layers)
        weight, bias = module.weight, module.bias
        out_f, in_f = weight.shape
        noise_w = layout.weight_noise(draw, layer)
        noise_b = layout.bias_noise(draw, layer)
        batch = h.shape[-2]
        out = workspace.get(("out", position), (groups, chunk, batch, out_f))
        if shared or layout.rank is not None:
            # split form: out = h W^T + b + s*sigma*(h E_m^T + e_m)
            lead = (chunk,) if shared else (groups, chunk)
            delta = workspace.get(("delta", position), (*lead, batch, out_f))
            if layout.rank is None:  # only for the shared input
                torch.matmul(h, noise_w.transpose(1, 2), out=delta)
            else:
                a, b = noise_w
                thin = torch.matmul(h, b).mul_(1.0 / math.sqrt(layout.rank))  # (.., c, B, r)
                if layout.rank == 1:  # an outer product: broadcasting beats a K=1 matmul
                    torch.mul(thin, a.transpose(1, 2), out=delta)
                else:
                    torch.matmul(thin, a.transpose(1, 2), out=delta)
            if noise_b is not None:
                delta.add_(noise_b.unsqueeze(1))
            if shared:
                base = nn.functional.linear(h, weight, bias)  # (B, out), once for all members
                for g, s in enumerate(signs):
                    torch.add(base, delta, alpha=s * sigma, out=out[g])
            else:  # one big GEMM for every member's h W^T + b, then the thin correction
                flat_h, flat_out = h.reshape(-1, in_f), out.view(-1, out_f)
                if bias is not None:
                    torch.addmm(bias, flat_h, weight.t(), out=flat_out)
                else:
                    torch.mm(flat_h, weight.t(), out=flat_out)
                for g, s in enumerate(signs):
                    out[g].add_(delta[g], alpha=s * sigma)
        else:
            perturbed = workspace.get(("weight", position), (groups, chunk, out_f, in_f))
            shift = workspace.get(("bias", position), (groups, chunk, 1, out_f))
            for g, s in enumerate(signs):
                torch.add(weight, noise_w, alpha=s * sigma, out=perturbed[g])
                if noise_b is not None:
                    torch.add(bias, noise_b.unsqueeze(1), alpha=s * sigma, out=shift[g])
                else:
                    shift[g].copy_(bias if bias is not None else torch.zeros_like(shift[g]))
            torch.baddbmm(
                shift.view(groups * chunk, 1, out_f),
                h.reshape(groups * chunk, batch, in_f),
                perturbed.view(groups * chunk, out_f, in_f).transpose(1, 2),
                out=out.view(groups * chunk, batch, out_f),
            )
        h = out
        shared = False
    losses = _member_losses(loss_fn, h.reshape(groups * chunk, *h.shape[2:]), targets)
    return losses.view(groups, chunk)


def _fast_reduce(
    layout: _Layout, draw: torch.Tensor, weights: torch.Tensor, grads: List[torch.Tensor]
) -> None:
    r"""Add $\sum_m w_m \varepsilon_m$ of one chunk to the per-parameter accumulators."""
    slot = 0
    row = weights.view(1, -1)
    for layer in layout.layers:
        noise_w = layout.weight_noise(draw, layer)
        if layout.rank is None:
            chunk = noise_w.shape[0]
            grads[slot].view(1, -1).addmm_(row, noise_w.reshape(chunk, -1))
        else:
            a, b = noise_w
            chunk, out_f, r = a.shape
            weighted = (a * weights.view(-1, 1, 1)).permute(1, 0, 2).reshape(out_f, chunk * r)
            stacked_b = b.transpose(1, 2).reshape(chunk * r, -1)
            grads[slot].addmm_(weighted, stacked_b, alpha=1.0 / math.sqrt(r))
        slot += 1
        noise_b = layout.bias_noise(draw, layer)
        if noise_b is not None:
            grads[slot].view(1, -1).addmm_(row, noise_b)
            slot += 1


def _generic_noise(model: nn.Module, draw: torch.Tensor, rank: Optional[int]) -> torch.Tensor:
    r"""Flat perturbations $\varepsilon$ (c, d) from a draw; low rank for every parameter with ≥ 2 dims."""
    if rank is None:
        return draw
    chunk, parts, offset = draw.shape[0], [], 0
    for p in model.parameters():
        if p.dim() >= 2:
            rows, cols = p.shape[0], p.numel() // p.shape[0]
            a = draw[:, offset : offset + rows * rank].view(chunk, rows, rank)
            b = draw[:, offset + rows * rank : offset + (rows + cols) * rank].view(chunk, cols, rank)
            parts.append(_low_rank_matrix(a, b).reshape(chunk, -1))
            offset += (rows + cols) * rank
        else:
            parts.append(draw[:, offset : offset + p.numel()])
            offset += p.numel()
    return torch.cat(parts, dim=1)


def _generic_draw_size(model: nn.Module, rank: Optional[int]) -> int:
    if rank is None:
        return sum(p.numel() for p in model.parameters())
    size = 0
    for p in model.parameters():
        size += (p.shape[0] + p.numel() // p.shape[0]) * rank if p.dim() >= 2 else p.numel()
    return size


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
        distribution: replaces the standard-normal draws (see :func:`sample_noise`).
        fast: allow the Sequential fast path (with the same noise, i.e. the same
            generator state and ``chunk_size``, it agrees with the generic path up to
            floating-point rounding).

    Fitness shaping is offered by :func:`es_grad` only: ranks need every loss before
    any draw is weighted, and here the noise of a chunk is dropped after use.

    Returns:
        A 1-D tensor with one entry per parameter scalar, in ``flatten_params`` /
        ``parameters_to_vector`` order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    _check_tensor(inputs, "inputs")
    sigma = _check_sigma(sigma)
    _check_count(num_samples, "num_samples")
    _check_method(method)
    _check_optional_count(chunk_size, "chunk_size")
    _check_optional_count(rank, "rank")
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters")
    theta = flatten_params(model)
    dtype, device = theta.dtype, theta.device
    signs = (1.0, -1.0) if method == "antithetic" else (1.0,)
    plan = _fast_plan(model, inputs) if fast else None

    with torch.no_grad():
        at_theta = None
        if method == "forward":
            at_theta = _scalar_loss(loss_fn(model(inputs), targets)).to(dtype)
            if not torch.isfinite(at_theta):
                raise ValueError(
                    "loss_fn returned a non-finite value (NaN or inf) at the model's parameters"
                )
        if plan is not None:
            layout = _Layout(plan, rank)
            workspace = _Workspace(dtype, device)
            grads = [torch.zeros_like(p) for p in params]
            x = plan[0][1](inputs) if plan[0][0] == "flatten" else inputs
            widths = sum(l["out"] for l in layout.layers)
            largest = max(l["out"] * l["in"] for l in layout.layers)
            materialised = largest if rank is None else 0
            per_member = layout.size + len(signs) * (x.shape[0] * widths + materialised)
            draw_size = layout.size
        else:
            per_member = 2 * theta.numel() * len(signs)
            draw_size = _generic_draw_size(model, rank)
            total = torch.zeros_like(theta)
        chunk = chunk_size or max(1, min(num_samples, _CHUNK_BUDGET // per_member))
        buffer = torch.empty((chunk, draw_size), dtype=dtype, device=device)

        for start in range(0, num_samples, chunk):
            count = min(chunk, num_samples - start)
            draw = sample_noise(
                (count, draw_size), distribution=distribution, generator=generator,
                dtype=dtype, device=device, out=buffer[:count],
            )
            if plan is not None:
                losses = _fast_losses(plan, layout, draw, x, loss_fn, targets, sigma, signs, workspace)
            else:
                noise = _generic_noise(model, draw, rank)
                losses = _generic_losses(model, loss_fn, inputs, targets, theta, noise, sigma, signs)
            bad = ~torch.isfinite(losses)
            if bad.any():
                raise ValueError(
                    f"loss_fn returned a non-finite value (NaN or inf) for {int(bad.sum())} "
                    "perturbed models; reduce sigma or check the model"
                )
            losses = losses.to(dtype)
            minus = losses[1] if method == "antithetic" else None
            weights = _weights(method, sigma, losses[0], minus, at_theta, None)
            if plan is not None:
                _fast_reduce(layout, draw, weights, grads)
            else:
                total += weights @ noise

    if plan is not None:
        total = torch.cat([g.reshape(-1) for g in grads])
    return total / num_samples


def _generic_losses(
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


# =========================================================================== zero_order
def _split_argument(
    value: Any, argnum: int
) -> Tuple[List[torch.Tensor], Callable[[List[torch.Tensor]], Any]]:
    """Tensors of one differentiable argument (a tensor, a tuple/list or a dict of tensors)."""

    def check(t: Any, where: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(
                f"argument {argnum}{where} must be a floating-point tensor (or a tuple/list/dict "
                f"of them) to be differentiated by zero_order, got {type(t).__name__}"
            )
        return t

    if isinstance(value, torch.Tensor):
        return [check(value, "")], lambda leaves: leaves[0]
    if isinstance(value, (tuple, list)):
        leaves = [check(t, f"[{k}]") for k, t in enumerate(value)]
        return leaves, lambda new: type(value)(new)
    if isinstance(value, dict):
        keys = list(value)
        leaves = [check(value[k], f"[{k!r}]") for k in keys]
        return leaves, lambda new: dict(zip(keys, new))
    return [check(value, "")], lambda leaves: leaves[0]


class _ZeroOrderFunction(torch.autograd.Function):
    """Forward: f(*args). Backward: grad_output times the ES estimate for the selected tensors."""

    @staticmethod
    def forward(ctx: Any, spec: Dict[str, Any], *leaves: torch.Tensor) -> torch.Tensor:
        out = spec["fn"](*spec["args"], **spec["kwargs"])
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the function decorated by zero_order must return a scalar tensor, got {shape}"
            )
        out = out.detach().reshape(()).clone()
        ctx.spec = spec
        ctx.value = out
        ctx.save_for_backward(*leaves)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        spec, leaves = ctx.spec, ctx.saved_tensors
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in leaves])
        theta = torch.cat([t.detach().reshape(-1).to(dtype) for t in leaves])
        sizes = [t.numel() for t in leaves]

        def f_flat(flat: torch.Tensor) -> torch.Tensor:
            parts = flat.split(sizes)
            new_leaves = [p.view(t.shape).to(t.dtype) for p, t in zip(parts, leaves)]
            args = spec["rebuild"](new_leaves)
            return spec["fn"](*args, **spec["kwargs"])

        cfg = spec["config"]
        with torch.no_grad():
            grad = _es_grad(
                f_flat, theta, cfg["sigma"], cfg["num_samples"], cfg["method"],
                cfg["distribution"], cfg["generator"], cfg["fitness_shaping"],
                cfg["vectorized"], None,
                value_at_x=ctx.value.to(dtype) if cfg["method"] == "forward" else None,
            )
        grad = grad * grad_output.to(dtype)
        grads = [g.view(t.shape).to(t.dtype) for g, t in zip(grad.split(sizes), leaves)]
        return (None, *grads)


def zero_order(
    distribution: Any = None,
    method: str = "naive",
    argnums: Union[int, Tuple[int, ...]] = 0,
    num_samples: int = 1,
    sigma: float = 1.0,
    *,
    generator: Optional[torch.Generator] = None,
    fitness_shaping: Optional[str] = None,
    vectorized: Vectorized = "auto",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    r"""Decorator: make a scalar function's gradient w.r.t. ``args[argnums]`` an ES estimate.

    Same signature, defaults and meaning as ``torchopt.diff.zero_order``:
    ``distribution`` (an object with ``sample(sample_shape)``, e.g.
    ``torch.distributions.Normal(0., 1.)``, or a function of the shape; ``None``
    means standard normal drawn from ``generator``), ``method`` (``"naive"``,
    ``"forward"``, ``"antithetic"``), ``argnums`` (an int or a tuple of ints; each
    such argument is a tensor or a tuple/list/dict of tensors), ``num_samples``
    (draws) and ``sigma``. The decorated function returns ``fn(*args)`` as a
    scalar tensor whose ``.backward()`` / ``torch.autograd.grad`` yields
    ``grad_output`` $\times$ :func:`es_grad` of ``fn`` in the selected tensors
    (all of them perturbed jointly, as one flat vector). ``fn`` is never
    differentiated; the population is vmapped where ``fn`` allows it.

    Unlike TorchOpt 0.7.3, ``"forward"`` is unbiased (it divides by $\sigma$ and
    subtracts $f(x)$ from every sample), and the population is evaluated in one
    vectorized call instead of a Python loop.
    """
    _check_method(method)
    sigma = _check_sigma(sigma)
    _check_count(num_samples, "num_samples")
    _check_shaping(fitness_shaping)
    _check_vectorized(vectorized)
    argnums_tuple = (argnums,) if isinstance(argnums, int) and not isinstance(argnums, bool) else argnums
    if (
        not isinstance(argnums_tuple, tuple)
        or not argnums_tuple
        or any(isinstance(a, bool) or not isinstance(a, int) for a in argnums_tuple)
        or len(set(argnums_tuple)) != len(argnums_tuple)
    ):
        raise ValueError(f"argnums must be an int or a tuple of distinct ints, got {argnums!r}")
    if distribution is not None and not callable(getattr(distribution, "sample", distribution)):
        raise TypeError(
            "distribution must have a sample(sample_shape) method or be a function of the shape"
        )
    config = {
        "distribution": distribution, "method": method, "num_samples": num_samples,
        "sigma": sigma, "generator": generator, "fitness_shaping": fitness_shaping,
        "vectorized": vectorized,
    }

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
            positions = []
            for a in argnums_tuple:
                if not -len(args) <= a < len(args):
                    raise ValueError(
                        f"argnums entry {a} is out of range for {len(args)} positional arguments"
                    )
                positions.append(a % len(args))
            leaves: List[torch.Tensor] = []
            pieces = []
            for pos in positions:
                part, rebuild = _split_argument(args[pos], pos)
                pieces.append((pos, len(part), rebuild))
                leaves += part

            def rebuild_args(new_leaves: List[torch.Tensor]) -> List[Any]:
                new_args, offset = list(args), 0
                for pos, count, rebuild in pieces:
                    new_args[pos] = rebuild(list(new_leaves[offset : offset + count]))
                    offset += count
                return new_args

            spec = {"fn": fn, "args": args, "kwargs": kwargs, "rebuild": rebuild_args, "config": config}
            return _ZeroOrderFunction.apply(spec, *leaves)

        return wrapped

    return decorator


class ZeroOrderModule(nn.Module):
    r"""Base class: an ``nn.Module`` whose ``forward`` gets ES gradients for all its parameters.

    The OOP form of :func:`zero_order`, as TorchOpt's ``ZeroOrderGradientModule``::

        class Net(ZeroOrderModule, method="antithetic", num_samples=100, sigma=0.01):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(32, 1)
            def forward(self, x, y):          # must return a scalar
                return F.mse_loss(self.fc(x), y)
            def sample(self, sample_shape):   # optional; default: standard normal
                return torch.randn(sample_shape)

    ``loss = net(x, y); loss.backward()`` fills every parameter's ``.grad`` with the
    ES estimate (the parameters are perturbed jointly through
    ``torch.func.functional_call``). Class keywords ``method`` (default
    ``"naive"``), ``num_samples`` (1) and ``sigma`` (1.0) follow TorchOpt and are
    inherited by subclasses; set ``self.generator`` to a ``torch.Generator`` to
    seed the default noise.
    """

    _zo_config: Dict[str, Any] = {"method": "naive", "num_samples": 1, "sigma": 1.0}
    generator: Optional[torch.Generator] = None

    def __init_subclass__(
        cls,
        method: Optional[str] = None,
        num_samples: Optional[int] = None,
        sigma: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        config = dict(cls._zo_config)
        if method is not None:
            config["method"] = _check_method(method)
        if num_samples is not None:
            config["num_samples"] = _check_count(num_samples, "num_samples")
        if sigma is not None:
            config["sigma"] = _check_sigma(sigma)
        cls._zo_config = config
        if "forward" in cls.__dict__:
            cls.forward = _zero_order_forward(cls.__dict__["forward"])  # type: ignore[method-assign]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Noise of shape ``sample_shape`` (override for another distribution); default N(0, 1)."""
        return torch.randn(sample_shape, generator=self.generator)


def _zero_order_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a ZeroOrderModule subclass's forward with zero_order over its parameters."""

    @functools.wraps(forward)
    def wrapped(self: ZeroOrderModule, *inputs: Any, **kwargs: Any) -> torch.Tensor:
        if getattr(self, "_zo_inside", False):  # called from functional_call below
            return forward(self, *inputs, **kwargs)
        named = list(self.named_parameters())
        if not named:
            raise ValueError(f"{type(self).__name__} has no parameters to estimate gradients for")
        names = [name for name, _ in named]
        custom_sample = type(self).sample is not ZeroOrderModule.sample

        def call(flat_params: Tuple[torch.Tensor, ...], *args: Any, **kw: Any) -> torch.Tensor:
            previous = self.__dict__.get("_zo_inside", False)
            self.__dict__["_zo_inside"] = True
            try:
                return torch.func.functional_call(self, dict(zip(names, flat_params)), args, kw)
            finally:
                self.__dict__["_zo_inside"] = previous

        cfg = type(self)._zo_config
        decorated = zero_order(
            distribution=self.sample if custom_sample else None,
            method=cfg["method"], argnums=0, num_samples=cfg["num_samples"], sigma=cfg["sigma"],
            generator=None if custom_sample else self.generator,
        )(call)
        return decorated(tuple(p for _, p in named), *inputs, **kwargs)

    return wrapped


# =========================================================================== seed-style helpers
def get_model_weights(model: nn.Module) -> torch.Tensor:
    """All parameters as one flat tensor (a copy, ``named_parameters`` order)."""
    return flatten_params(model)


def set_model_weights(model: nn.Module, w: torch.Tensor) -> None:
    """Copy a flat weight vector (as returned by :func:`get_model_weights`) into the model."""
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    reference = next(model.parameters(), None)
    if reference is not None and w.is_floating_point():
        w = w.to(dtype=reference.dtype, device=reference.device)
    assign_params(model, w)


def ES_grad(  # noqa: N802 (the lab's name)
    model: nn.Module,
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    x_tr: torch.Tensor,
    y_tr: Any,
    sigma: float = 1e-2,
    N: int = 100,  # noqa: N803
    generator: Optional[torch.Generator] = None,
    method: str = "antithetic",
) -> torch.Tensor:
    r"""ES estimate of the gradient of the smoothed loss $\mathbb E_z[L(w + \sigma z)]$ on ``(x_tr, y_tr)``.

    The lab's estimator: with ``method="naive"`` it is
    $\frac{1}{N\sigma}\sum_n L(w + \sigma z_n) z_n$ (equivalently
    $\frac{1}{N\sigma^2}\sum_n L(w + v_n) v_n$ with $v_n = \sigma z_n$); the default
    ``"antithetic"`` has far lower variance. Returns a flat tensor in
    :func:`get_model_weights` order; the model is left unchanged. Vectorized
    through :func:`es_grad_model`.
    """
    return es_grad_model(
        model, loss, x_tr, y_tr, sigma=sigma, num_samples=N, method=method, generator=generator
    )


def ES_step(  # noqa: N802 (the lab's name)
    model: nn.Module,
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    x_tr: torch.Tensor,
    y_tr: Any,
    lr: float,
    sigma: float = 1e-2,
    N: int = 100,  # noqa: N803
    generator: Optional[torch.Generator] = None,
    method: str = "antithetic",
) -> float:
    r"""One ES descent step $w \leftarrow w - \text{lr}\cdot\widehat{\nabla}$ (:func:`ES_grad`); returns the loss before the step."""
    lr = _check_positive(lr, "lr")
    with torch.no_grad():
        before = float(loss(model(x_tr), y_tr))
    grad = ES_grad(model, loss, x_tr, y_tr, sigma=sigma, N=N, generator=generator, method=method)
    set_model_weights(model, get_model_weights(model) - lr * grad)
    return before
