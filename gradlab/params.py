r"""Flatten the parameters (and gradients) of a module into one vector $\theta \in \mathbb R^d$, and back.

Zeroth-order estimators (finite differences, evolution strategies) perturb
$\theta$ as one vector; these helpers convert between that vector and a
module's named parameters. The order is always that of
``model.named_parameters()`` (the same as ``torch.nn.utils.parameters_to_vector``).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from .checks import check_module

__all__ = [
    "flatten_params",
    "unflatten_params",
    "assign_params",
    "flatten_grads",
    "assign_grads",
    "param_shapes",
]


def _check_vector(vec: object, model: nn.Module) -> None:
    """``vec`` must be a 1-D floating tensor with one entry per parameter scalar."""
    if not isinstance(vec, torch.Tensor):
        raise TypeError(f"vec must be a torch.Tensor, got {type(vec).__name__}")
    if not vec.is_floating_point():
        raise TypeError(f"vec must be a floating-point tensor, got dtype {vec.dtype}")
    expected = sum(p.numel() for p in model.parameters())
    if vec.dim() != 1 or vec.numel() != expected:
        raise ValueError(
            f"vec must be 1-D with {expected} entries (the model's parameter count), "
            f"got shape {tuple(vec.shape)}"
        )


def param_shapes(model: nn.Module) -> List[Tuple[str, torch.Size, int]]:
    """``(name, shape, numel)`` of every parameter, in ``named_parameters()`` order."""
    check_module(model)
    return [(name, p.shape, p.numel()) for name, p in model.named_parameters()]


def flatten_params(model: nn.Module) -> torch.Tensor:
    r"""$\theta$: all parameters concatenated into a new 1-D tensor (a detached copy)."""
    check_module(model)
    params = [p.detach().reshape(-1) for p in model.parameters()]
    if not params:
        return torch.empty(0)
    return torch.cat(params)


def unflatten_params(vec: torch.Tensor, model: nn.Module) -> Dict[str, torch.Tensor]:
    """Split ``vec`` into ``{name: tensor}`` views with each parameter's shape.

    The tensors are views of ``vec`` (no copy), so autograd flows from them back
    to ``vec``; the dict plugs into ``torch.func.functional_call(model, params, x)``.
    """
    check_module(model)
    _check_vector(vec, model)
    out: Dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, numel in param_shapes(model):
        out[name] = vec[offset : offset + numel].view(shape)
        offset += numel
    return out


def assign_params(model: nn.Module, vec: torch.Tensor) -> None:
    """Copy ``vec`` into the model's parameters in place (under ``torch.no_grad``)."""
    check_module(model)
    _check_vector(vec, model)
    with torch.no_grad():
        for p, value in zip(model.parameters(), unflatten_params(vec, model).values()):
            p.copy_(value)


def flatten_grads(model: nn.Module) -> torch.Tensor:
    r"""$\nabla_\theta$: all ``.grad`` concatenated (zeros where a gradient is ``None``)."""
    check_module(model)
    grads = [
        (torch.zeros_like(p) if p.grad is None else p.grad.detach()).reshape(-1)
        for p in model.parameters()
    ]
    if not grads:
        return torch.empty(0)
    return torch.cat(grads)


def assign_grads(model: nn.Module, vec: torch.Tensor, accumulate: bool = False) -> None:
    """Write ``vec`` into the parameters' ``.grad`` (added to existing ones if ``accumulate``).

    Use it to hand an estimated gradient to any ``torch.optim`` optimizer.
    """
    check_module(model)
    _check_vector(vec, model)
    with torch.no_grad():
        for p, value in zip(model.parameters(), unflatten_params(vec, model).values()):
            value = value.to(dtype=p.dtype, device=p.device)
            if accumulate and p.grad is not None:
                p.grad.add_(value)
            else:
                p.grad = value.clone()
