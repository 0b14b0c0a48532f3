"""Regression control variates: closed-form Jacobians, the normal equations, exactness on the span of
the features, the same-batch bias (measured, with a power check) and the unbiased cross-fit / LOO fits."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import distributions as D
from torch.nn import functional as F

from gradlab import RegressionControlVariates, expectation_grad, surrogate_loss
from gradlab.control_variates import ScoreBatch
from gradlab.control_variates_regression import fit_coefficients, fold_ids

F64 = torch.float64
MIX = torch.tensor([[1.0, 0.5, 0.0], [0.2, 1.0, -0.3], [-0.4, 0.3, 0.8]], dtype=F64)
THETA = torch.tensor([0.5, -0.3, 0.2], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixed_normal(theta):
    """Three Gaussian coordinates whose means and scales all depend on every parameter."""
    z = MIX @ theta
    return D.Independent(D.Normal(z, F.softplus(z) + 0.3), 1)


def quadratic_in_features(x):
    """In the span of the quadratic features: 1.5 - x_1 + 2 x_2 + 0.5 x_0^2 - x_2^2."""
    return 1.5 - x[:, 1] + 2 * x[:, 2] + 0.5 * x[:, 0] ** 2 - x[:, 2] ** 2


def exact_quadratic_grad(theta):
    leaf = theta.clone().requires_grad_(True)
    base = mixed_normal(leaf).base_dist
    m, s = base.loc, base.scale
    value = 1.5 - m[1] + 2 * m[2] + 0.5 * (m[0] ** 2 + s[0] ** 2) - (m[2] ** 2 + s[2] ** 2)
    return torch.autograd.grad(value, leaf)[0]


def test_mean_jacobian_matches_the_closed_form_moments():
    """d E[x] / d loc = I, d E[x^2] / d loc = 2 loc, d E[x^2] / d scale = 2 scale, constant: zeros."""
    dist = mixed_normal(THETA)
    jac = RegressionControlVariates("quadratic").mean_jacobian(dist, 7)
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    eye, zero = torch.eye(3, dtype=F64), torch.zeros(3, 3, dtype=F64)
    expected = torch.cat([torch.zeros(1, 6, dtype=F64), torch.cat([eye, zero], 1),
                          torch.cat([torch.diag(2 * loc), torch.diag(2 * scale)], 1)])
    torch.testing.assert_close(jac, expected)


def test_constant_feature_is_a_fitted_baseline():
    """h = 1: E[h] does not depend on the parameters (zero Jacobian), u = s, and b_nj = c_j is one number per
    coordinate for fit="same" (the intercept regression of f s_j on s_j)."""
    dist = mixed_normal(THETA)
    assert torch.equal(RegressionControlVariates("constant").mean_jacobian(dist, 1), torch.zeros(1, 6, dtype=F64))
    x = torch.randn(40, 3, generator=gen(11), dtype=F64)
    values, scores = (x**2).sum(1), torch.randn(40, 6, generator=gen(12), dtype=F64)
    b, correction = RegressionControlVariates("constant", fit="same").fit(ScoreBatch(values, scores, x, dist, None))
    y = values.unsqueeze(1) * scores
    cov = ((scores - scores.mean(0)) * (y - y.mean(0))).sum(0) / ((scores - scores.mean(0)) ** 2).sum(0)
    torch.testing.assert_close(b, cov.expand(40, 6))
    assert torch.equal(correction, torch.zeros(40, 6, dtype=F64))


def test_one_coefficient_is_cov_over_var_and_several_solve_the_normal_equations():
    g = gen(1)
    u, y = torch.randn(37, 2, 3, generator=g, dtype=F64), torch.randn(37, 2, generator=g, dtype=F64)
    y = y + u[..., 0] - 0.5 * u[..., 2]
    single = fit_coefficients(u[..., :1], y, fold_ids(37, "same", 2), leave_out=False)[0, :, 0]
    for j in range(2):
        cov = torch.cov(torch.stack([u[:, j, 0], y[:, j]]))
        torch.testing.assert_close(single[j], cov[0, 1] / cov[0, 0])
        design = torch.cat([torch.ones(37, 1, dtype=F64), u[:, j]], 1)  # least squares with an intercept
        ref = torch.linalg.lstsq(design, y[:, j].unsqueeze(1)).solution[1:, 0]
        torch.testing.assert_close(fit_coefficients(u, y, fold_ids(37, "same", 2), False)[0, j], ref)


@pytest.mark.parametrize("fit", ["crossfit", "loo"])
def test_left_out_coefficients_are_fitted_without_their_own_samples(fit):
    g = gen(2)
    u, y = torch.randn(23, 2, 2, generator=g, dtype=F64), torch.randn(23, 2, generator=g, dtype=F64)
    groups = fold_ids(23, fit, 3)
    coef = fit_coefficients(u, y, groups, leave_out=True)
    for group in [0, 1, int(groups.max())]:
        keep = groups != group
        ref = fit_coefficients(u[keep], y[keep], torch.zeros(int(keep.sum()), dtype=torch.long), False)[0]
        torch.testing.assert_close(coef[group], ref)


@pytest.mark.parametrize("fit", ["same", "crossfit", "loo"])
def test_zero_variance_when_f_is_in_the_span_of_the_features(fit):
    """f s = c^T u + g exactly, so every per-sample estimate is the true gradient (uneven N = 41); one object
    at two parameters (its cached Jacobian of E[h] must follow the parameters)."""
    control = RegressionControlVariates("quadratic", fit=fit, num_folds=3)
    for theta in [THETA, torch.tensor([-0.7, 0.9, 0.4], dtype=F64)]:
        grads = expectation_grad(quadratic_in_features, mixed_normal, theta, estimator="score", num_samples=41,
                                 baseline=control, generator=gen(3))
        torch.testing.assert_close(grads, exact_quadratic_grad(theta).expand_as(grads), rtol=1e-7, atol=1e-7)


def exact_bernoulli_grad(f, theta):
    leaf = theta.clone().requires_grad_(True)
    probs = torch.sigmoid(leaf)
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=theta.numel()):
        x = torch.tensor([bits], dtype=F64)
        total = total + f(x)[0] * D.Bernoulli(probs=probs).log_prob(x[0]).sum().exp()
    return torch.autograd.grad(total, leaf)[0]


def test_bernoulli_product_linear_cost_is_exact_despite_collinear_features():
    """For Bernoulli x^2 = x (collinear quadratic features: the pseudo-inverse); f linear in x is in the span."""
    theta = torch.tensor([0.3, -1.1, 0.8, 0.1], dtype=F64)
    make = lambda t: D.Independent(D.Bernoulli(probs=torch.sigmoid(t)), 1)
    f = lambda x: 0.7 - 2 * x[:, 0] + x[:, 2] + 3 * x[:, 3]
    grads = expectation_grad(f, make, theta, estimator="score", num_samples=30,
                             baseline=RegressionControlVariates("quadratic", fit="loo"), generator=gen(4))
    torch.testing.assert_close(grads, exact_bernoulli_grad(f, theta).expand_as(grads), rtol=1e-7, atol=1e-7)


# ------------------------------------------------------------------------------ the same-batch bias
MAKE_1D = lambda t: D.Normal(t[0], t[1])  # noqa: E731
THETA_1D = torch.tensor([0.4, 0.9], dtype=F64)
COST_1D = lambda x: torch.cos(2 * x) + x  # noqa: E731  (not in the span of 1, x, x^2)


def exact_1d_grad():
    t = THETA_1D.clone().requires_grad_(True)
    return torch.autograd.grad(torch.cos(2 * t[0]) * torch.exp(-2 * t[1] ** 2) + t[0], t)[0]


def standardised_errors(fit, num_batches=400, num_samples=10, seed=5):
    """(mean of batch means - truth) / its standard error, for small batches (a loop over batches)."""
    g, control = gen(seed), RegressionControlVariates("quadratic", fit=fit)
    means = torch.stack([expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=num_samples,
                                          baseline=control, generator=g).mean(0) for _ in range(num_batches)])
    return (means.mean(0) - exact_1d_grad()) / (means.std(0) / math.sqrt(num_batches))


def test_same_batch_coefficients_are_biased_power_check():
    """Fitted on the batch itself (N = 10, K = 3 features) the estimate is pulled towards 0 by many standard
    errors (measured: about 16 se at 400 batches): the unbiasedness test below has the power to see it."""
    z = standardised_errors("same")
    assert (z < -6).all(), z


@pytest.mark.parametrize("fit", ["crossfit", "loo"])
def test_cross_fitted_and_leave_one_out_coefficients_are_unbiased(fit):
    z = standardised_errors(fit)
    assert (z.abs() < 4).all(), z


def test_cross_fitting_reduces_variance_at_moderate_n():
    """N = 200: the fitted control variates remove most of the plain score function's variance."""
    plain = expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=200, generator=gen(6))
    fitted = expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=200,
                              baseline=RegressionControlVariates(), generator=gen(6))
    assert (fitted.var(0) < 0.5 * plain.var(0)).all(), (fitted.var(0), plain.var(0))


