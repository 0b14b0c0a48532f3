"""Input validation shared by every estimator: one home for the checks at the public boundary.

Each check returns the validated (and normalised) value, or raises ``TypeError``
(wrong kind of object) or ``ValueError`` (right kind, bad value) with a message
that names the argument and says what was expected.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "check_tensor",
    "check_positive",
    "check_count",
    "check_optional_count",
    "check_sigma",
    "check_choice",
    "check_callable",
    "check_module",
    "check_finite",
    "check_generator",
    "as_scalar",
    "as_scalar_batch",
]


def check_tensor(x: object, name: str = "x") -> torch.Tensor:
    """A non-empty floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return x


def check_positive(value: object, name: str) -> float:
    """A positive finite Python number (``bool`` is refused), returned as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_sigma(sigma: object, name: str = "sigma") -> float:
    """A positive finite smoothing scale; a one-element tensor is accepted too."""
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    return check_positive(sigma, name)


def check_count(value: object, name: str) -> int:
    """An ``int >= 1`` (a number of samples, a chunk size, a rank)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_optional_count(value: object, name: str) -> Optional[int]:
    """``None`` or an ``int >= 1``."""
    return None if value is None else check_count(value, name)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (e.g. a method or scheme name)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_callable(value: Any, name: str) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_module(value: Any, name: str = "model") -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_finite(values: torch.Tensor, name: str, where: str = "evaluation points") -> torch.Tensor:
    """Values of a black box with no NaN or inf; the message counts the bad ones."""
    if values.is_floating_point() and math.isfinite(values.detach().sum().item()):
        return values  # one reduction: a NaN or inf anywhere makes the sum non-finite (an overflow is checked below)
    bad = ~torch.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name} returned a non-finite value (NaN or inf) at {int(bad.sum())} of "
            f"{values.numel()} {where}; reduce the step/sigma or check the function"
        )
    return values


def check_generator(generator: object, name: str = "generator") -> Optional[torch.Generator]:
    """A ``torch.Generator`` or ``None``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _not_scalar(name: str, shape: Any) -> ValueError:
    return ValueError(f"{name} must return a scalar (one element), got shape {tuple(shape)}")


def as_scalar(value: Any, name: str, *, numbers: bool = False) -> torch.Tensor:
    """What a function returned, as a 0-d tensor; the one "must return a scalar" check.

    ``numbers=True`` also accepts Python and NumPy numbers (converted to a float64
    tensor), for black boxes that do not use torch. Raises ``TypeError`` for
    anything else that is not a tensor and ``ValueError`` unless exactly one element.
    """
    if not isinstance(value, torch.Tensor):
        if not numbers:
            raise TypeError(f"{name} must return a scalar tensor, got {type(value).__name__}")
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must return a scalar tensor or number, got {type(value).__name__}"
            ) from error
    if value.numel() != 1:
        raise _not_scalar(name, value.shape)
    return value.reshape(())


def as_scalar_batch(values: Any, count: int, name: str) -> torch.Tensor:
    """A batched (vmapped) evaluation of ``count`` points as shape ``(count,)``: one number each."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(values).__name__}")
    if values.dim() == 0 or values.shape[0] != count or values[0].numel() != 1:
        raise _not_scalar(name, values.shape[1:])
    return values.reshape(count)


# =========================================================================== checks of the house (issue 15)
# Added for the zeroth-order family, the explorers and the exact-gradient modules; kept in one
# block at the end so that it merges with the estimator protocol's additions above.


def check_has_parameters(model: nn.Module, name: str = "model") -> nn.Module:
    """A module with at least one parameter (``ValueError`` otherwise)."""
    if next(iter(model.parameters()), None) is None:
        raise ValueError(f"{name} has no parameters")
    return model


def check_int(value: object, name: str, minimum: int = 0) -> int:
    """An ``int >= minimum`` (``bool`` is refused): ``TypeError`` for a non-int, ``ValueError`` below it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_optional_positive(value: object, name: str) -> Optional[float]:
    """``None`` or a positive finite number (as ``float``)."""
    return None if value is None else check_positive(value, name)


def check_float_tensor(value: object, name: str) -> torch.Tensor:
    """A floating-point tensor, empty or not (``TypeError`` otherwise): what a gradient needs."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (gradients need float32/float64), "
            f"got dtype {value.dtype}"
        )
    return value


def check_number_in(value: object, name: str, low: float, high: float, *, closed_low: bool = False) -> float:
    """A real number in the open interval (``low``, ``high``), or [``low``, ``high``) with ``closed_low``.

    ``TypeError`` for anything but an int or float (``bool`` included), ``ValueError`` outside.
    """
    interval = f"{'[' if closed_low else '('}{low:g}, {high:g})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in {interval}, got {type(value).__name__}")
    inside = (low <= value if closed_low else low < value) and value < high
    if not inside:
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_seed(seed: object, name: str = "seed") -> int:
    """An integer seed (``TypeError`` otherwise; ``bool`` is refused)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    return seed


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """A floating ``torch.dtype`` (``TypeError`` otherwise)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype, got {dtype!r}")
    return dtype


__all__ += [
    "check_has_parameters", "check_int", "check_optional_positive", "check_float_tensor", "check_number_in",
    "check_seed", "check_float_dtype",
]
