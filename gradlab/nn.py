"""``torch.nn`` modules built on gradlab's custom autograd Functions.

An ``autograd.Function`` is not an ``nn.Module``: it has no parameters and cannot
be placed in ``nn.Sequential``. These thin wrappers make :mod:`gradlab.autograd`
drop-in replacements for ``torch.nn.ReLU`` and ``torch.nn.Linear``, e.g.
``build_mlp(64, [32], 10, nonlinearity_module=gradlab.nn.ReQU)``.

Each class says what it computes in the class attribute ``gradlab_layer``
(``"affine"`` or ``"elementwise"``): a plain description that other code may read (the
population fast path of :mod:`gradlab.es.fastpath` does); this module imports no estimator.

``gradlab.nn.ZeroOrderModule`` is a deprecated alias of :class:`gradlab.es.layer.ZeroOrderModule`
(set by the package, kept for the book's Chapter 3 code); use ``gradlab.ZeroOrderModule``.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from .autograd import linear, my_relu, requ
from .checks import check_int

__all__ = ["ReLU", "ReQU", "Linear"]


class ReLU(nn.Module):
    r"""Elementwise $\max(x, 0)$ through :class:`gradlab.autograd.MyReLU`."""

    gradlab_layer = "elementwise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return my_relu(x)


class ReQU(nn.Module):
    r"""Elementwise $1[x > 0]\, x^2$ through :class:`gradlab.autograd.ReQU`."""

    gradlab_layer = "elementwise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return requ(x)


class Linear(nn.Module):
    r"""Affine layer $y = x W^\top + b$ through :class:`gradlab.autograd.LinearFunction`.

    Same signature, parameter names (``weight``, ``bias``), shapes and default
    initialization as ``torch.nn.Linear``: with the same random state both
    produce identical parameters.
    """

    gradlab_layer = "affine"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Optional[Any] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        self.in_features = in_features
        self.out_features = out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Initialize as torch.nn.Linear does.

        Weight: Kaiming-uniform with $a = \sqrt 5$, i.e. $U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})$;
        bias: $U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})$.
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

