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


# ---------------------------------------------------------------- weak derivatives beyond Normal / Bernoulli / Categorical
import math as _math  # noqa: E402

from torch import distributions as _D  # noqa: E402

import gradlab as _gl  # noqa: E402

_W = torch.tensor([0.3, 0.8, 0.5], dtype=torch.float64)
_MIX = torch.tensor([[0.6, -0.2], [0.1, 0.9], [-0.4, 0.5]], dtype=torch.float64)  # 2 parameters -> 3 rates


def _product_cost(x):
    """exp(-w.x) + 0.1 |x|^2: couples the coordinates (no factor separates)."""
    return torch.exp(-(x * _W).sum(1)) + 0.1 * (x ** 2).sum(1)


def _rates(theta):
    return torch.nn.functional.softplus(_MIX @ theta) + 0.5


_LAWS = {
    # name: (make_dist, closed form of E[f] from the rates)
    "poisson": (lambda t: _D.Independent(_D.Poisson(_rates(t)), 1),
                lambda r: torch.exp(r * (torch.exp(-_W) - 1)).prod() + 0.1 * (r + r ** 2).sum()),
    "exponential": (lambda t: _D.Independent(_D.Exponential(_rates(t)), 1),
                    lambda r: (r / (r + _W)).prod() + 0.1 * (2 / r ** 2).sum()),
    "gamma": (lambda t: _D.Independent(_D.Gamma(torch.tensor([2.5, 0.7, 1.3], dtype=t.dtype), _rates(t)), 1),
              lambda r: ((r / (r + _W)) ** torch.tensor([2.5, 0.7, 1.3], dtype=r.dtype)).prod()
              + 0.1 * (torch.tensor([2.5 * 3.5, 0.7 * 1.7, 1.3 * 2.3], dtype=r.dtype) / r ** 2).sum()),
}


@pytest.mark.parametrize("law", sorted(_LAWS))
def test_weak_derivative_rate_matches_closed_form(law):
    make_dist, closed = _LAWS[law]
    theta = torch.tensor([0.4, -0.3], dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(closed(_rates(leaf)), leaf)
    g = _gl.expectation_grad(_product_cost, make_dist, theta, estimator="measure_valued", num_samples=30_001,
                             generator=torch.Generator().manual_seed(21))
    se = g.std(0) / _math.sqrt(g.shape[0])
    assert ((g.mean(0) - exact).abs() <= 4 * se).all(), (g.mean(0), exact, se)
    # power: a bias of 10% of the gradient's largest coordinate, in either coordinate, is rejected
    for j in range(2):
        shift = torch.zeros(2, dtype=torch.float64)
        shift[j] = 0.1 * exact.abs().max()
        assert not ((g.mean(0) + shift - exact).abs() <= 4 * se).all()


def test_weak_derivative_pairs_are_coupled_to_the_shared_sample():
    """Poisson's pair is (x_j + 1, x_j): with f linear in x the per-sample estimate is exactly the weight."""
    theta = torch.tensor([0.4, -0.3], dtype=torch.float64)
    make_dist = _LAWS["poisson"][0]
    g = _gl.expectation_grad(lambda x: (x * _W).sum(1), make_dist, theta, estimator="measure_valued", num_samples=7,
                             generator=torch.Generator().manual_seed(0))
    leaf = theta.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((_rates(leaf) * _W).sum(), leaf)
    assert torch.allclose(g, expected.expand(7, 2), atol=1e-12, rtol=0)


def test_gamma_concentration_is_not_supported():
    def make_dist(t):
        return _D.Gamma(torch.nn.functional.softplus(t) + 0.5, torch.ones_like(t))

    with pytest.raises(_gl.UnsupportedDistribution, match="concentration"):
        _gl.expectation_grad(lambda x: x.sum(1), make_dist, torch.zeros(2, dtype=torch.float64),
                             estimator="measure_valued", num_samples=3)


def test_categorical_per_sample_estimate_when_theta_moves_one_coordinate_only():
    """Three Categorical coordinates of 2 classes (dim != classes); theta moves the logits of coordinate 1
    only (the one logits tensor still requires grad as a whole, so every coordinate is evaluated). Per sample
    the estimate is J^T (f(x with x_1 = k))_k, J the Jacobian of coordinate 1's probabilities, and it matches
    the exact gradient in mean. The hook's ``needed`` mask does skip coordinates."""
    from gradlab.distributions import draw

    base = torch.tensor([[0.2, -0.4], [0.0, 0.0], [1.0, -0.5]], dtype=F64)
    mix = torch.tensor([[1.0, 0.5], [-0.7, 0.2]], dtype=F64)

    def make(t):
        rows = torch.cat([base[:1], (mix @ t).unsqueeze(0), base[2:]])
        return D.Independent(D.Categorical(logits=rows), 1)

    def f(x):
        x = x.to(F64)
        return (x[:, 0] - 1.5 * x[:, 1]) ** 2 + x[:, 1] * x[:, 2]

    th = torch.tensor([0.4, -0.3], dtype=F64)
    n = 6
    x = draw(make(th), (n,), generator=gen(71))
    table = torch.stack([f(torch.stack([x[:, 0], torch.full_like(x[:, 1], k), x[:, 2]], 1)) for k in range(2)], 1)
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(mix @ t, -1), th)  # (2, 2)
    got = expectation_grad(f, make, th, estimator="measure_valued", num_samples=n, generator=gen(71))
    torch.testing.assert_close(got, table @ jac, rtol=1e-10, atol=1e-12)
    exact = exact_expectation_grad(f, make, th)
    gc.assert_mean(expectation_grad(f, make, th, estimator="measure_valued", num_samples=20_000,
                                    generator=gen(72)), exact)
    # the hook's ``needed`` mask: only coordinate 1's block (flat entries 2, 3) is evaluated, the rest stays 0
    from gradlab.measure_valued import MeasureValued

    dist = make(th)
    lam = {"base.probs": dist.base_dist.probs}
    needed = torch.tensor([False, False, True, True, False, False])
    calls = []

    def counted(v):
        calls.append(v.shape[0])
        return f(v)

    est = MeasureValued().param_grads(counted, dist, lam, num_samples=n, baseline=None, generator=gen(71),
                                      needed=needed)
    expected = torch.zeros(n, 6, dtype=F64)
    expected[:, 2:4] = table
    torch.testing.assert_close(est.grads, expected, rtol=1e-12, atol=1e-12)
    assert calls == [n, n * 2]  # the costs, then the 2 classes of the one needed coordinate


