r"""Finite differences and forward gradients: derivatives from function values.

For a scalar function $f:\mathbb R^d \to \mathbb R$ and a step $h > 0$,

* forward difference:  $\partial_i f(x) \approx \dfrac{f(x + h e_i) - f(x)}{h}$, error $O(h)$;
* backward difference: $\partial_i f(x) \approx \dfrac{f(x) - f(x - h e_i)}{h}$, error $O(h)$;
* central difference:  $\partial_i f(x) \approx \dfrac{f(x + h e_i) - f(x - h e_i)}{2h}$, error $O(h^2)$.

A full gradient costs $d + 1$ evaluations (one-sided) or $2d$ (central).

**Choosing the step.** In floating point with machine epsilon $\varepsilon$, each
evaluation of $f$ carries a relative rounding error of about $\varepsilon$, so the
quotient carries a round-off error of about $\varepsilon |f| / h$, while the
truncation error grows with $h$:

* one-sided: $\tfrac{h}{2}|f''| + \tfrac{2\varepsilon |f|}{h}$ is smallest at
  $h^\star = 2\sqrt{\varepsilon |f| / |f''|} \sim \sqrt{\varepsilon}$, total error $\sim\sqrt{\varepsilon}$;
* central: $\tfrac{h^2}{6}|f'''| + \tfrac{\varepsilon |f|}{h}$ is smallest at
  $h^\star = (3\varepsilon |f| / |f'''|)^{1/3} \sim \varepsilon^{1/3}$, total error $\sim\varepsilon^{2/3}$.

With $f$ and its derivatives of order one, gradlab's default is therefore
$h_i = \varepsilon^{1/2}\max(1, |x_i|)$ (forward/backward) and
$h_i = \varepsilon^{1/3}\max(1, |x_i|)$ (central), where $\varepsilon$ is the
machine epsilon of ``x.dtype`` (float32: $h \approx 3.5\cdot10^{-4}$ / $4.9\cdot10^{-3}$;
float64: $h \approx 1.5\cdot10^{-8}$ / $6.1\cdot10^{-6}$). The factor $\max(1, |x_i|)$
makes the step relative for large coordinates, where $x_i + h$ would otherwise
round back to $x_i$. The step actually taken is the representable difference
$(x_i + h) - (x_i - h)$, not $2h$, which removes one more rounding error.

**Forward gradients.** With a random tangent $v \sim \mathcal N(0, I)$, one
Jacobian-vector product (``torch.func.jvp``, forward-mode AD, no backward pass)
gives $\nabla f(x)^\top v$, and since $\mathbb E[v v^\top] = I$,
$(\nabla f(x)^\top v)\, v$ is an unbiased estimate of $\nabla f(x)$.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch

from . import rng
from .batch import Vectorized, check_vectorized, evaluate_batch
from .checks import as_scalar, check_choice, check_count, check_positive, check_tensor

# evaluate_batch lives in gradlab.batch; it stays importable from here for older code.
__all__ = ["SCHEMES", "fd_grad", "fd_directional", "forward_grad", "default_eps", "evaluate_batch"]

SCHEMES = ("forward", "backward", "central")

# Elements per batch of perturbed points when no chunk size is given (32 MB in float32).
_POINTS_BUDGET = 2**23


def default_eps(dtype: torch.dtype, scheme: str = "central") -> float:
    r"""Default relative step: $\varepsilon^{1/3}$ for ``"central"``, $\varepsilon^{1/2}$ otherwise.

    $\varepsilon$ is ``torch.finfo(dtype).eps``; see the module docstring for the
    truncation/round-off trade-off behind these values.
    """
    check_choice(scheme, "scheme", SCHEMES)
    machine_eps = torch.finfo(dtype).eps
    return machine_eps ** (1.0 / 3.0) if scheme == "central" else machine_eps**0.5


# --------------------------------------------------------------------------- finite differences
def _steps(x: torch.Tensor, eps: Optional[float], scheme: str) -> torch.Tensor:
    eps = default_eps(x.dtype, scheme) if eps is None else check_positive(eps, "eps")
    return eps * x.abs().clamp(min=1.0)


def fd_grad(
    f: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    eps: Optional[float] = None,
    scheme: str = "central",
    *,
    chunk_size: Optional[int] = None,
    vectorized: Vectorized = "auto",
) -> torch.Tensor:
    r"""Gradient of a scalar function by finite differences, one coordinate at a time.

    $\hat g_i = \dfrac{f(x^{+}_{(i)}) - f(x^{-}_{(i)})}{x^{+}_i - x^{-}_i}$ where $x^{\pm}_{(i)}$
    is $x$ with coordinate $i$ moved to $x_i \pm h_i$ (central), to $x_i + h_i$ / $x_i$
    (forward) or to $x_i$ / $x_i - h_i$ (backward), $h_i = \text{eps}\cdot\max(1, |x_i|)$.

    Args:
        f: scalar function of a tensor shaped like ``x`` (a black box is fine).
        x: the point, any shape, floating dtype.
        eps: relative step; ``None`` picks :func:`default_eps` for ``x.dtype``.
        scheme: ``"central"`` ($2d$ evaluations, error $O(h^2)$), ``"forward"`` or
            ``"backward"`` ($d + 1$ evaluations, error $O(h)$).
        chunk_size: perturbed points evaluated per batch (bounds memory).
        vectorized: ``True``/``False``/``"auto"``, see :func:`evaluate_batch`.

    Returns:
        The estimate, shaped like ``x``.
    """
    check_tensor(x)
    check_choice(scheme, "scheme", SCHEMES)
    if chunk_size is not None:
        check_count(chunk_size, "chunk_size")
    flat = x.detach().reshape(-1)
    dim = flat.numel()
    h = _steps(flat, eps, scheme)
    upper = flat + h if scheme in ("forward", "central") else flat.clone()
    lower = flat - h if scheme in ("backward", "central") else flat.clone()
    step = upper - lower  # the representable step, exactly what separates the points
    if (step == 0).any():
        raise ValueError("eps is too small: x + h rounds back to x for some coordinate")
    chunk = chunk_size or max(1, min(dim, _POINTS_BUDGET // dim))

    def values_at(moved: torch.Tensor) -> torch.Tensor:
        """f at x with coordinate i replaced by moved[i], for every i."""
        parts = []
        for start in range(0, dim, chunk):
            index = torch.arange(start, min(start + chunk, dim), device=flat.device)
            points = flat.expand(index.numel(), dim).clone()
            points[torch.arange(index.numel(), device=flat.device), index] = moved[index]
            parts.append(evaluate_batch(f, points.view(-1, *x.shape), vectorized=vectorized))
        return torch.cat(parts)

    centre = None
    if scheme != "central":
        centre = evaluate_batch(f, flat.view(1, *x.shape), vectorized=False)
    f_upper = centre.expand(dim) if scheme == "backward" else values_at(upper)
    f_lower = centre.expand(dim) if scheme == "forward" else values_at(lower)
    work = torch.promote_types(f_upper.dtype, x.dtype)
    grad = (f_upper.to(work) - f_lower.to(work)) / step.to(work)
    return grad.to(x.dtype).view_as(x)


def fd_directional(
    f: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    v: torch.Tensor,
    eps: Optional[float] = None,
    scheme: str = "central",
) -> torch.Tensor:
    r"""Directional derivative $\nabla f(x)^\top v$ from two evaluations along $v$.

    With $t = \text{eps}\cdot\max(1, \|x\|_\infty) / \|v\|_\infty$ (so that no coordinate
    moves by more than the default per-coordinate step):
    central $\dfrac{f(x + t v) - f(x - t v)}{2t}$, forward $\dfrac{f(x + t v) - f(x)}{t}$,
    backward $\dfrac{f(x) - f(x - t v)}{t}$. Returns a 0-d tensor.
    """
    check_tensor(x)
    check_tensor(v, "v")
    check_choice(scheme, "scheme", SCHEMES)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    x0, v0 = x.detach(), v.detach().to(x.dtype)
    v_scale = float(v0.abs().max())
    if v_scale == 0:
        raise ValueError("v must not be the zero vector")
    eps = default_eps(x.dtype, scheme) if eps is None else check_positive(eps, "eps")
    t = eps * max(1.0, float(x0.abs().max())) / v_scale
    plus = x0 + t * v0 if scheme != "backward" else x0
    minus = x0 - t * v0 if scheme != "forward" else x0
    values = evaluate_batch(f, torch.stack([plus, minus]), vectorized=False)
    span = 2 * t if scheme == "central" else t
    return ((values[0] - values[1]) / span).to(x.dtype)


# --------------------------------------------------------------------------- forward gradient
def forward_grad(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    num_samples: int = 1,
    *,
    generator: Optional[torch.Generator] = None,
    vectorized: Vectorized = "auto",
) -> torch.Tensor:
    r"""Forward-gradient estimate $\frac1N\sum_{n=1}^N (\nabla f(x)^\top v_n)\, v_n$, $v_n \sim \mathcal N(0, I)$.

    Each $\nabla f(x)^\top v_n$ is one Jacobian-vector product from
    ``torch.func.jvp`` (forward-mode AD, exact, no finite-difference step), so the
    estimate is unbiased: $\mathbb E[v v^\top] = I$. Per coordinate its variance is
    $(\|\nabla f\|^2 + g_i^2)/N$. ``f`` must be built from differentiable torch ops.
    The tangents are vmapped (``vectorized``), with a loop fallback.
    """
    check_tensor(x)
    check_count(num_samples, "num_samples")
    check_vectorized(vectorized)
    x0 = x.detach()
    tangents = rng.randn((num_samples, *x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)

    def directional(v: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # torch's first forward-mode call loads its JVP decompositions through
            # torch.jit.script, which warns about its own deprecation; not the user's concern.
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
            )
            value, slope = torch.func.jvp(f, (x0,), (v,))
        return as_scalar(slope, "f")

    slopes = evaluate_batch(directional, tangents, vectorized=vectorized, name="f")
    return torch.tensordot(slopes.to(x0.dtype), tangents, dims=1) / num_samples
