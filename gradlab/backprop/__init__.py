r"""A tiny reverse-mode automatic differentiation engine on plain torch tensors.

In the spirit of micrograd, but every value is a tensor and no ``torch.autograd``
is used: values are stored detached and every computation runs under
``torch.no_grad()``.

A :class:`Node` holds a ``value``, the ``parents`` it was computed from, the name
of the ``op`` that produced it, and a ``_backward`` closure. When called, the
closure reads ``node.grad`` $= \partial L/\partial\,\text{node}$ and *adds* each
parent's share (a vector-Jacobian product) to ``parent.grad``. Adding, not
assigning, is what makes a node used twice (a "diamond") receive the sum of both
contributions.

:func:`backward` orders the graph topologically (parents before children), seeds
the root with ones and calls the closures in reverse order, so each node's
gradient is complete before it is propagated to its parents.

The package: :mod:`gradlab.backprop.engine` (nodes, elementary operations, the backward
pass) and :mod:`gradlab.backprop.losses` (losses and MLPs built on them).

Example::

    x = Node(torch.randn(8, 4))
    W = Node(torch.randn(3, 4)); b = Node(torch.zeros(3))
    loss = cross_entropy(relu(x @ W.T + b), torch.randint(0, 3, (8,)))
    loss.backward()          # W.grad, b.grad, x.grad are now filled in
"""
from __future__ import annotations

from .engine import (
    Node,
    add,
    backward,
    matmul,
    mean,
    mul,
    relu,
    requ,
    sigmoid,
    sum,
    topological_order,
    transpose,
    unbroadcast,
)
from .losses import cross_entropy, log_softmax, mlp_forward, mlp_layers, mse

__all__ = [
    "Node",
    "matmul",
    "transpose",
    "add",
    "mul",
    "relu",
    "requ",
    "sigmoid",
    "log_softmax",
    "cross_entropy",
    "mse",
    "sum",
    "mean",
    "unbroadcast",
    "topological_order",
    "backward",
    "mlp_forward",
    "mlp_layers",
]
