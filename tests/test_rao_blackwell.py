"""Rao-Blackwellisation: per-sample closed forms (Bernoulli differences, local scores), exact enumeration,
variance never above the plain score function's, a power check on a wrong conditioning, errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import distributions as D
from torch.nn import functional as F

from gradlab import RaoBlackwell, expectation_grad
from gradlab.distributions import draw
from gradlab.rao_blackwell import parameter_coordinates

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


THETA_B = torch.tensor([0.3, -1.1, 0.8, 0.1], dtype=F64)
MAKE_B = lambda t: D.Independent(D.Bernoulli(probs=torch.sigmoid(t)), 1)  # noqa: E731


def cost_b(x):
    """Couples the coordinates (not separable): products and a square."""
    return (x[:, 0] - 0.3) ** 2 + 2 * x[:, 1] * x[:, 2] - x[:, 0] * x[:, 3] + 0.5 * x[:, 1] * x[:, 3]


def exact_bernoulli_grad(f, theta):
    leaf = theta.clone().requires_grad_(True)
    probs, total = torch.sigmoid(leaf), 0.0
    for bits in itertools.product([0.0, 1.0], repeat=theta.numel()):
        x = torch.tensor([bits], dtype=F64)
        total = total + f(x)[0] * D.Bernoulli(probs=probs).log_prob(x[0]).sum().exp()
    return torch.autograd.grad(total, leaf)[0]


def test_bernoulli_per_sample_estimate_is_the_difference_of_the_two_values():
    r"""E[f s_d | x_{-d}] = (f(x_{-d}, 1) - f(x_{-d}, 0)) dp_d/dtheta_d, p_d = sigm(theta_d)."""
    grads = expectation_grad(cost_b, MAKE_B, THETA_B, estimator="score", num_samples=13, baseline=RaoBlackwell(),
                             generator=gen(1))
    x = draw(MAKE_B(THETA_B), (13,), generator=gen(1))  # the same samples (same generator state)
    p = torch.sigmoid(THETA_B)
    expected = torch.stack([
        (cost_b(torch.cat([x[:, :d], torch.ones_like(x[:, :1]), x[:, d + 1:]], 1))
         - cost_b(torch.cat([x[:, :d], torch.zeros_like(x[:, :1]), x[:, d + 1:]], 1))) * p[d] * (1 - p[d])
        for d in range(4)], 1)
    torch.testing.assert_close(grads, expected)


def test_bernoulli_mean_matches_enumeration_and_variance_drops():
    exact = exact_bernoulli_grad(cost_b, THETA_B)
    rb = expectation_grad(cost_b, MAKE_B, THETA_B, estimator="score", num_samples=4000, baseline=RaoBlackwell(),
                          generator=gen(2))
    plain = expectation_grad(cost_b, MAKE_B, THETA_B, estimator="score", num_samples=4000, generator=gen(2))
    se = rb.std(0) / math.sqrt(4000)
    assert ((rb.mean(0) - exact).abs() < 4 * se).all(), (rb.mean(0), exact, se)
    assert (rb.var(0) < plain.var(0)).all(), (rb.var(0), plain.var(0))


def softmax_categorical(theta):
    """Three categorical coordinates with four values each, probs = softmax of a (3, 4) table of theta."""
    return D.Independent(D.Categorical(probs=torch.softmax(theta.reshape(3, 4), 1)), 1)


def cost_c(x):
    x = x.to(F64)
    return torch.sin(x[:, 0] + 2 * x[:, 1]) + (x[:, 2] - 1.5) ** 2 * x[:, 0]


def test_categorical_product_matches_enumeration():
    theta = torch.linspace(-1, 1, 12, dtype=F64) * torch.tensor([1.0, -0.5, 0.8] * 4, dtype=F64)
    leaf = theta.clone().requires_grad_(True)
    dist = softmax_categorical(leaf)
    values = torch.tensor(list(itertools.product(range(4), repeat=3)))
    exact = torch.autograd.grad((cost_c(values) * dist.log_prob(values).exp()).sum(), leaf)[0]
    rb = expectation_grad(cost_c, softmax_categorical, theta, estimator="score", num_samples=3000,
                          baseline=RaoBlackwell(), generator=gen(3))
    plain = expectation_grad(cost_c, softmax_categorical, theta, estimator="score", num_samples=3000, generator=gen(3))
    se = rb.std(0) / math.sqrt(3000)
    assert ((rb.mean(0) - exact).abs() < 4 * se + 1e-12).all(), (rb.mean(0) - exact) / se
    assert rb.var(0).sum() < 0.5 * plain.var(0).sum()


# ------------------------------------------------------------------------------ separable costs
MIX = torch.tensor([[1.0, 0.5], [0.2, -1.0], [-0.4, 0.3]], dtype=F64)
THETA_N = torch.tensor([0.4, -0.2], dtype=F64)


def normal_product(theta):
    z = MIX @ theta
    return D.Independent(D.Normal(z, F.softplus(z) + 0.4), 1)


def parts(x):
    return torch.stack([torch.sin(x[:, 0]), x[:, 1] ** 2, 0.5 * x[:, 2]], 1)


def cost_n(x):
    return parts(x).sum(1)


def exact_normal_grad():
    leaf = THETA_N.clone().requires_grad_(True)
    b = normal_product(leaf).base_dist
    m, s = b.loc, b.scale
    value = torch.sin(m[0]) * torch.exp(-0.5 * s[0] ** 2) + m[1] ** 2 + s[1] ** 2 + 0.5 * m[2]
    return torch.autograd.grad(value, leaf)[0]


def test_separable_cost_local_score_closed_form_and_mean():
    """Per coordinate d: f_d(x_d) s_d(x_d) (the local score), then the chain rule to theta."""
    rb = expectation_grad(cost_n, normal_product, THETA_N, estimator="score", num_samples=4000,
                          baseline=RaoBlackwell(parts), generator=gen(4))
    x = draw(normal_product(THETA_N), (4000,), generator=gen(4))
    leaf = THETA_N.clone().requires_grad_(True)
    base = normal_product(leaf).base_dist
    local = (parts(x) * D.Normal(base.loc, base.scale).log_prob(x)).sum()  # sum_n sum_d f_d(x_nd) log p_d(x_nd)
    torch.testing.assert_close(rb.mean(0), torch.autograd.grad(local, leaf)[0] / 4000)
    plain = expectation_grad(cost_n, normal_product, THETA_N, estimator="score", num_samples=4000, generator=gen(4))
    se = rb.std(0) / math.sqrt(4000)
    assert ((rb.mean(0) - exact_normal_grad()).abs() < 4 * se).all()
    assert (rb.var(0) < plain.var(0)).all()


def test_wrong_conditioning_is_detected_power_check():
    """Parts that sum to f but put x_1's term in column 0 (not a function of x_0): biased, and the same
    4-standard-error test rejects it (the check has power)."""
    wrong = lambda x: torch.stack([torch.sin(x[:, 0]) + x[:, 1] ** 2, torch.zeros_like(x[:, 1]), 0.5 * x[:, 2]], 1)
    rb = expectation_grad(cost_n, normal_product, THETA_N, estimator="score", num_samples=4000,
                          baseline=RaoBlackwell(wrong), generator=gen(4))
    se = rb.std(0) / math.sqrt(4000)
    assert ((rb.mean(0) - exact_normal_grad()).abs() > 6 * se).any()


# ------------------------------------------------------------------------------ conformance-style
def test_parameter_coordinates():
    assert parameter_coordinates(normal_product(THETA_N)).tolist() == [0, 1, 2, 0, 1, 2]
    assert parameter_coordinates(softmax_categorical(torch.zeros(12, dtype=F64))).tolist() == sorted([0, 1, 2] * 4)


def test_same_generator_same_numbers_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = expectation_grad(cost_b, MAKE_B, THETA_B, estimator="score", num_samples=9, baseline=RaoBlackwell(), generator=gen(5))
    b = expectation_grad(cost_b, MAKE_B, THETA_B, estimator="score", num_samples=9, baseline=RaoBlackwell(), generator=gen(5))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="parts"):
        RaoBlackwell(parts=3)
    with pytest.raises(ValueError, match="parts must sum to f"):
        expectation_grad(lambda x: cost_n(x) + 1, normal_product, THETA_N, estimator="score", num_samples=5,
                         baseline=RaoBlackwell(parts), generator=gen(6))
    with pytest.raises(ValueError, match="parts"):
        expectation_grad(cost_n, normal_product, THETA_N, estimator="score", num_samples=5,
                         baseline=RaoBlackwell(lambda x: x[:, :2]), generator=gen(6))
    with pytest.raises(ValueError, match="discrete factors"):
        expectation_grad(cost_n, normal_product, THETA_N, estimator="score", num_samples=5,
                         baseline=RaoBlackwell(), generator=gen(6))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        expectation_grad(lambda x: x.sum((1, 2)), lambda t: D.Independent(D.Bernoulli(logits=t.reshape(2, 2)), 2),
                         torch.zeros(4, dtype=F64), estimator="score", num_samples=5, baseline=RaoBlackwell(),
                         generator=gen(6))