@pytest.mark.parametrize("make", [
    lambda t: D.Independent(D.Normal(t[:2], t[2:].exp()), 1),
    lambda t: D.Independent(D.Gamma(torch.tensor([2.0, 3.0], dtype=F64), t[:2].exp()), 1),
    lambda t: D.Independent(D.Exponential(t[2:].exp()), 1),
], ids=["normal", "gamma", "exponential"])
def test_same_generator_gives_the_same_estimates_and_the_global_rng_is_untouched(make):
    th = torch.tensor([0.3, -0.2, -0.5, 0.1], dtype=F64)

    def f(x):
        return (x[:, 0] - 0.5) ** 2 + x[:, 0] * x[:, 1]

    state = torch.random.get_rng_state()
    a = expectation_grad(f, make, th, estimator="measure_valued", num_samples=5, generator=gen(81))
    torch.manual_seed(1234)  # a different global state must not change the estimates
    b = expectation_grad(f, make, th, estimator="measure_valued", num_samples=5, generator=gen(81))
    torch.random.set_rng_state(state)
    c = expectation_grad(f, make, th, estimator="measure_valued", num_samples=5, generator=gen(81))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(a, expectation_grad(f, make, th, estimator="measure_valued", num_samples=5,
                                               generator=gen(82)))


def test_per_item_costs_give_the_estimates_of_their_sum():
    """Two items of 3 Normal factors (loc and scale mixing 4 thetas), f -> (N, 2): the objective is the sum
    over items, so the per-sample estimates equal those of the summed cost on the same draws."""
    mix = torch.randn(6, 4, generator=gen(91), dtype=F64) / 2

    def make(t):
        return D.Independent(D.Normal((mix @ t).reshape(2, 3), (0.5 + (mix.flip(0) @ t).exp()).reshape(2, 3)), 1)

    w = torch.tensor([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0]], dtype=F64)

    def f(x):  # (N, 2, 3) -> (N, 2)
        return ((x * w).sum(-1) - 0.2) ** 2 + torch.tensor([1.0, 4.0], dtype=F64)

    th = torch.tensor([0.3, -0.4, 0.2, 0.1], dtype=F64)
    per_item = expectation_grad(f, make, th, estimator="measure_valued", num_samples=5, generator=gen(92))
    joint = expectation_grad(lambda x: f(x).sum(1), make, th, estimator="measure_valued", num_samples=5,
                             generator=gen(92))
    torch.testing.assert_close(per_item, joint, rtol=1e-12, atol=1e-12)
    assert joint.abs().min() > 1e-6