# ------------------------------------------------------------------------------ conformance-style
def test_same_generator_same_numbers_and_global_rng_untouched():
    control = RegressionControlVariates("linear", fit="loo")
    state = torch.get_rng_state()
    a = expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=17, baseline=control, generator=gen(7))
    b = expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=17, baseline=control, generator=gen(7))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_surrogate_gradient_is_the_mean_estimate():
    control = RegressionControlVariates("quadratic", fit="crossfit")
    leaf = THETA.clone().requires_grad_(True)
    loss = surrogate_loss(quadratic_in_features, mixed_normal(leaf), estimator="score", num_samples=20,
                          baseline=control, generator=gen(8))
    (grad,) = torch.autograd.grad(loss, leaf)
    torch.testing.assert_close(grad, exact_quadratic_grad(THETA), rtol=1e-6, atol=1e-6)


def test_custom_features_with_their_closed_form_mean():
    """h(x) = x_0 x_1 with E = mu_0 mu_1 (independent coordinates) added to the quadratic features."""
    def feats(x):
        return torch.cat([torch.ones_like(x[:, :1]), x, x**2, x[:, :1] * x[:, 1:2]], 1)

    def means(d):
        m, v = d.mean, d.variance
        return torch.cat([torch.ones_like(m[:1]), m, m**2 + v, (m[0] * m[1]).reshape(1)])

    f = lambda x: quadratic_in_features(x) + 0.8 * x[:, 0] * x[:, 1]
    t = THETA.clone().requires_grad_(True)
    base = mixed_normal(t).base_dist
    exact = exact_quadratic_grad(THETA) + torch.autograd.grad(0.8 * base.loc[0] * base.loc[1], t)[0]
    grads = expectation_grad(f, mixed_normal, THETA, estimator="score", num_samples=25,
                             baseline=RegressionControlVariates(feats, means, fit="loo"), generator=gen(9))
    torch.testing.assert_close(grads, exact.expand_as(grads), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"features": "cubic"}, ValueError, "features"),
    ({"features": lambda x: x}, ValueError, "expectation"),
    ({"features": "linear", "expectation": lambda d: d.mean}, ValueError, "expectation"),
    ({"features": 3, "expectation": lambda d: d.mean}, TypeError, "features"),
    ({"fit": "half"}, ValueError, "fit"),
    ({"num_folds": 1}, ValueError, "num_folds"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        RegressionControlVariates(**kwargs)


def test_bad_batch_inputs_are_named():
    with pytest.raises(ValueError, match="num_samples"):
        expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=2,
                         baseline=RegressionControlVariates(num_folds=3), generator=gen(1))
    bad = RegressionControlVariates(lambda x: x.reshape(-1, 1), lambda d: d.mean.reshape(1, 1))
    with pytest.raises(ValueError, match="expectation"):
        expectation_grad(COST_1D, MAKE_1D, THETA_1D, estimator="score", num_samples=8, baseline=bad, generator=gen(1))
    batch = ScoreBatch(torch.zeros(3, dtype=F64), None, torch.zeros(3, dtype=F64), MAKE_1D(THETA_1D), COST_1D)
    with pytest.raises(ValueError, match="per-sample scores"):
        RegressionControlVariates().fit(batch)
