r"""Where the perturbations of the zeroth-order estimators come from: noise sources.

A **noise source** is any object with a method ``sample(shape, generator=None)``
returning a ``shape``-shaped tensor of i.i.d. entries with mean 0 and variance 1;
the estimators draw every perturbation through one. A source may also offer
``fill_(out, generator=None)``, which writes the same numbers as ``sample`` into an
existing buffer (the population estimator reuses one buffer for every chunk).

* :class:`GaussianNoise` — $\mathcal N(0, 1)$ from ``torch.randn`` and the given
  generator; the default.
* :class:`NoiseTable` — a shared table of standard normals built from a seed; a
  draw is a slice of the table at a random offset (the noise-table trick of
  Salimans et al., 2017), so a perturbation is named by one integer.
* :class:`DistributionNoise` — adapts a TorchOpt-style ``distribution``: an object
  with ``sample(sample_shape)`` (e.g. ``torch.distributions.Normal(0., 1.)``) or a
  function of the shape. It draws from its own randomness and ignores ``generator``.

:func:`noise_source` turns the ``distribution`` argument of the public functions
into a source, :func:`draw_noise` draws from any source (as a dtype, on a device,
into a buffer), and :func:`sample_noise` does both at once.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import math

import torch

from .. import rng
from ..checks import check_count, check_float_dtype, check_seed

__all__ = [
    "GaussianNoise",
    "NoiseTable",
    "DistributionNoise",
    "noise_source",
    "choose_source",
    "draw_noise",
    "sample_noise",
]

Device = rng.Device


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
        """Drawn by gradlab's one rule (:mod:`gradlab.rng`): on the generator's device, then moved."""
        return rng.randn(shape, generator=generator, dtype=dtype, device=device)

    def fill_(self, out: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Fill ``out`` in place; the same numbers as :meth:`sample` on ``out``'s device."""
        return rng.normal_(out, generator)

    def __repr__(self) -> str:
        return "GaussianNoise()"


