"""Measure-valued estimator: couplings, closed-form variances, discrete unbiasedness, cost, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import gaussian_closed_forms as gc
from gradlab.expectation import exact_expectation_grad, expectation_grad
from gradlab.measure_valued import double_sided_maxwell, weibull

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_weibull_and_maxwell_moments():
    """W ~ Weibull(sqrt 2, 2): E W = sqrt(pi/2), E W^2 = 2. M double-sided Maxwell: E M = 0,
    E M^2 = 3, E M^4 = 15; M U ~ N(0, 1): variance 1, fourth moment 3."""
    like = torch.zeros((), dtype=F64)
    n = 400_000
    w = weibull((n,), like, gen(1))
    gc.assert_mean(torch.stack([w, w**2], 1), torch.tensor([math.sqrt(math.pi / 2), 2.0], dtype=F64))
    m = double_sided_maxwell((n,), like, gen(2))
    gc.assert_mean(torch.stack([m, m**2, m**4], 1), torch.tensor([0.0, 3.0, 15.0], dtype=F64))
    z = m * torch.rand(n, generator=gen(3), dtype=F64)
    gc.assert_mean(torch.stack([z, z**2, z**4], 1), torch.tensor([0.0, 1.0, 3.0], dtype=F64))


@pytest.mark.parametrize("k", gc.CASES)
def test_gaussian_closed_form_mean_and_variance(k):
    """Coupled measure-valued estimator: Var_mu = a^2 (16 - 4 pi)/pi (Weibull pair),
    Var_sigma = 4a^2 + 4 sigma^2 (Maxwell / Maxwell*Uniform pair); derivation in gaussian_closed_forms."""
    grads = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="measure_valued",
                             num_samples=200_000, generator=gen(4))
    gc.assert_mean(grads, gc.true_grad(k))
    gc.assert_variance(grads, gc.measure_valued_variance(k))


def test_coupling_beats_independent_negative_part():
    """Common random numbers matter: the scale estimator's variance 4a^2 + 4sigma^2 is below the
    score function's for every k here (and the mean estimator's below pathwise for a small |a|)."""
    for k in gc.CASES:
        assert gc.measure_valued_variance(k)[1] < gc.score_variance(k)[1]
    assert gc.measure_valued_variance(0.3)[0] < gc.pathwise_variance(0.3)[0]


def test_discrete_unbiased_against_enumeration():
    weights = torch.tensor([1.0, 2.0, -3.0], dtype=F64)
    cases = [
        (lambda x: (x * weights).sum(-1) ** 2, lambda t: D.Bernoulli(logits=t),
         torch.tensor([0.3, -0.5, 1.0], dtype=F64)),
        (lambda x: (x * weights).sum(-1).cos(), lambda t: D.Independent(D.Bernoulli(probs=t.sigmoid()), 1),
         torch.tensor([0.3, -0.5, 1.0], dtype=F64)),
        (lambda x: (2.0 * x[:, 0] - x[:, 1]).to(F64) ** 2, lambda t: D.Categorical(logits=t.reshape(2, 3)),
         torch.tensor([0.2, -0.4, 0.9, 0.0, 0.5, -1.0], dtype=F64)),
    ]
    for f, make, th in cases:
        exact = exact_expectation_grad(f, make, th)
        grads = expectation_grad(f, make, th, estimator="measure_valued", num_samples=20_000,
                                 generator=gen(5))
        gc.assert_mean(grads, exact)


def test_bernoulli_per_sample_is_difference_between_states():
    """One Bernoulli(p) with theta = p: the estimate is f(1) - f(0) for every sample, exactly."""
    grads = expectation_grad(lambda x: 3.0 * x + 1.0, lambda t: D.Bernoulli(probs=t), torch.tensor(0.3, dtype=F64),
                             estimator="measure_valued", num_samples=10, generator=gen(6))
    torch.testing.assert_close(grads, torch.full((10,), 3.0, dtype=F64))


def test_only_parameters_theta_moves_are_evaluated():
    """Normal(theta, 1) with d = 5: 2 evaluations per mean coordinate, none for the fixed scale
    (plus one at each sample: the costs the protocol's Estimate reports)."""
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return x.pow(2).sum(-1)

    th = torch.zeros(5, dtype=F64)
    grads = expectation_grad(f, lambda t: D.Independent(D.Normal(t, 1.0), 1), th,
                             estimator="measure_valued", num_samples=8, generator=gen(7))
    assert sum(calls) == 8 + 8 * 5 * 2
    assert grads.shape == (8, 5)


def test_unsupported_distribution():
    with pytest.raises(ValueError, match="measure_valued"):
        expectation_grad(lambda x: x, lambda t: D.Gamma(t[0], t[1]), torch.ones(2), estimator="measure_valued",
                         num_samples=3)
