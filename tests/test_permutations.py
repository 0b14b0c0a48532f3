"""gradlab.permutations: Sinkhorn maximises the entropic assignment objective; pieces round-trip."""
from __future__ import annotations

import math

import pytest
import torch

from gradlab import entropic_assignment_objective, from_pieces, hungarian, random_permutations, sinkhorn, to_pieces

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_doubly_stochastic(count, n, generator):
    """Convex combinations of 6 random permutation matrices (Birkhoff-von Neumann)."""
    perms = random_permutations(count * 6, n, generator=generator, dtype=F64).reshape(count, 6, n, n)
    weights = torch.rand(count, 6, 1, 1, generator=generator, dtype=F64)
    return (weights / weights.sum(1, keepdim=True) * perms).sum(1)


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_sinkhorn_maximises_the_entropic_objective(tau):
    X = torch.randn(5, 5, generator=gen(0), dtype=F64)
    S = sinkhorn(X, n_iters=500, tau=tau)
    best = entropic_assignment_objective(S, X, tau)
    others = random_doubly_stochastic(200, 5, gen(1))
    assert torch.all(entropic_assignment_objective(others, X, tau) < best)
    # small moves inside the polytope (zero row and column sums) lower it too: a stationary maximum
    D = torch.randn(200, 5, 5, generator=gen(2), dtype=F64)
    D = D - D.mean(-1, keepdim=True) - D.mean(-2, keepdim=True) + D.mean((-1, -2), keepdim=True)
    moved = S + 1e-3 * D / D.abs().amax((-1, -2), keepdim=True) * S.min()
    assert torch.all(entropic_assignment_objective(moved, X, tau) < best)
    # and the gap to the best assignment is within [0, tau n log n]
    hard = (hungarian(X) * X).sum()
    assert 0.0 <= (best - hard).item() <= tau * 5 * math.log(5)


def test_sinkhorn_distance_to_the_hungarian_permutation_shrinks_with_tau():
    X = torch.randn(6, 6, generator=gen(3), dtype=F64)
    P = hungarian(X)
    dist = [(sinkhorn(X, n_iters=300, tau=tau) - P).abs().sum().item() for tau in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)]
    assert all(a > b for a, b in zip(dist, dist[1:])) and dist[-1] < 0.1, dist


def test_pieces_round_trip_and_move_with_a_permutation():
    images = torch.arange(2 * 8 * 8, dtype=F64).reshape(2, 8, 8)
    pieces = to_pieces(images, 2)
    assert pieces.shape == (2, 4, 16)
    torch.testing.assert_close(pieces[0, 1], images[0, :4, 4:].reshape(-1))  # row-major: top-right second
    torch.testing.assert_close(from_pieces(pieces, 2), images)
    P = random_permutations(2, 4, generator=gen(4), dtype=F64)
    shuffled = from_pieces(pieces, 2, P)
    torch.testing.assert_close(from_pieces(to_pieces(shuffled, 2), 2, P.transpose(1, 2)), images)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="grid"):
        to_pieces(torch.zeros(1, 8, 8), 3)
    with pytest.raises(ValueError, match="tau"):
        entropic_assignment_objective(torch.eye(3), torch.eye(3), -1.0)
    with pytest.raises(ValueError, match="square"):
        entropic_assignment_objective(torch.ones(2, 3), torch.ones(2, 3), 1.0)


def test_from_pieces_applies_p_as_piece_i_takes_piece_order_i():
    """P = I[order] for a 3-cycle (not symmetric): piece i of the result is piece order[i] of the input."""
    images = torch.arange(2 * 6 * 6, dtype=torch.float64).reshape(2, 6, 6)
    grid = 3
    order = torch.tensor([1, 2, 0, 4, 5, 3, 7, 8, 6])  # 3-cycles within each row of pieces
    P = torch.eye(9, dtype=torch.float64)[order]
    pieces = to_pieces(images, grid)
    torch.testing.assert_close(from_pieces(pieces, grid, P), from_pieces(pieces[:, order], grid))
    assert not torch.equal(from_pieces(pieces, grid, P), from_pieces(pieces, grid, P.T))


def test_random_permutations_follow_the_generator_and_leave_the_global_rng_alone():
    torch.manual_seed(99)
    state = torch.get_rng_state()
    first = random_permutations(6, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state), "random_permutations drew from the global RNG"
    assert torch.equal(first, random_permutations(6, 5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, random_permutations(6, 5, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(first.sum(-1), torch.ones(6, 5)) and torch.equal(first.sum(-2), torch.ones(6, 5))
