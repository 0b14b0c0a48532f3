"""The one chain rule (gradlab.chain): identity without a second make_dist, the graph of the rows kept."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch.autograd.functional import jacobian

from gradlab.chain import Identity, ParamChain, theta_chain
from gradlab.distributions import distribution_params

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MIX = torch.randn(12, 5, generator=gen(1), dtype=F64) / math.sqrt(5)


def test_identity_chain_does_not_call_make_dist_again():
    calls = []

    def make(t):
        calls.append(1)
        return D.Bernoulli(logits=t)

    theta = torch.randn(6, generator=gen(2), dtype=F64)
    dist = make(theta.detach())
    chain = theta_chain(make, theta, lambda d: {"logits": d.logits}, dist)
    assert isinstance(chain, Identity) and len(calls) == 1
    rows = torch.randn(4, 6, generator=gen(3), dtype=F64)
    assert chain(rows) is rows
    # a copy of theta is not theta: the chain probes make_dist (and still gives R J = R)
    other = theta_chain(make, theta, lambda d: {"logits": d.logits}, make(theta.detach().clone()))
    assert not isinstance(other, Identity) and other.diagonal
    torch.testing.assert_close(other(rows), rows)


@pytest.mark.parametrize("count", [3, 40])  # N < P (one VJP per row) and N > P (the Jacobian)
def test_dense_chain_keeps_the_graph_of_the_rows(count):
    """create_graph=True: d/dw sum(chain(rows(w)) * v) = d/dw sum(rows(w) @ J * v), float64."""

    def make(t):
        return D.Independent(D.Normal(MIX @ t, (0.3 * MIX @ t).exp()), 1)

    theta = torch.randn(5, generator=gen(4), dtype=F64)
    chain = theta_chain(make, theta, distribution_params, make(theta.detach()), create_graph=True)
    assert isinstance(chain, ParamChain) and not chain.diagonal
    jac = jacobian(lambda t: torch.cat([v.reshape(-1) for v in distribution_params(make(t)).values()]), theta)
    w = torch.randn(count, 24, generator=gen(5), dtype=F64).requires_grad_(True)
    v = torch.randn(count, 5, generator=gen(6), dtype=F64)
    (got,) = torch.autograd.grad((chain(w.sin()) * v).sum(), w)
    (expected,) = torch.autograd.grad(((w.sin() @ jac) * v).sum(), w)
    torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


def test_diagonal_chain_for_an_elementwise_make_dist_equals_rows_times_jacobian():
    def make(t):
        return D.Normal(t.tanh(), 0.5 * t.exp() + 0.1)

    theta = torch.randn(2, 3, generator=gen(7), dtype=F64)
    chain = theta_chain(make, theta, distribution_params, make(theta.detach()))
    assert chain.diagonal and bool(chain.needed.all())
    jac = jacobian(lambda t: torch.cat([v.reshape(-1) for v in distribution_params(make(t)).values()]), theta)
    rows = torch.randn(9, 12, generator=gen(8), dtype=F64)
    torch.testing.assert_close(chain(rows), rows @ jac.reshape(12, 6), rtol=1e-12, atol=1e-12)


def test_categorical_logits_of_an_elementwise_map_are_recognised_as_diagonal():
    """Categorical(logits=2 theta + 1) over K = 5 classes, 3 items: torch normalises the logits (J = (I - 1 p^T) 2),
    which is diagonal on the zero-sum rows the score produces; the probes must find it (zero-sum probe rows), and
    the projected diagonal chain must agree with rows @ J on zero-sum rows."""

    def make(t):
        return D.Categorical(logits=2.0 * t.reshape(3, 5) + 1.0)

    theta = torch.randn(15, generator=gen(8), dtype=F64)
    chain = theta_chain(make, theta, lambda d: {"logits": d.logits}, make(theta.detach()))
    assert isinstance(chain, ParamChain) and chain.diagonal, "an elementwise map of logits fell back to dense"
    jac = jacobian(lambda t: make(t).logits.reshape(-1), theta)
    rows = torch.randn(4, 3, 5, generator=gen(9), dtype=F64)
    centred = (rows - rows.mean(-1, keepdim=True)).reshape(4, 15)  # scores of logits sum to zero per item
    torch.testing.assert_close(chain(centred), centred @ jac)
    # rows that do not sum to zero (a weak-derivative estimate in the logits) go through J = 2 (I - 1 p^T) exactly
    rows = rows.reshape(4, 15) + 0.7
    torch.testing.assert_close(chain(rows), rows @ jac)


def test_a_square_non_diagonal_jacobian_is_not_taken_for_a_diagonal():
    """Normal(loc = M theta, scale = exp(theta / 2)) with a square, non-diagonal M: loc has as many entries as
    theta, but the probes must reject a diagonal, and the chain is rows @ J (6 rows, 8 parameters)."""
    mix = torch.eye(4, dtype=F64) + 0.3 * torch.randn(4, 4, generator=gen(10), dtype=F64)

    def make(t):
        return D.Independent(D.Normal(mix @ t, (0.5 * t).exp()), 1)

    theta = torch.randn(4, generator=gen(11), dtype=F64)
    chain = theta_chain(make, theta, distribution_params, make(theta.detach()))
    assert not chain.diagonal
    jac = jacobian(lambda t: torch.cat([v.reshape(-1) for v in distribution_params(make(t)).values()]), theta)
    rows = torch.randn(6, 8, generator=gen(12), dtype=F64)
    torch.testing.assert_close(chain(rows), rows @ jac)
