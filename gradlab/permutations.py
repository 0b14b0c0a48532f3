r"""Latent permutations: the entropic assignment behind Sinkhorn, and image pieces to re-assemble.

**Sinkhorn as an entropy-regularised assignment** (Mena et al. 2018, Theorem 1; Cuturi 2013). For a
square score matrix $X$ and $\tau > 0$, the Sinkhorn operator $S(X/\tau)$
(:func:`gradlab.sinkhorn`) is the unique maximiser over the Birkhoff polytope $\mathcal B_n$
(doubly-stochastic matrices) of

.. math::

    \begin{gathered}
    J_\tau(P) = \langle P, X\rangle_F + \tau\, H(P), \\
    H(P) = -\sum_{ij} P_{ij}\log P_{ij}.
    \end{gathered}

The stationarity conditions of the Lagrangian with row and column multipliers give
$P_{ij} = \exp(X_{ij}/\tau - a_i - b_j)$, a diagonal rescaling of $e^{X/\tau}$, which Sinkhorn's
alternating normalisations find; $J_\tau$ is strictly concave, so this point is the maximiser. Since
$0 \le H \le n\log n$ on $\mathcal B_n$, $\max J_\tau$ is within $\tau n\log n$ of the best
assignment $\max_P\langle P, X\rangle$, and as $\tau\to 0$ the maximiser tends to the Hungarian
permutation (:func:`gradlab.hungarian`) when that is unique.

**Pieces** of images: :func:`to_pieces` cuts images into a grid of square pieces, :func:`from_pieces`
puts them back, both through a (possibly relaxed) permutation matrix $P$ with
$\text{slot}_i = \sum_j P_{ij}\,\text{piece}_j$.
"""
from __future__ import annotations

from typing import Optional

import torch

from .checks import check_count, check_tensor

__all__ = ["entropic_assignment_objective", "to_pieces", "from_pieces", "random_permutations"]


def entropic_assignment_objective(P: torch.Tensor, X: torch.Tensor, tau: float) -> torch.Tensor:
    r"""$\langle P, X\rangle_F + \tau H(P)$ over the last two dims ($0\log 0 = 0$); batched."""
    P = check_tensor(P, "P")
    X = check_tensor(X, "X")
    if P.shape[-2:] != X.shape[-2:] or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"P and X must hold square matrices of one size, got {tuple(P.shape)} and {tuple(X.shape)}")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or tau < 0:
        raise ValueError(f"tau must be a non-negative number, got {tau!r}")
    entropy = -torch.special.xlogy(P, P).sum((-1, -2))
    return (P * X).sum((-1, -2)) + tau * entropy


def to_pieces(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Images (B, H, W) cut into ``grid * grid`` pieces in row-major order: (B, grid**2, H/grid * W/grid)."""
    images = check_tensor(images, "images")
    grid = check_count(grid, "grid")
    if images.dim() != 3 or images.shape[1] % grid or images.shape[2] % grid:
        raise ValueError(f"images must be (B, H, W) with H and W divisible by grid={grid}, got {tuple(images.shape)}")
    b, h, w = images.shape
    ph, pw = h // grid, w // grid
    pieces = images.reshape(b, grid, ph, grid, pw).permute(0, 1, 3, 2, 4)
    return pieces.reshape(b, grid * grid, ph * pw)


def from_pieces(pieces: torch.Tensor, grid: int, P: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Inverse of :func:`to_pieces`; with ``P`` (B, n, n) the pieces are first moved: slot $i$ gets $\sum_j P_{ij}$ piece $j$."""
    pieces = check_tensor(pieces, "pieces")
    grid = check_count(grid, "grid")
    if pieces.dim() != 3 or pieces.shape[1] != grid * grid:
        raise ValueError(f"pieces must be (B, {grid * grid}, D), got {tuple(pieces.shape)}")
    if P is not None:
        pieces = P @ pieces
    b, _, d = pieces.shape
    side = int(round(d**0.5))
    if side * side != d:
        raise ValueError(f"pieces must be square, got {d} pixels per piece")
    out = pieces.reshape(b, grid, grid, side, side).permute(0, 1, 3, 2, 4)
    return out.reshape(b, grid * side, grid * side)


def random_permutations(count: int, n: int, *, generator: Optional[torch.Generator] = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` uniformly random ``n x n`` permutation matrices (B, n, n), drawn from ``generator``."""
    check_count(count, "count")
    check_count(n, "n")
    keys = torch.rand(count, n, generator=generator)
    order = keys.argsort(dim=-1)
    return torch.eye(n, dtype=dtype)[order]
