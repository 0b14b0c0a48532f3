r"""How close is an estimated gradient $\hat g$ to a reference gradient $g$?

Every function accepts a tensor of any shape or a list/tuple of tensors (e.g.
one per parameter); both arguments are flattened, concatenated and compared in
float64, and the result is a Python ``float``.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Union

import torch

__all__ = ["cosine_similarity", "relative_error", "sign_agreement", "compare_gradients"]

GradLike = Union[torch.Tensor, Sequence[torch.Tensor]]


def _flatten(value: GradLike, name: str) -> torch.Tensor:
    """One float64 vector from a tensor or a sequence of tensors."""
    if isinstance(value, torch.Tensor):
        parts = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
        for index, part in enumerate(parts):
            if not isinstance(part, torch.Tensor):
                raise TypeError(
                    f"{name}[{index}] must be a torch.Tensor, got {type(part).__name__}"
                )
        if not parts:
            raise ValueError(f"{name} must not be an empty list")
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or a list of tensors, got {type(value).__name__}"
        )
    for part in parts:
        if part.is_complex():
            raise TypeError(f"{name} must be real, got dtype {part.dtype}")
    device = parts[0].device
    return torch.cat([p.detach().reshape(-1).to(device=device, dtype=torch.float64) for p in parts])


def _pair(est: GradLike, ref: GradLike):
    est_vec, ref_vec = _flatten(est, "est"), _flatten(ref, "ref")
    if est_vec.numel() != ref_vec.numel():
        raise ValueError(
            f"est and ref must have the same number of elements, got {est_vec.numel()} "
            f"and {ref_vec.numel()}"
        )
    if est_vec.numel() == 0:
        raise ValueError("est and ref must not be empty")
    return est_vec, ref_vec.to(est_vec.device)


def cosine_similarity(est: GradLike, ref: GradLike) -> float:
    r"""$\cos\angle(\hat g, g) = \hat g^\top g / (\|\hat g\|\,\|g\|)$; ``nan`` if either is zero."""
    est_vec, ref_vec = _pair(est, ref)
    denom = est_vec.norm() * ref_vec.norm()
    if denom == 0:
        return math.nan
    return float(est_vec @ ref_vec / denom)


def relative_error(est: GradLike, ref: GradLike) -> float:
    r"""$\|\hat g - g\| / \|g\|$ (``0`` if both are zero, ``inf`` if only $g$ is)."""
    est_vec, ref_vec = _pair(est, ref)
    error, scale = (est_vec - ref_vec).norm(), ref_vec.norm()
    if scale == 0:
        return 0.0 if error == 0 else math.inf
    return float(error / scale)


def sign_agreement(est: GradLike, ref: GradLike) -> float:
    r"""Fraction of coordinates with $\mathrm{sign}(\hat g_i) = \mathrm{sign}(g_i)$ (0 only matches 0)."""
    est_vec, ref_vec = _pair(est, ref)
    return float((torch.sign(est_vec) == torch.sign(ref_vec)).double().mean())


def _norm_ratio(est_vec: torch.Tensor, ref_vec: torch.Tensor) -> float:
    est_norm, ref_norm = est_vec.norm(), ref_vec.norm()
    if ref_norm == 0:
        return math.nan if est_norm == 0 else math.inf
    return float(est_norm / ref_norm)


def compare_gradients(est: GradLike, ref: GradLike) -> Dict[str, float]:
    r"""All metrics at once: ``cosine``, ``relative_error``, ``sign_agreement`` and
    ``norm_ratio`` $= \|\hat g\| / \|g\|$ (``nan`` if both are zero, ``inf`` if only $g$ is)."""
    est_vec, ref_vec = _pair(est, ref)
    return {
        "cosine": cosine_similarity(est_vec, ref_vec),
        "relative_error": relative_error(est_vec, ref_vec),
        "sign_agreement": sign_agreement(est_vec, ref_vec),
        "norm_ratio": _norm_ratio(est_vec, ref_vec),
    }
