r"""The evolution-strategies point estimator :func:`es_grad` and its parts.

:func:`es_grad` estimates $\nabla f_\sigma(x)$ for a black box $f$ of one tensor
(the estimators and the scaling convention are in :mod:`gradlab.es`); it is built
from the per-draw weights :func:`es_weights` (shared with the population
estimator) and the fitness shaping :func:`centered_ranks`; the noise comes from
:mod:`gradlab.es.noise`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

from ..batch import Vectorized, check_vectorized, evaluate_batch
from ..checks import check_choice, check_count, check_optional_count, check_sigma, check_tensor
from .noise import choose_source, draw_noise

__all__ = [
    "METHODS",
    "FITNESS_SHAPINGS",
    "check_method",
    "check_fitness_shaping",
    "centered_ranks",
    "es_weights",
    "es_grad",
]

METHODS = ("naive", "forward", "antithetic")
FITNESS_SHAPINGS = (None, "centered_rank")


def check_method(method: object) -> str:
    """One of :data:`METHODS`."""
    return check_choice(method, "method", METHODS)


def check_fitness_shaping(fitness_shaping: object) -> Optional[str]:
    """``None`` or ``"centered_rank"``."""
    return check_choice(fitness_shaping, "fitness_shaping", FITNESS_SHAPINGS)


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    r"""Fitness shaping of OpenAI's ES: replace each value by its rank, scaled to $[-\tfrac12, \tfrac12]$.

    The estimate then depends only on the *order* of the function values, which
    makes ES invariant to monotone transformations of $f$ and robust to outliers
    (it is no longer an unbiased estimate of $\nabla f_\sigma$, only an ascent/descent
    direction). With one value the result is 0.
    """
    count = values.numel()
    if count == 1:
        return torch.zeros_like(values)
    ranks = torch.empty(count, dtype=values.dtype, device=values.device)
    ranks[values.reshape(-1).argsort()] = torch.arange(count, dtype=values.dtype, device=values.device)
    return (ranks / (count - 1) - 0.5).view_as(values)


def es_weights(
    method: str,
    sigma: float,
    plus: torch.Tensor,
    minus: Optional[torch.Tensor] = None,
    at_x: Optional[torch.Tensor] = None,
    fitness_shaping: Optional[str] = None,
) -> torch.Tensor:
    r"""Per-draw weights $w_n$ of an ES estimate $\frac1N \sum_n w_n z_n$.

    ``plus`` holds $f(x + \sigma z_n)$, ``minus`` $f(x - \sigma z_n)$ (antithetic
    only) and ``at_x`` $f(x)$ (``"forward"``; ``None`` leaves the baseline out).
    Then $w_n = f^+_n/\sigma$ (naive), $(f^+_n - f(x))/\sigma$ (forward) or
    $(f^+_n - f^-_n)/(2\sigma)$ (antithetic). With ``"centered_rank"`` shaping the
    values are replaced by :func:`centered_ranks` first, ranked *jointly* over
    both halves of the antithetic pairs, and a constant baseline is dropped (it
    would not change the ranks).
    """
    if fitness_shaping == "centered_rank":
        if method == "antithetic":
            shaped = centered_ranks(torch.cat([plus, minus]))
            plus, minus = shaped[: plus.numel()], shaped[plus.numel():]
        else:
            plus, at_x = centered_ranks(plus), None
    if method == "antithetic":
        return (plus - minus) / (2 * sigma)
    if method == "forward" and at_x is not None:
        return (plus - at_x) / sigma
    return plus / sigma


def es_grad(
    f: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    sigma: float,
    num_samples: int,
    method: str = "antithetic",
    distribution: Any = None,
    generator: Optional[torch.Generator] = None,
    fitness_shaping: Optional[str] = None,
    vectorized: Vectorized = "auto",
    chunk_size: Optional[int] = None,
    f_x: Optional[torch.Tensor] = None,
    noise: Any = None,
) -> torch.Tensor:
    r"""ES estimate of $\nabla f_\sigma(x) = \nabla_x \mathbb E_{z\sim\mathcal N(0,I)}[f(x + \sigma z)]$.

    Args:
        f: scalar black box of a tensor shaped like ``x``; never differentiated.
        x: the point (any shape, floating dtype).
        sigma: smoothing scale $\sigma > 0$ (the estimate is divided by $\sigma$).
        num_samples: number $N$ of noise draws $z_n$ (``"antithetic"`` evaluates
            $f$ $2N$ times, ``"forward"`` $N + 1$ times, ``"naive"`` $N$ times).
        method: ``"naive"``, ``"forward"`` or ``"antithetic"`` (see :mod:`gradlab.es`).
        distribution: noise other than $\mathcal N(0, I)$, see :func:`gradlab.es.noise.sample_noise`.
        generator: ``torch.Generator`` for the default Gaussian noise.
        fitness_shaping: ``None`` or ``"centered_rank"`` (:func:`centered_ranks`
            applied to all function values before they weight the noise).
        vectorized: evaluate the whole population with ``torch.func.vmap``
            (``True``), with a Python loop (``False``), or try vmap and fall back to
            the loop (``"auto"``, for black boxes vmap cannot trace).
        chunk_size: population members per vmap call (bounds memory).
        f_x: $f(x)$ when the caller already knows it; ``"forward"`` then skips
            that evaluation.
        noise: a noise source instead of fresh normals, e.g. a
            :class:`gradlab.es.noise.NoiseTable` (each draw one slice of the table at an
            offset drawn from ``generator``). Not with ``distribution``.

    Returns:
        The estimate, shaped like ``x``.

    Raises:
        ValueError: ``sigma <= 0``, ``num_samples < 1``, an unknown ``method``,
            ``f`` returning more than one number, or NaN/inf from ``f``.
    """
    check_tensor(x)
    sigma = check_sigma(sigma)
    check_count(num_samples, "num_samples")
    check_method(method)
    check_fitness_shaping(fitness_shaping)
    check_vectorized(vectorized)
    check_optional_count(chunk_size, "chunk_size")
    x0 = x.detach()
    source = choose_source(noise, distribution)
    z = draw_noise(
        source, (num_samples, *x0.shape), generator=generator, dtype=x0.dtype, device=x0.device
    )
    evaluate = functools.partial(evaluate_batch, f, vectorized=vectorized, chunk_size=chunk_size)
    minus = at_x = None
    if method == "antithetic":
        values = evaluate(torch.cat([x0 + sigma * z, x0 - sigma * z]))
        plus, minus = values[:num_samples], values[num_samples:]
    else:
        plus = evaluate(x0 + sigma * z)
    if method == "forward" and fitness_shaping is None:
        at_x = f_x if f_x is not None else evaluate(x0.unsqueeze(0))[0]
    weights = es_weights(method, sigma, plus, minus, at_x, fitness_shaping)
    return torch.tensordot(weights.to(x0.dtype), z, dims=1) / num_samples
