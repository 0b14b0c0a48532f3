"""Importance-sampled score function: closed-form mean and variance for a Gaussian proposal of scale c sigma,
the q = p reduction, the self-normalised bias (power check), conformance-style checks and errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from gradlab import ImportanceSampledScore, expectation_grad, scaled_proposal, surrogate_loss

F64 = torch.float64
MU, SIGMA = 0.6, 0.8
THETA = torch.tensor([MU, SIGMA], dtype=F64)
MAKE = lambda t: D.Normal(t[0], t[1])  # noqa: E731
LINEAR = lambda x: x  # noqa: E731


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def is_variance_mu(c: float) -> float:
    r"""Var of w x s_mu under q = N(mu, c^2 sigma^2), f = x: second moment E_p[w (x z / sigma)^2] minus 1,
    E_p[w g(z)] = c / sqrt(a) E_{z ~ N(0, 1/a)}[g], a = 2 - 1/c^2 (finite for c^2 > 1/2)."""
    a = 2 - 1 / c**2
    v = 1 / a
    return c / math.sqrt(a) * (MU**2 * v + 3 * SIGMA**2 * v**2) / SIGMA**2 - 1.0


@pytest.mark.parametrize("c", [1.0, 1.5, 0.9])
def test_closed_form_mean_and_variance_of_the_mu_coordinate(c):
    """d/dmu E[x] = 1 and d/dsigma E[x] = 0; the variance of the mu coordinate matches the closed form."""
    grads = expectation_grad(LINEAR, MAKE, THETA, estimator=ImportanceSampledScore(scaled_proposal(c)),
                             num_samples=200_000, generator=gen(1))
    se = grads.std(0) / math.sqrt(len(grads))
    assert ((grads.mean(0) - torch.tensor([1.0, 0.0], dtype=F64)).abs() < 5 * se).all()
    assert abs(grads[:, 0].var().item() / is_variance_mu(c) - 1) < 0.05, (grads[:, 0].var(), is_variance_mu(c))


def test_variance_is_smallest_for_a_wider_proposal_here_and_explodes_near_the_limit():
    """The closed form: c = 1.2 beats c = 1 for f = x, and the variance grows without bound as c^2 -> 1/2."""
    assert is_variance_mu(1.2) < is_variance_mu(1.0)
    assert is_variance_mu(0.75) > 3 * is_variance_mu(1.0) and is_variance_mu(0.71) > 10 * is_variance_mu(1.0)


def test_proposal_equal_to_p_gives_the_score_function_numbers():
    f = lambda x: (x - 0.3) ** 2
    is_grads = expectation_grad(f, MAKE, THETA, estimator=ImportanceSampledScore(scaled_proposal(1.0)),
                                num_samples=33, baseline="rloo", generator=gen(2))
    plain = expectation_grad(f, MAKE, THETA, estimator="score", num_samples=33, baseline="rloo", generator=gen(2))
    torch.testing.assert_close(is_grads, plain)


def batch_errors(self_normalised, num_batches=1500, num_samples=2, seed=11):
    """(mean over small batches - truth) / standard error for f = x + 4 (a level that SNIS mis-weights)."""
    est, g = ImportanceSampledScore(scaled_proposal(1.6), self_normalised=self_normalised), gen(seed)
    means = torch.stack([expectation_grad(lambda x: x + 4.0, MAKE, THETA, estimator=est, num_samples=num_samples,
                                          generator=g).mean(0) for _ in range(num_batches)])
    return (means.mean(0) - torch.tensor([1.0, 0.0], dtype=F64)) / (means.std(0) / math.sqrt(num_batches))


def test_plain_weights_are_unbiased_at_n_2():
    z = batch_errors(False)
    assert (z.abs() < 4).all(), z


def test_self_normalised_weights_are_biased_power_check():
    """Measured: about 10 standard errors on the sigma coordinate at 1500 batches of N = 2."""
    z = batch_errors(True)
    assert (z.abs() > 6).any(), z


def test_a_fixed_product_proposal_and_the_surrogate():
    """Independent Normal with a fixed proposal distribution; the surrogate's gradient is the mean estimate."""
    make = lambda t: D.Independent(D.Normal(t[:2], t[2:].exp()), 1)
    theta = torch.tensor([0.2, -0.5, -0.3, 0.1], dtype=F64)
    q = D.Independent(D.Normal(torch.zeros(2, dtype=F64), 1.5 * torch.ones(2, dtype=F64)), 1)
    f = lambda x: (x**2).sum(1) + x[:, 0]
    est = ImportanceSampledScore(q)
    grads = expectation_grad(f, make, theta, estimator=est, num_samples=100_000, generator=gen(4))
    leaf = theta.clone().requires_grad_(True)
    s = leaf[2:].exp()
    exact = torch.autograd.grad((leaf[:2] ** 2 + s**2).sum() + leaf[0], leaf)[0]
    se = grads.std(0) / math.sqrt(len(grads))
    assert ((grads.mean(0) - exact).abs() < 5 * se).all()
    loss = surrogate_loss(f, make(leaf), estimator=est, num_samples=50, generator=gen(5))
    per_sample = expectation_grad(f, make, theta, estimator=est, num_samples=50, generator=gen(5))
    torch.testing.assert_close(torch.autograd.grad(loss, leaf)[0], per_sample.mean(0))


