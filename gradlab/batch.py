"""Evaluate a scalar function at a batch of points: vmapped where possible, looped where not.

Every zeroth-order estimator needs $f(p_1), \\dots, f(p_K)$ for a batch of points
(perturbed inputs, perturbed parameters). :func:`evaluate_batch` is the one place
that does it: one ``torch.func.vmap`` call when ``f`` is built from torch ops, a
Python loop for black boxes vmap cannot trace (``.item()``, NumPy, data-dependent
control flow), and the same checks on what ``f`` returned either way.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from .checks import as_scalar, as_scalar_batch, check_choice, check_finite

__all__ = ["Vectorized", "VECTORIZED", "check_vectorized", "evaluate_batch"]

Vectorized = Union[bool, str]
VECTORIZED = (True, False, "auto")


def check_vectorized(vectorized: object) -> Vectorized:
    """``True``, ``False`` or ``"auto"``."""
    return check_choice(vectorized, "vectorized", VECTORIZED)


def evaluate_batch(
    f: Callable[[torch.Tensor], Any],
    points: torch.Tensor,
    *,
    vectorized: Vectorized = "auto",
    chunk_size: Optional[int] = None,
    name: str = "f",
) -> torch.Tensor:
    """Evaluate a scalar function at each ``points[k]``; returns a tensor of shape ``(K,)``.

    ``vectorized=True`` evaluates all points in one ``torch.func.vmap`` call
    (``chunk_size`` points at a time), ``False`` loops over the points, and
    ``"auto"`` tries ``vmap`` and falls back to the loop when ``f`` cannot be
    vmapped. Gradients are never recorded. Raises ``ValueError`` if ``f`` returns
    more than one number per point or any NaN/inf (``name`` names ``f`` in messages).
    """
    check_vectorized(vectorized)
    count = points.shape[0]
    values: Optional[torch.Tensor] = None
    with torch.no_grad():
        if vectorized:
            try:
                out = torch.func.vmap(f, chunk_size=chunk_size)(points)
            except Exception:  # noqa: BLE001
                # vmap cannot trace every black box (.item(), NumPy, data-dependent
                # Python control flow, random ops...). With "auto" the plain loop
                # below handles those; a genuine error in f is raised again there.
                if vectorized is True:
                    raise
            else:
                values = as_scalar_batch(out, count, name).detach()
        if values is None:
            # Per-point loop: the fallback for black boxes vmap cannot handle.
            values = torch.stack(
                [as_scalar(f(p), name, numbers=True).detach().to(points.device) for p in points]
            )
    return check_finite(values, name)
