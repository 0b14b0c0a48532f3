r"""The engine of :mod:`gradlab.backprop`: :class:`Node`, the elementary operations, the backward pass.

How the engine works (nodes, closures that add their share to each parent, the topological
order of :func:`backward`) is told in the package docstring, :mod:`gradlab.backprop`.

Example::

    x = Node(torch.randn(8, 4))
    W = Node(torch.randn(3, 4)); b = Node(torch.zeros(3))
    loss = cross_entropy(relu(x @ W.T + b), torch.randint(0, 3, (8,)))
    loss.backward()          # W.grad, b.grad, x.grad are now filled in
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple, Union

import torch

from ..broadcast import unbroadcast

__all__ = [
    "Node",
    "NodeLike",
    "as_node",
    "as_nodes",
    "accumulate",
    "matmul",
    "transpose",
    "add",
    "mul",
    "relu",
    "requ",
    "sigmoid",
    "sum",
    "mean",
    "topological_order",
    "backward",
]

NodeLike = Union["Node", torch.Tensor, float]


class Node:
    """A value in the computational graph, with the gradient of the root w.r.t. it."""

    def __init__(self, value: torch.Tensor, parents: Iterable["Node"] = (), op: str = "") -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"value must be a floating-point tensor, got dtype {value.dtype}")
        parents = tuple(parents)
        for parent in parents:
            if not isinstance(parent, Node):
                raise TypeError(f"parents must be Nodes, got {type(parent).__name__}")
        self.value = value.detach()
        self.parents = parents
        self.op = op
        self.grad: Optional[torch.Tensor] = None
        self._backward: Callable[[], None] = lambda: None

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def __repr__(self) -> str:
        op = f", op={self.op!r}" if self.op else ""
        return f"Node(shape={tuple(self.shape)}{op})"

    def backward(self, grad: Optional[torch.Tensor] = None) -> None:
        """Backpropagate from this node, see :func:`backward`."""
        backward(self, grad)

    # Operator sugar so that formulas read like math.
    def __add__(self, other: NodeLike) -> "Node":
        return add(self, other)

    def __radd__(self, other: NodeLike) -> "Node":
        return add(other, self)

    def __mul__(self, other: NodeLike) -> "Node":
        return mul(self, other)

    def __rmul__(self, other: NodeLike) -> "Node":
        return mul(other, self)

    def __matmul__(self, other: NodeLike) -> "Node":
        return matmul(self, other)

    def __rmatmul__(self, other: NodeLike) -> "Node":
        return matmul(other, self)

    @property
    def T(self) -> "Node":
        return transpose(self)

    def relu(self) -> "Node":
        return relu(self)

    def requ(self) -> "Node":
        return requ(self)

    def sigmoid(self) -> "Node":
        return sigmoid(self)

    def sum(self) -> "Node":
        return sum(self)

    def mean(self) -> "Node":
        return mean(self)


def as_node(x: NodeLike, name: str) -> Node:
    """Wrap a tensor as a constant leaf node; pass nodes through."""
    if isinstance(x, Node):
        return x
    if isinstance(x, torch.Tensor):
        return Node(x)
    raise TypeError(f"{name} must be a Node, a torch.Tensor or a number, got {type(x).__name__}")


def as_nodes(a: NodeLike, b: NodeLike) -> Tuple[Node, Node]:
    """Two operands as nodes; a Python number becomes a constant with the other's dtype and device."""
    if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, Node):
        a = torch.tensor(float(a), dtype=b.value.dtype, device=b.value.device)
    if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, Node):
        b = torch.tensor(float(b), dtype=a.value.dtype, device=a.value.device)
    return as_node(a, "a"), as_node(b, "b")


def accumulate(node: Node, grad: torch.Tensor) -> None:
    """``node.grad += grad`` (creating it on first use)."""
    node.grad = grad.clone() if node.grad is None else node.grad + grad


# ---------------------------------------------------------------- operations


def matmul(a: NodeLike, b: NodeLike) -> Node:
    r"""$C = AB$ (batched like ``torch.matmul`` for >= 2-D operands).

    VJP: $\bar A = \bar C B^\top$, $\bar B = A^\top \bar C$ (summed over broadcast batch dims).
    """
    a, b = as_node(a, "a"), as_node(b, "b")
    if a.value.dim() < 2 or b.value.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul needs a of shape (..., n, k) and b of shape (..., k, m), "
            f"got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    with torch.no_grad():
        out = Node(a.value @ b.value, (a, b), "matmul")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, unbroadcast(out.grad @ b.value.transpose(-1, -2), a.shape))
            accumulate(b, unbroadcast(a.value.transpose(-1, -2) @ out.grad, b.shape))

    out._backward = _backward
    return out


def transpose(a: NodeLike) -> Node:
    """Swap the last two dimensions. VJP: transpose the gradient back."""
    a = as_node(a, "a")
    if a.value.dim() < 2:
        raise ValueError(f"transpose needs a tensor with >= 2 dims, got shape {tuple(a.shape)}")
    out = Node(a.value.transpose(-1, -2), (a,), "transpose")

    def _backward() -> None:
        accumulate(a, out.grad.transpose(-1, -2))

    out._backward = _backward
    return out