def test_same_generator_same_numbers_and_global_rng_untouched():
    est = ImportanceSampledScore(scaled_proposal(1.3), self_normalised=True)
    state = torch.get_rng_state()
    a = expectation_grad(LINEAR, MAKE, THETA, estimator=est, num_samples=11, generator=gen(6))
    b = expectation_grad(LINEAR, MAKE, THETA, estimator=est, num_samples=11, generator=gen(6))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="proposal"):
        ImportanceSampledScore(3)
    with pytest.raises(TypeError, match="self_normalised"):
        ImportanceSampledScore(scaled_proposal(2.0), self_normalised=1)
    with pytest.raises(ValueError, match="factor"):
        scaled_proposal(-1.0)
    wrong_shape = ImportanceSampledScore(D.Normal(torch.zeros(3, dtype=F64), 1.0))
    with pytest.raises(ValueError, match="proposal"):
        expectation_grad(LINEAR, MAKE, THETA, estimator=wrong_shape, num_samples=5, generator=gen(7))
    with pytest.raises(ValueError, match="Normal"):
        expectation_grad(lambda x: x, lambda t: D.Bernoulli(probs=t.sigmoid()), THETA[:1],
                         estimator=ImportanceSampledScore(scaled_proposal(2.0)), num_samples=5, generator=gen(7))
    with pytest.raises(ValueError, match="baseline"):
        expectation_grad(LINEAR, MAKE, THETA, estimator=ImportanceSampledScore(scaled_proposal(2.0)),
                         num_samples=5, baseline="optimal", generator=gen(7))
    with pytest.raises(ValueError, match="num_samples"):
        expectation_grad(LINEAR, MAKE, THETA, estimator=ImportanceSampledScore(scaled_proposal(2.0)),
                         num_samples=0, generator=gen(7))


def test_the_protocol_conformance_checks():
    """The registry's conformance checks (shapes, dtypes, generator, RNG, surrogate): a wider proposal on its
    Gaussian problem, q = p itself on its discrete ones with one cost per sample."""
    from test_conformance import PROBLEM, check_conformance

    check_conformance(ImportanceSampledScore(scaled_proposal(1.3)), PROBLEM["gaussian"])
    for name in ["bernoulli", "categorical", "onehot"]:
        check_conformance(ImportanceSampledScore(lambda dist: dist), PROBLEM[name])