class NoiseTable:
    r"""A table of ``size`` i.i.d. standard normals built from ``seed``; draws are slices of it.

    The table is drawn once, in float32 on the CPU with ``torch.Generator().manual_seed(seed)``
    (so every process that builds ``NoiseTable(size, seed)`` holds the same numbers), then
    converted to ``dtype`` on ``device``. A draw of $D$ values is the slice
    $T[o : o + D]$ at an offset $o$ drawn uniformly from $\{0, \dots, M - 1\}$,
    $M = \text{size} - D + 1$, with ``generator``: every slice lies inside the table, and
    the perturbation is named by the one integer $o$ (what workers exchange in
    distributed ES instead of the $D$ numbers).

    **Distribution.** Over the table's seed, each slice is exactly $\mathcal N(0, I_D)$.
    Two slices are independent unless they overlap ($|o - o'| < D$, probability
    $\approx (2D - 1)/M$ per pair); an overlap shifted by $k \neq 0$ correlates entry $i$ of
    one with entry $i - k$ of the other, which adds at most $\frac{N-1}{N}\frac{2D-1}{M}\lVert g\rVert^2$
    to the $(D + 1)\lVert g\rVert^2/N$ total variance of an $N$-draw antithetic ES estimate of
    a linear function with gradient $g$: a relative excess below $2N/M$. For a *fixed* table
    the noise covariance is $C = \frac1M\sum_o T_{o:o+D}T_{o:o+D}^\top$, positive
    semi-definite with entries $\delta_{ij} + O(1/\sqrt M)$, so the expected estimate is
    $Cg$ instead of $g$: still a descent direction, off by about $\sqrt{D/M}\,\lVert g\rVert$,
    small next to the estimate's own spread $\sqrt{D/N}\,\lVert g\rVert$ while $N \ll M$.
    With the table of Salimans et al. (250M values) or the $2^{25} \approx 33.5$M of the
    book's examples, both effects are negligible (measured in Chapter 3).

    Args:
        size: number of normals in the table (memory: ``size`` × bytes of ``dtype``).
        seed: the integer seed that determines the table.
        dtype: a floating dtype for the stored table.
        device: where the table lives (draws are made there).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: Device = None,
    ) -> None:
        check_count(size, "size")
        check_seed(seed)
        check_float_dtype(dtype)
        self.size, self.seed = size, seed
        table = torch.randn(size, generator=torch.Generator().manual_seed(seed))
        self.noise = table.to(dtype=dtype, device=device)
        self._checksum: Optional[torch.Tensor] = None

    @property
    def dtype(self) -> torch.dtype:
        return self.noise.dtype

    @property
    def device(self) -> torch.device:
        return self.noise.device

    def num_offsets(self, dim: int) -> int:
        """How many slices of ``dim`` values fit in the table: ``size - dim + 1``."""
        check_count(dim, "dim")
        if dim > self.size:
            raise ValueError(
                f"a NoiseTable of size {self.size} is too small for draws of {dim} values "
                f"(size must be >= {dim}, and much larger to keep slices nearly independent)"
            )
        return self.size - dim + 1

    def offsets(
        self, num_samples: int, dim: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``num_samples`` offsets of ``dim``-value slices, uniform on ``0 … size - dim`` (int64, CPU)."""
        check_count(num_samples, "num_samples")
        high = self.num_offsets(dim)
        return rng.randint(0, high, (num_samples,), generator=generator, device="cpu")

    def rows(
        self, offsets: torch.Tensor, dim: int, out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The slices ``T[o : o + dim]`` for every offset, as a ``(len(offsets), dim)`` tensor."""
        windows = self.noise.unfold(0, dim, 1)  # (size - dim + 1, dim) view, no copy
        index = offsets.to(self.device)
        if out is None:
            return windows.index_select(0, index)
        if out.dtype == self.dtype and out.device == self.device and out.is_contiguous():
            return torch.index_select(windows, 0, index, out=out.view(len(offsets), dim)).view_as(out)
        return out.copy_(windows.index_select(0, index).view_as(out))

    def sample(
        self, shape: Sequence[int], generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``shape[0]`` draws of ``shape[1:]`` values each, every draw one slice of the table."""
        shape = torch.Size(shape)
        if len(shape) == 0:
            raise ValueError("shape must have a leading dimension (the number of draws)")
        dim = math.prod(shape[1:])
        return self.rows(self.offsets(shape[0], dim, generator), dim).view(shape)

    def fill_(self, out: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Write the numbers :meth:`sample` would return for ``out.shape`` into ``out``."""
        dim = math.prod(out.shape[1:])
        return self.rows(self.offsets(out.shape[0], dim, generator), dim, out=out)

    def checksum(self) -> torch.Tensor:
        r"""``(size, seed, h_1, h_2)`` as float64: tables built differently get different checksums.

        $h_1 = \sum_j b_j$ and $h_2 = \sum_j \lfloor b_j / 2^8 \rfloor (j + 1)$ over the float32 bit
        patterns $b_j$ of about $2^{16}$ evenly spaced entries (and the last one). Integer sums
        do not depend on the order of summation, so equal tables give equal checksums on any
        machine and thread count; a different seed or size changes them.
        """
        if self._checksum is None:
            step = max(1, self.size // 2**16)
            picked = torch.cat([self.noise[::step], self.noise[-1:]]).detach()
            bits = picked.to("cpu", torch.float32).contiguous().view(torch.int32).to(torch.int64)
            h1 = int(bits.sum())
            h2 = int(((bits >> 8) * torch.arange(1, bits.numel() + 1)).sum())
            self._checksum = torch.tensor(
                [float(self.size), float(self.seed), float(h1), float(h2)], dtype=torch.float64
            )
        return self._checksum

    def __repr__(self) -> str:
        return f"NoiseTable(size={self.size}, seed={self.seed}, dtype={self.dtype}, device={self.device})"


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


def choose_source(noise: Any = None, distribution: Any = None) -> Any:
    """The source behind the ``noise=`` and ``distribution=`` arguments of the estimators (at most one)."""
    if noise is None:
        return noise_source(distribution)
    if distribution is not None:
        raise ValueError("pass either noise (a noise source) or distribution, not both")
    if not callable(getattr(noise, "sample", None)):
        raise TypeError(
            "noise must be a noise source with sample(shape, generator) (e.g. a "
            f"gradlab.NoiseTable), got {type(noise).__name__}"
        )
    return noise


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
