r"""The fast path of :func:`gradlab.es.population.es_grad_model` for ``nn.Sequential`` MLPs.

For a Sequential of ``Linear`` layers and elementwise activations, a population
of perturbed models $\theta + s\sigma\varepsilon_m$ is evaluated layer by layer with
batched matmuls instead of ``functional_call`` + ``vmap``:

* :func:`fast_plan` decides whether a model qualifies and lists its layers;
* :func:`plain_forward` evaluates the plan at $\theta$ without hooks: :func:`fast_plan`
  compares it with ``model(inputs)`` so that a forward hook or pre-hook (on a layer, or
  registered globally) that changes any value is detected and the generic path is taken;
* :class:`NoiseLayout` says where each layer's noise (dense, or low-rank factors)
  sits in one flat draw;
* :func:`fast_losses` computes every member's loss for one chunk of draws, reusing
  the buffers of a :class:`Workspace`;
* :func:`fast_reduce` adds $\sum_m w_m \varepsilon_m$ of the chunk to the gradient,
  layer by layer, without materialising $\varepsilon$.

**Which layers, and hooks.** A layer qualifies by its type: ``torch.nn.Linear``, the
elementwise activations of ``torch.nn`` listed below, a leading ``nn.Flatten``, or any
class that declares what it computes with the class attribute ``gradlab_layer``
(``"affine"``: $y = xW^\top + b$ from its ``weight`` and ``bias``; ``"elementwise"``),
which is how :mod:`gradlab.nn`'s layers opt in (this module does not import them).
Hooks cannot be listed through a public API of torch, so none is read: the fast path
calls each layer's ``forward`` directly (no hook runs on the population), and before it
is taken the plan's value at $\theta$ is compared with ``model(inputs)``, which runs
every hook; any difference (a hook or a pre-hook that changes a value, a layer whose
``gradlab_layer`` claim is false) sends the call to the generic path, where hooks run for
every member. A hook that only observes (it changes no value) gives the same numbers
either way but is called once, not once per member, on the fast path: pass
``fast=False`` when it must see every member.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checks import as_scalar, as_scalar_batch

__all__ = [
    "fast_plan",
    "plain_forward",
    "NoiseLayout",
    "Workspace",
    "fast_losses",
    "fast_reduce",
    "member_losses",
    "population_cross_entropy",
]

LINEAR = (nn.Linear,)
ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid,
    nn.Softsign, nn.Tanhshrink, nn.Identity,
)


def is_linear(module: nn.Module) -> bool:
    """``torch.nn.Linear`` or a class declaring ``gradlab_layer = "affine"``."""
    return type(module) in LINEAR or getattr(type(module), "gradlab_layer", None) == "affine"


def is_elementwise(module: nn.Module) -> bool:
    """A known elementwise activation, an inactive dropout, or ``gradlab_layer = "elementwise"``."""
    if type(module) in ELEMENTWISE or getattr(type(module), "gradlab_layer", None) == "elementwise":
        return True
    return type(module) is nn.Dropout and (not module.training or module.p == 0)


def fast_plan(model: nn.Module, inputs: torch.Tensor) -> Optional[List[Tuple[str, Any]]]:
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
        if is_linear(module):
            plan.append(("linear", module))
            expected += [module.weight] + ([module.bias] if module.bias is not None else [])
        elif is_elementwise(module):
            plan.append(("act", module))
        elif type(module) is nn.Flatten and index == 0 and module.end_dim == -1:
            plan.append(("flatten", module))
        else:
            return None
    params = list(model.parameters())
    if len(params) != len(expected) or any(p is not q for p, q in zip(params, expected)):
        return None
    first = plan[0][1].forward(inputs) if plan[0][0] == "flatten" else inputs
    if first.dim() != 2 or not any(kind == "linear" for kind, _ in plan):
        return None
    with torch.no_grad():
        hooked, plain = model(inputs), plain_forward(plan, inputs)
    if not isinstance(hooked, torch.Tensor) or hooked.shape != plain.shape:
        return None
    if not torch.allclose(hooked, plain, rtol=1e-5, atol=1e-6):
        return None  # a hook (or a false gradlab_layer claim) changes the values
    return plan


def plain_forward(plan: List[Tuple[str, Any]], inputs: torch.Tensor) -> torch.Tensor:
    """The plan at the model's own parameters, through each layer's ``forward`` (no hook runs)."""
    h = inputs
    for kind, module in plan:
        h = nn.functional.linear(h, module.weight, module.bias) if kind == "linear" else module.forward(h)
    return h


class NoiseLayout:
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


def population_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy of every member at once: $\frac1B\sum_b \big(\log\sum_k e^{o_{bk}} - o_{b,y_b}\big)$.

    The same numbers as ``vmap(F.cross_entropy)`` up to rounding, about 10x faster on
    CPU for few classes (torch's log_softmax kernel is slow for short rows).
    """
    top = logits.amax(-1, keepdim=True)
    log_norm = (logits - top).exp_().sum(-1).log_() + top.squeeze(-1)
    index = targets.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return (log_norm - logits.gather(-1, index).squeeze(-1)).mean(-1)


def member_losses(loss_fn: Callable, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
    """``loss_fn(outputs[m], targets)`` for every population member m, vmapped when possible."""
    if _is_plain_cross_entropy(loss_fn, outputs, targets):
        return population_cross_entropy(outputs, targets)
    try:
        losses = torch.func.vmap(loss_fn, in_dims=(0, None))(outputs, targets)
    except Exception:  # noqa: BLE001
        # Some losses cannot be vmapped (e.g. they call .item()); loop over members then.
        losses = torch.stack([as_scalar(loss_fn(out, targets), "loss_fn") for out in outputs])
    return as_scalar_batch(losses, outputs.shape[0], "loss_fn")


class Workspace:
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
    return module.forward(h)  # forward, not __call__: no hook runs on the population


def fast_losses(
    plan: List[Tuple[str, Any]],
    layout: NoiseLayout,
    draw: torch.Tensor,
    inputs: torch.Tensor,
    loss_fn: Callable,
    targets: Any,
    sigma: float,
    signs: Tuple[float, ...],
    workspace: Workspace,
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
    losses = member_losses(loss_fn, h.reshape(groups * chunk, *h.shape[2:]), targets)
    return losses.view(groups, chunk)


def fast_reduce(
    layout: NoiseLayout, draw: torch.Tensor, weights: torch.Tensor, grads: List[torch.Tensor]
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