def test_reported_costs_and_surrogate_value_are_weighted_costs():
    """The costs are w_n f(x_n), x_n ~ q, w = p/q (per sample, same draws), so the surrogate's value is
    their mean and estimates E_p[f] (closed form) within its standard error."""
    from gradlab.distributions import draw

    make = lambda t: D.Independent(D.Normal(t[:2], t[2:].exp()), 1)  # noqa: E731
    theta = torch.tensor([0.2, -0.5, -0.3, 0.1], dtype=F64)
    q = D.Independent(D.Normal(torch.tensor([0.1, 0.0], dtype=F64), torch.tensor([1.3, 1.6], dtype=F64)), 1)
    f = lambda x: (x**2).sum(1) + x[:, 0]  # noqa: E731
    est = ImportanceSampledScore(q)
    x = draw(q, (9,), generator=gen(7))
    weights = (make(theta).log_prob(x) - q.log_prob(x)).exp()
    estimate = est.theta_estimate(f, make, theta, num_samples=9, generator=gen(7))
    torch.testing.assert_close(estimate.costs, weights * f(x), rtol=1e-12, atol=1e-12)
    value = surrogate_loss(f, make(theta), estimator=est, num_samples=9, generator=gen(7))
    torch.testing.assert_close(value, (weights * f(x)).mean(), rtol=1e-12, atol=1e-12)
    many = est.theta_estimate(f, make, theta, num_samples=100_000, generator=gen(8)).costs
    truth = float((theta[:2] ** 2 + theta[2:].exp() ** 2).sum() + theta[0])
    se = float(many.std() / math.sqrt(len(many)))
    assert abs(float(many.mean()) - truth) < 4 * se
    assert abs(float(f(draw(q, (100_000,), generator=gen(8))).mean()) - truth) > 4 * se  # unweighted: rejected


def test_self_normalised_per_sample_estimates_are_the_formula():
    """g_n = (w_n / mean_m w_m) f(x_n) s_n per sample (x_n ~ q, N = 7, two coordinates of loc and scale);
    the plain weights give w_n f(x_n) s_n on the same draws."""
    from torch.autograd.functional import jacobian

    from gradlab.distributions import draw

    make = lambda t: D.Independent(D.Normal(t[:2], t[2:].exp()), 1)  # noqa: E731
    theta = torch.tensor([0.2, -0.5, -0.3, 0.1], dtype=F64)
    f = lambda x: (x**2).sum(1) + x[:, 0]  # noqa: E731
    q = scaled_proposal(1.4)(make(theta))
    x = draw(q, (7,), generator=gen(9))
    weights = (make(theta).log_prob(x) - q.log_prob(x)).exp()
    scores = jacobian(lambda t: make(t).log_prob(x), theta)  # (7, 4)
    for normalised, w in [(False, weights), (True, weights / weights.mean())]:
        est = ImportanceSampledScore(scaled_proposal(1.4), self_normalised=normalised)
        got = expectation_grad(f, make, theta, estimator=est, num_samples=7, generator=gen(9))
        torch.testing.assert_close(got, (w * f(x)).unsqueeze(1) * scores, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalised", [False, True], ids=["plain", "self-normalised"])
@pytest.mark.parametrize("baseline", [1.5, "rloo"], ids=["constant", "rloo"])
def test_per_sample_estimates_with_a_baseline_weight_the_baseline_too(baseline, normalised):
    r"""$g_n = \tilde w_n (f(x_n) - b_n) s_n$, $x_n \sim q$: the baseline term carries the weight as well
    (an unweighted $b_n s_n$ has mean $\mathbb E_q[s] \ne 0$ for $q \ne p$). $b_n$ is the constant, or the
    mean of the other $N - 1$ raw costs (N = 7, two coordinates of loc and scale, non-diagonal $J$)."""
    from torch.autograd.functional import jacobian

    from gradlab.distributions import draw

    mix = torch.tensor([[1.0, 0.3], [-0.4, 1.0]], dtype=F64)
    make = lambda t: D.Independent(D.Normal(mix @ t[:2], t[2:].exp()), 1)  # noqa: E731
    theta = torch.tensor([0.2, -0.5, -0.3, 0.1], dtype=F64)
    f = lambda x: (x**2).sum(1) + x[:, 0]  # noqa: E731
    q = scaled_proposal(1.4)(make(theta))
    n = 7
    x = draw(q, (n,), generator=gen(12))
    weights = (make(theta).log_prob(x) - q.log_prob(x)).exp()
    weights = weights / weights.mean() if normalised else weights
    scores = jacobian(lambda t: make(t).log_prob(x), theta)  # (7, 4)
    values = f(x)
    b = torch.full_like(values, baseline) if baseline == 1.5 else (values.sum() - values) / (n - 1)
    est = ImportanceSampledScore(scaled_proposal(1.4), self_normalised=normalised)
    got = expectation_grad(f, make, theta, estimator=est, num_samples=n, baseline=baseline, generator=gen(12))
    torch.testing.assert_close(got, (weights * (values - b)).unsqueeze(1) * scores, rtol=1e-10, atol=1e-12)
