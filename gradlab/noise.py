r"""Where the perturbations of the zeroth-order estimators come from: noise sources.

A **noise source** is any object with a method ``sample(shape, generator=None)``
returning a ``shape``-shaped tensor of i.i.d. entries with mean 0 and variance 1;
the estimators draw every perturbation through one. A source may also offer
``fill_(out, generator=None)``, which writes the same numbers as ``sample`` into an
existing buffer (the population estimator reuses one buffer for every chunk).

* :class:`GaussianNoise` — $\mathcal N(0, 1)$ from ``torch.randn`` and the given
  generator; the default.
* :class:`DistributionNoise` — adapts a TorchOpt-style ``distribution``: an object
  with ``sample(sample_shape)`` (e.g. ``torch.distributions.Normal(0., 1.)``) or a
  function of the shape. It draws from its own randomness and ignores ``generator``.

:func:`noise_source` turns the ``distribution`` argument of the public functions
into a source, :func:`draw_noise` draws from any source (as a dtype, on a device,
into a buffer), and :func:`sample_noise` does both at once.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

__all__ = ["GaussianNoise", "DistributionNoise", "noise_source", "draw_noise", "sample_noise"]

Device = Union[str, torch.device, None]


class GaussianNoise:
    r"""Standard normal noise $\mathcal N(0, 1)$ drawn with ``torch.randn`` from ``generator``."""

    def sample(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: Device = None,
    ) -> torch.Tensor:
        """Drawn on the generator's device (so a seed gives the same numbers everywhere), then moved."""
        draw_device = generator.device if generator is not None else device
        noise = torch.randn(torch.Size(shape), generator=generator, dtype=dtype, device=draw_device)
        return noise.to(device) if device is not None else noise

    def fill_(self, out: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Fill ``out`` in place; the same numbers as :meth:`sample` on ``out``'s device."""
        if generator is not None and generator.device != out.device:
            return out.copy_(self.sample(out.shape, generator, dtype=out.dtype, device=out.device))
        return out.normal_(generator=generator)

    def __repr__(self) -> str:
        return "GaussianNoise()"


class DistributionNoise:
    """A TorchOpt-style ``distribution`` (``sample(sample_shape)`` or a function of the shape) as a source."""

    def __init__(self, distribution: Any) -> None:
        sampler = getattr(distribution, "sample", distribution)
        if not callable(sampler):
            raise TypeError(
                "distribution must have a sample(sample_shape) method or be a function of the "
                f"sample shape, got {type(distribution).__name__}"
            )
        self.distribution = distribution
        self._sampler = sampler

    def sample(
        self, shape: Sequence[int], generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``distribution.sample(shape)``; ``generator`` is ignored (the distribution has its own RNG)."""
        shape = torch.Size(shape)
        noise = torch.as_tensor(self._sampler(shape))
        if noise.shape != shape:
            raise ValueError(
                f"distribution.sample({tuple(shape)}) returned shape {tuple(noise.shape)}; a "
                "scalar distribution (batch_shape ()) is expected"
            )
        return noise

    def __repr__(self) -> str:
        return f"DistributionNoise({self.distribution!r})"


def noise_source(distribution: Any = None) -> Any:
    """The source behind a ``distribution`` argument: ``None`` → :class:`GaussianNoise`, else :class:`DistributionNoise`."""
    return GaussianNoise() if distribution is None else DistributionNoise(distribution)


def draw_noise(
    source: Any,
    shape: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One draw of ``shape`` from a noise source, as ``dtype`` on ``device``.

    With ``out`` (a contiguous buffer of ``shape``) and a source that has ``fill_``,
    the draw is written into ``out``: the same numbers, no new allocation.
    """
    shape = torch.Size(shape)
    if out is not None and out.shape == shape and hasattr(source, "fill_"):
        return source.fill_(out, generator)
    if isinstance(source, GaussianNoise):
        return source.sample(shape, generator, dtype=dtype, device=device)
    noise = source.sample(shape, generator=generator)
    if not isinstance(noise, torch.Tensor) or noise.shape != shape:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"the noise source returned {got} for a draw of shape {tuple(shape)}")
    return noise.to(dtype=dtype, device=device)


def sample_noise(
    shape: Sequence[int],
    *,
    distribution: Any = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""A ``shape``-shaped tensor of i.i.d. unit-variance noise (see the module docstring).

    ``distribution=None`` draws $\mathcal N(0, 1)$ from ``generator``; otherwise it
    is a TorchOpt-style distribution or a noise source (:func:`noise_source`). The
    result is ``dtype`` on ``device``; ``out`` as in :func:`draw_noise`.
    """
    return draw_noise(
        noise_source(distribution), shape, generator=generator, dtype=dtype, device=device, out=out
    )
