"""gradlab.relax: REBAR / RELAX per sample against the formula, the variance loss, the coordinate surrogate.

Unbiasedness and variance are checked in tests/test_discrete.py; every control variate is unbiased, so
these tests pin the estimate itself: for the same draws (z, b, z~) the estimator must return

    [f(b) - c(z~)] grad log p(b) + grad c(z) - grad c(z~),   c(z) = eta f(sigma_tau(z)) (+ r_phi(z)),

with the chain rule to theta (a dense, non-square Jacobian), at a non-default eta and tau.
"""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from gradlab.discrete import sample_z_b_ztilde
from gradlab.relax import REBAR, RELAX, CoordinateSurrogate

F64 = torch.float64
MIX = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)  # 6 logits from 3 thetas
THETA = torch.tensor([0.4, -0.7, 1.1], dtype=F64)
TARGET = torch.tensor([0.9, 0.1, 0.6, 0.3, 0.8, 0.2], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bernoulli(theta):
    return Independent(Bernoulli(logits=MIX @ theta), 1)


def onehot(theta):
    return OneHotCategorical(logits=(MIX @ theta).reshape(2, 3))


def f_bits(b):
    """Non-linear, non-separable cost of (N, 6) values in [0, 1]."""
    return ((b - TARGET) ** 2).sum(-1) + 1.5 * b[..., 0] * b[..., 3] - 0.5 * b[..., 5]


def f_onehot(b):
    """Cost of (N, 2, 3) one-hot vectors (or simplex points)."""
    flat = b.reshape(b.shape[0], -1)
    return ((flat - TARGET) ** 2).sum(-1) + 2.0 * flat[:, 1] * flat[:, 5]


def reference(est, f, make, kind, num_samples, seed, r_phi=None):
    """The formula, sample by sample, from the same draws; the chain rule by the Jacobian of the logits."""
    logits_of = (lambda t: make(t).base_dist.logits) if kind == "bernoulli" else (lambda t: make(t).logits)
    logits = logits_of(THETA)
    lam = logits.detach().expand(num_samples, *logits.shape).clone().requires_grad_(True)
    z, b, score, z_tilde = sample_z_b_ztilde(kind, lam, gen(seed))
    eta, tau = float(est.eta.detach()), float(est.tau.detach())

    def relaxed(v):
        return torch.sigmoid(v / tau) if kind == "bernoulli" else torch.softmax(v / tau, dim=-1)

    def c(v):
        out = eta * f(relaxed(v))
        return out if r_phi is None else out + r_phi(v).reshape(-1)

    (g_c,) = torch.autograd.grad((c(z) - c(z_tilde)).sum(), lam)
    weight = (f(b) - c(z_tilde)).detach().reshape(num_samples, *([1] * logits.dim()))
    g_lam = (weight * score + g_c).reshape(num_samples, -1)
    jac = torch.autograd.functional.jacobian(lambda t: logits_of(t).reshape(-1), THETA)  # (P, D)
    return g_lam @ jac


@pytest.mark.parametrize("kind, make, f", [("bernoulli", bernoulli, f_bits), ("onehot", onehot, f_onehot)])
@pytest.mark.parametrize("eta, tau", [(0.7, 0.3), (1.6, 2.0)])
def test_rebar_per_sample_estimates_are_the_formula(kind, make, f, eta, tau):
    est = REBAR(eta=eta, tau=tau).double()
    got = est.per_sample_grads(f, make, THETA, num_samples=7, generator=gen(5))
    want = reference(est, f, make, kind, 7, 5)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the check has power: the relaxation at another temperature gives other estimates
    other = reference(REBAR(eta=eta, tau=1.0).double(), f, make, kind, 7, 5)
    assert (other - want).abs().max() > 1e-3


def test_relax_per_sample_estimates_are_the_formula_with_a_surrogate():
    surrogate = CoordinateSurrogate(5, seed=3).double()
    est = RELAX(surrogate, eta=0.4, tau=0.8).double()
    got = est.per_sample_grads(f_bits, bernoulli, THETA, num_samples=6, generator=gen(9))
    want = reference(est, f_bits, bernoulli, "bernoulli", 6, 9, r_phi=surrogate)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_variance_loss_value_and_its_temperature_gradient():
    """grads_and_variance: the loss is (1/N) sum_n ||g_n||^2 of the returned estimates (N != number of
    parameters), and its derivative in log tau matches a central finite difference at fixed draws."""
    est = REBAR(eta=0.9, tau=0.5).double()
    g, loss = est.grads_and_variance(f_bits, bernoulli, THETA, num_samples=5, generator=gen(12))
    torch.testing.assert_close(loss.detach(), g.pow(2).sum(1).mean(), rtol=1e-12, atol=1e-12)
    (d_log_tau,) = torch.autograd.grad(loss, est.log_tau)

    def loss_at(log_tau):
        other = REBAR(eta=0.9, tau=0.5).double()
        with torch.no_grad():
            other.log_tau.fill_(log_tau)  # set in float64 (the constructor rounds tau to float32)
        return float(other.grads_and_variance(f_bits, bernoulli, THETA, num_samples=5, generator=gen(12))[1].detach())

    h = 1e-5
    log_tau = float(est.log_tau.detach())
    fd = (loss_at(log_tau + h) - loss_at(log_tau - h)) / (2 * h)
    assert abs(fd) > 1e-3
    assert abs(float(d_log_tau) - fd) < 1e-5 * max(1.0, abs(fd))


def test_coordinate_surrogate_is_a_sum_over_coordinates():
    r = CoordinateSurrogate(4, seed=2).double()
    z = torch.randn(3, 2, 5, generator=gen(4), dtype=F64)
    per_coordinate = r.net(z.reshape(3, 10, 1)).reshape(3, 10)
    torch.testing.assert_close(r(z), per_coordinate.sum(1))
    assert r(z).abs().min() > 1e-3