def add(a: NodeLike, b: NodeLike) -> Node:
    r"""$c = a + b$ with broadcasting. VJP: $\bar a = \mathrm{unbroadcast}(\bar c)$, same for $b$."""
    a, b = as_nodes(a, b)
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"add: shapes of a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast"
        ) from None
    with torch.no_grad():
        out = Node(a.value + b.value, (a, b), "add")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, unbroadcast(out.grad, a.shape))
            accumulate(b, unbroadcast(out.grad, b.shape))

    out._backward = _backward
    return out


def mul(a: NodeLike, b: NodeLike) -> Node:
    r"""Elementwise $c = a \odot b$ with broadcasting.

    VJP: $\bar a = \mathrm{unbroadcast}(\bar c \odot b)$, $\bar b = \mathrm{unbroadcast}(\bar c \odot a)$.
    """
    a, b = as_nodes(a, b)
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"mul: shapes of a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast"
        ) from None
    with torch.no_grad():
        out = Node(a.value * b.value, (a, b), "mul")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, unbroadcast(out.grad * b.value, a.shape))
            accumulate(b, unbroadcast(out.grad * a.value, b.shape))

    out._backward = _backward
    return out


def relu(a: NodeLike) -> Node:
    r"""$\max(a, 0)$. VJP: $\bar a = \bar c \cdot 1[a > 0]$ (0 at the kink)."""
    a = as_node(a, "a")
    with torch.no_grad():
        mask = (a.value > 0).to(a.value.dtype)
        out = Node(a.value * mask, (a,), "relu")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, out.grad * mask)

    out._backward = _backward
    return out


def requ(a: NodeLike) -> Node:
    r"""$1[a > 0]\, a^2$. VJP: $\bar a = \bar c \cdot 2a\,1[a > 0]$."""
    a = as_node(a, "a")
    with torch.no_grad():
        positive = a.value.clamp(min=0)
        out = Node(positive * positive, (a,), "requ")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, out.grad * 2 * positive)

    out._backward = _backward
    return out


def sigmoid(a: NodeLike) -> Node:
    r"""$s = 1/(1 + e^{-a})$. VJP: $\bar a = \bar s \cdot s(1 - s)$."""
    a = as_node(a, "a")
    with torch.no_grad():
        s = torch.sigmoid(a.value)
        out = Node(s, (a,), "sigmoid")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, out.grad * s * (1 - s))

    out._backward = _backward
    return out


def sum(a: NodeLike) -> Node:  # noqa: A001 - the name of the math
    r"""$s = \sum_i a_i$ (a scalar). VJP: $\bar a = \bar s \cdot \mathbf 1$."""
    a = as_node(a, "a")
    with torch.no_grad():
        out = Node(a.value.sum(), (a,), "sum")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, out.grad.expand(a.shape))

    out._backward = _backward
    return out


def mean(a: NodeLike) -> Node:
    r"""$m = \frac1N \sum_i a_i$. VJP: $\bar a = \bar m \cdot \mathbf 1 / N$."""
    a = as_node(a, "a")
    with torch.no_grad():
        out = Node(a.value.mean(), (a,), "mean")

    def _backward() -> None:
        with torch.no_grad():
            accumulate(a, out.grad.expand(a.shape) / a.value.numel())

    out._backward = _backward
    return out


# ------------------------------------------------------------------ traversal


def topological_order(root: Node) -> List[Node]:
    """Every node reachable from ``root`` exactly once, parents before children.

    Depth-first search, appending a node after all of its parents (post-order).
    Iterative instead of recursive so that long chains do not hit Python's
    recursion limit.
    """
    if not isinstance(root, Node):
        raise TypeError(f"root must be a Node, got {type(root).__name__}")
    order: List[Node] = []
    visited = set()
    stack: List[Tuple[Node, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in reversed(node.parents):
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


def backward(root: Node, grad: Optional[torch.Tensor] = None) -> None:
    r"""Fill ``.grad`` $= \partial\,\text{root}/\partial\,\text{node}$ for every node in the graph.

    ``root.grad`` is seeded with ``grad`` (default: ones, i.e. the gradient of
    ``root.sum()``). Each call starts from scratch: the gradients of all nodes in
    the graph are reset first (unlike ``torch``, which accumulates into leaves).
    """
    order = topological_order(root)
    if grad is None:
        grad = torch.ones_like(root.value)
    elif not isinstance(grad, torch.Tensor):
        raise TypeError(f"grad must be a torch.Tensor or None, got {type(grad).__name__}")
    elif grad.shape != root.shape:
        raise ValueError(
            f"grad must have the root's shape {tuple(root.shape)}, got {tuple(grad.shape)}"
        )
    for node in order:
        node.grad = None
    root.grad = grad.detach().to(dtype=root.value.dtype, device=root.value.device).clone()
    for node in reversed(order):
        if node.grad is not None:  # defensive: every op accumulates into all its parents
            node._backward()
    for node in order:
        if node.grad is None:
            node.grad = torch.zeros_like(node.value)


