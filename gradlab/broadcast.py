"""Shapes shared by the exact-gradient modules: undoing broadcasting in a backward pass."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["unbroadcast"]


def unbroadcast(grad: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Sum ``grad`` back to ``shape``, undoing broadcasting.

    Broadcasting copies an operand along new leading dimensions and along
    dimensions of size 1; the gradient of a copy is the sum over the copies.
    """
    shape = tuple(shape)
    while grad.dim() > len(shape):
        grad = grad.sum(dim=0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim=dim, keepdim=True)
    return grad
