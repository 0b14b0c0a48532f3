r"""Random draws: the one rule every gradlab function follows.

**The rule.** A draw is made *on the generator's device* with the caller's ``generator``,
then moved to the data's device. Without a generator it is made on the data's device
from torch's default generator for that device.

Why this rule and not "draw on the data's device": a ``torch.Generator`` can only
produce numbers on its own device, so drawing on the data's device would make a CPU
generator fail with CUDA data; and with the rule a CPU generator seeded with ``s``
gives the same numbers whether the data lives on the CPU or on a GPU. A CUDA
generator with CUDA data draws in place on the GPU (nothing is moved).

Every function here takes ``generator`` (``None`` or a ``torch.Generator``) and the
``dtype`` / ``device`` of the data, and returns a tensor of that dtype on that device.
The same generator state gives the same numbers; the global RNG is used only when
``generator`` is ``None``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = ["Device", "check_generator", "draw_device", "randn", "rand", "randint", "randperm", "normal_"]

Device = Union[str, torch.device, None]


def check_generator(generator: object, name: str = "generator") -> Optional[torch.Generator]:
    """``None`` or a ``torch.Generator`` (a ``TypeError`` naming the argument otherwise)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def draw_device(generator: Optional[torch.Generator], device: Device) -> Device:
    """Where a draw is made: the generator's device, else the data's ``device``."""
    return generator.device if generator is not None else device


def _moved(drawn: torch.Tensor, device: Device) -> torch.Tensor:
    return drawn if device is None else drawn.to(device)


def randn(
    shape: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
) -> torch.Tensor:
    r"""i.i.d. $\mathcal N(0, 1)$ of ``shape`` (drawn by the rule above)."""
    where = draw_device(check_generator(generator), device)
    return _moved(torch.randn(torch.Size(shape), generator=generator, dtype=dtype, device=where), device)


def rand(
    shape: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
) -> torch.Tensor:
    r"""i.i.d. $\mathcal U[0, 1)$ of ``shape`` (drawn by the rule above)."""
    where = draw_device(check_generator(generator), device)
    return _moved(torch.rand(torch.Size(shape), generator=generator, dtype=dtype, device=where), device)


def randint(
    low: int,
    high: int,
    shape: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    device: Device = None,
) -> torch.Tensor:
    """Uniform int64 integers in ``low … high - 1`` (drawn by the rule above)."""
    where = draw_device(check_generator(generator), device)
    drawn = torch.randint(low, high, tuple(shape), generator=generator, device=where)
    return _moved(drawn, device)


def randperm(
    n: int, *, generator: Optional[torch.Generator] = None, device: Device = None
) -> torch.Tensor:
    """A uniform random permutation of ``0 … n - 1`` (drawn by the rule above)."""
    where = draw_device(check_generator(generator), device)
    return _moved(torch.randperm(n, generator=generator, device=where), device)


def normal_(out: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``out`` in place with the numbers :func:`randn` gives for its shape, dtype and device."""
    check_generator(generator)
    if generator is not None and generator.device != out.device:
        return out.copy_(randn(out.shape, generator=generator, dtype=out.dtype, device=out.device))
    return out.normal_(generator=generator)
