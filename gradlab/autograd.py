r"""Custom ``torch.autograd.Function``\ s: ReLU, ReQU and an affine (linear) layer.

Each Function states its forward map and the vector-Jacobian product (VJP) that
``backward`` returns. ``backward`` receives ``grad_output`` $= \partial L / \partial y$
and must return $\partial L / \partial x$ for every input of ``forward``
(``None`` for inputs that need no gradient).

Subgradient convention at the kink $x = 0$: both ``MyReLU`` and ``ReQU`` use the
derivative $0$ there, exactly as ``torch.relu`` does. For ReQU this is the true
derivative ($2x = 0$ at $x = 0$). For ReLU it is a choice: any value in $[0, 1]$
is a valid subgradient. Note that ``torch.autograd.gradcheck`` uses central
differences, which see $(\mathrm{relu}(\epsilon) - \mathrm{relu}(-\epsilon)) / 2\epsilon = 1/2$
at $0$, so gradcheck of *any* ReLU (``torch.relu`` included) reports a mismatch at
an input exactly equal to $0$.

All backward formulas are written with differentiable torch operations, so the
Functions also support double backward (``torch.autograd.gradgradcheck``) away
from the kink.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .broadcast import unbroadcast
from .checks import check_float_tensor

__all__ = ["MyReLU", "ReQU", "LinearFunction", "my_relu", "requ", "linear"]


class MyReLU(torch.autograd.Function):
    r"""Rectified linear unit $z = \max(x, 0)$.

    Backward: $\partial L/\partial x = \partial L/\partial z \cdot 1[x > 0]$
    (derivative $0$ at $x = 0$, the same convention as ``torch.relu``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Optional[torch.Tensor]:
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None
        return grad_output * (x > 0).to(grad_output.dtype)


class ReQU(torch.autograd.Function):
    r"""Rectified quadratic unit $z = 1[x > 0]\, x^2$.

    Backward: $\partial L/\partial x = \partial L/\partial z \cdot 2x\, 1[x > 0]$,
    which is $0$ at $x = 0$ (the function is differentiable there).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        ctx.save_for_backward(x)
        positive = x.clamp(min=0)
        return positive * positive

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Optional[torch.Tensor]:
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None
        return grad_output * 2 * x * (x > 0).to(x.dtype)


class LinearFunction(torch.autograd.Function):
    r"""Affine map $y = x W^\top + b$ with $W$ of shape ``(out, in)``.

    ``x`` has shape ``(..., in)`` (any number of batch dimensions), ``b`` is
    optional and has shape ``(out,)`` or any shape that broadcasts to
    ``(..., out)`` without enlarging it. With $G = \partial L/\partial y$
    flattened to ``(N, out)`` and $X$ flattened to ``(N, in)``:

    $$\begin{gathered}
      \frac{\partial L}{\partial x} = G W, \qquad
      \frac{\partial L}{\partial W} = G^\top X, \\
      \frac{\partial L}{\partial b} = \textstyle\sum_{\text{broadcast dims}} G.
      \end{gathered}$$
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        _check_linear_inputs(x, W, b)
        ctx.save_for_backward(x, W)
        ctx.bias_shape = None if b is None else b.shape
        y = x @ W.T
        if b is not None:
            y = y + b
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        x, W = ctx.saved_tensors
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output @ W
        if ctx.needs_input_grad[1]:
            out_features, in_features = W.shape
            G = grad_output.reshape(-1, out_features)
            X = x.reshape(-1, in_features)
            grad_W = G.T @ X
        if len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]:
            grad_b = unbroadcast(grad_output, ctx.bias_shape)
        return grad_x, grad_W, grad_b


def _check_linear_inputs(x: Any, W: Any, b: Any) -> None:
    """Validate the arguments of :class:`LinearFunction` (types, dtypes and shapes)."""
    check_float_tensor(x, "x")
    check_float_tensor(W, "W")
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D with shape (out, in), got shape {tuple(W.shape)}")
    if x.dim() < 1 or x.shape[-1] != W.shape[1]:
        raise ValueError(
            f"x must have shape (..., in) with in = W.shape[1] = {W.shape[1]}, "
            f"got x shape {tuple(x.shape)} and W shape {tuple(W.shape)}"
        )
    if x.dtype != W.dtype:
        raise TypeError(f"x and W must share a dtype, got x {x.dtype} and W {W.dtype}")
    if b is None:
        return
    check_float_tensor(b, "b")
    if b.dtype != W.dtype:
        raise TypeError(f"b must have W's dtype {W.dtype}, got {b.dtype}")
    out_shape = x.shape[:-1] + (W.shape[0],)
    try:
        broadcast = torch.broadcast_shapes(out_shape, b.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != out_shape:
        raise ValueError(
            f"b must have shape (out,) = ({W.shape[0]},) or broadcast to the output shape "
            f"{tuple(out_shape)}, got b shape {tuple(b.shape)}"
        )


def my_relu(x: torch.Tensor) -> torch.Tensor:
    """Apply :class:`MyReLU` elementwise."""
    return MyReLU.apply(x)


def requ(x: torch.Tensor) -> torch.Tensor:
    """Apply :class:`ReQU` elementwise."""
    return ReQU.apply(x)


def linear(x: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Apply :class:`LinearFunction`: ``x @ W.T + b``."""
    if b is None:
        return LinearFunction.apply(x, W)
    return LinearFunction.apply(x, W, b)
