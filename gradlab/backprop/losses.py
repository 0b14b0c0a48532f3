r"""Losses and MLPs on the engine of :mod:`gradlab.backprop.engine`.

:func:`log_softmax`, :func:`cross_entropy` and :func:`mse` are nodes with fused, stable
vector-Jacobian products; :func:`mlp_forward` runs an MLP given as ``(W, b)`` nodes and
:func:`mlp_layers` copies the Linear layers of a ``torch.nn`` model into such nodes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..checks import check_choice, check_module
from .engine import Node, NodeLike, accumulate, as_node, relu, requ, sigmoid

__all__ = ["log_softmax", "cross_entropy", "mse", "mlp_forward", "mlp_layers"]


def log_softmax(a: NodeLike, dim: int = -1) -> Node:
    r"""$\ell_i = a_i - \log\sum_j e^{a_j}$ along ``dim``.

    VJP: $\bar a = \bar\ell - \mathrm{softmax}(a) \sum_j \bar\ell_j$.
    """
    a = as_node(a, "a")
    if a.value.dim() == 0:
        raise ValueError("log_softmax needs a tensor with at least 1 dim, got a scalar")
    with torch.no_grad():
        logp = a.value - torch.logsumexp(a.value, dim=dim, keepdim=True)
        out = Node(logp, (a,), "log_softmax")

    def _backward() -> None:
        with torch.no_grad():
            g = out.grad
            accumulate(a, g - logp.exp() * g.sum(dim=dim, keepdim=True))

    out._backward = _backward
    return out


def cross_entropy(logits: NodeLike, targets: torch.Tensor) -> Node:
    r"""Mean cross-entropy $-\frac1B\sum_n \log \mathrm{softmax}(z_n)_{y_n}$.

    ``logits`` has shape ``(B, C)``, ``targets`` holds class indices of shape ``(B,)``.
    VJP (fused, numerically stable): $\bar z = \bar L\,(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / B$.
    """
    logits = as_node(logits, "logits")
    if logits.value.dim() != 2:
        raise ValueError(f"logits must have shape (B, C), got {tuple(logits.shape)}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    batch, num_classes = logits.shape
    if targets.shape != (batch,):
        raise ValueError(
            f"targets must have shape (B,) = ({batch},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if batch > 0 and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}), got values outside")
    with torch.no_grad():
        logp = logits.value - torch.logsumexp(logits.value, dim=1, keepdim=True)
        rows = torch.arange(batch, device=logp.device)
        targets = targets.to(device=logp.device, dtype=torch.long)
        out = Node(-logp[rows, targets].mean(), (logits,), "cross_entropy")

    def _backward() -> None:
        with torch.no_grad():
            grad = logp.exp()
            grad[rows, targets] -= 1
            accumulate(logits, out.grad * grad / batch)

    out._backward = _backward
    return out


def mse(pred: NodeLike, target: NodeLike) -> Node:
    r"""Mean squared error $\frac1N\sum_i (p_i - t_i)^2$; shapes must match exactly.

    VJP: $\bar p = \bar L \cdot 2(p - t)/N$, $\bar t = -\bar p$.
    (No broadcasting on purpose: ``(B, 1)`` against ``(B,)`` is a classic silent bug.)
    """
    pred, target = as_node(pred, "pred"), as_node(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"mse: pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )
    with torch.no_grad():
        diff = pred.value - target.value
        out = Node((diff * diff).mean(), (pred, target), "mse")

    def _backward() -> None:
        with torch.no_grad():
            grad = out.grad * 2 * diff / diff.numel()
            accumulate(pred, grad)
            accumulate(target, -grad)

    out._backward = _backward
    return out


ACTIVATIONS = {"relu": relu, "requ": requ, "sigmoid": sigmoid}


def mlp_forward(
    x: NodeLike,
    layers: Sequence[Tuple[Node, Optional[Node]]],
    activation: str = "relu",
) -> Node:
    r"""Forward pass of an MLP in the engine: $h_{k+1} = \sigma(h_k W_k^\top + b_k)$.

    ``layers`` is a list of ``(W, b)`` nodes in ``torch.nn.Linear`` layout
    (``W`` of shape ``(out, in)``, ``b`` of shape ``(out,)`` or ``None``).
    ``activation`` (``"relu"``, ``"requ"`` or ``"sigmoid"``) is applied between
    layers, not after the last one, so the output is the logits.
    """
    check_choice(activation, "activation", sorted(ACTIVATIONS))
    if len(layers) == 0:
        raise ValueError("layers must contain at least one (W, b) pair")
    h = as_node(x, "x")
    for index, (W, b) in enumerate(layers):
        h = h @ as_node(W, f"layers[{index}][0]").T
        if b is not None:
            h = h + as_node(b, f"layers[{index}][1]")
        if index < len(layers) - 1:
            h = ACTIVATIONS[activation](h)
    return h


def mlp_layers(model: torch.nn.Module) -> List[Tuple[Node, Optional[Node]]]:
    """Copy the weights of every Linear-like layer of ``model`` (in order) into leaf nodes.

    A layer is Linear-like when it has a 2-D ``weight`` parameter and a ``bias``
    attribute (``torch.nn.Linear`` and ``gradlab.nn.Linear`` both are).
    """
    check_module(model)
    layers = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and hasattr(module, "bias"):
            bias = module.bias
            W = Node(weight.detach().clone())
            b = None if bias is None else Node(bias.detach().clone())
            layers.append((W, b))
    if not layers:
        raise ValueError("model has no Linear-like layer (2-D weight and a bias attribute)")
    return layers
