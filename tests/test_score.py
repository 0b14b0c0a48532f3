"""Score-function estimator: closed-form variances, exact per-sample values, discrete unbiasedness, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import gaussian_closed_forms as gc
from gradlab.expectation import exact_expectation_grad, expectation_grad

F64 = torch.float64
N = 200_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", gc.CASES)
def test_gaussian_closed_form_mean_and_variance(k):
    """Single-sample variances of the score-function estimator of d/dmu and d/dsigma (derivation
    in gaussian_closed_forms): A/sigma^2 - g^2 with b = 0."""
    grads = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="score",
                             num_samples=N, generator=gen(1))
    assert grads.shape == (N, 2) and grads.dtype == F64
    gc.assert_mean(grads, gc.true_grad(k))
    gc.assert_variance(grads, gc.score_variance(k))


def test_per_sample_values_are_f_times_score():
    """With x = mu + sigma*eps: g_mu = f eps / sigma, g_sigma = f (eps^2 - 1) / sigma, exactly."""
    k = 0.3
    grads = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="score",
                             num_samples=50, generator=gen(2))
    eps = torch.randn(50, generator=gen(2), dtype=F64)
    f = (gc.MU + gc.SIGMA * eps - k) ** 2
    torch.testing.assert_close(grads[:, 0], f * eps / gc.SIGMA)
    torch.testing.assert_close(grads[:, 1], f * (eps**2 - 1) / gc.SIGMA)


def test_chain_rule_through_make_dist():
    """theta = (mu, log sigma): the log-sigma component is sigma times the sigma component."""
    k = 0.3

    def make(th):
        return D.Normal(th[0], th[1].exp())

    th = torch.tensor([gc.MU, math.log(gc.SIGMA)], dtype=F64)
    chained = expectation_grad(gc.cost(k), make, th, estimator="score", num_samples=100, generator=gen(3))
    direct = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="score",
                              num_samples=100, generator=gen(3))
    torch.testing.assert_close(chained[:, 0], direct[:, 0])
    torch.testing.assert_close(chained[:, 1], gc.SIGMA * direct[:, 1])


def bernoulli_case():
    weights = torch.tensor([1.0, 2.0, -3.0], dtype=F64)
    return (lambda x: (x * weights).sum(-1) ** 2 + x[:, 0] * x[:, 2],
            lambda th: D.Bernoulli(logits=th), torch.tensor([0.3, -0.5, 1.0], dtype=F64))


def categorical_case():
    return (lambda x: (2.0 * x[:, 0] - x[:, 1]).to(F64) ** 2 + (x[:, 1] == 2).to(F64),
            lambda th: D.Independent(D.Categorical(logits=th.reshape(2, 3)), 1),
            torch.tensor([0.2, -0.4, 0.9, 0.0, 0.5, -1.0], dtype=F64))


@pytest.mark.parametrize("case", [bernoulli_case, categorical_case])
@pytest.mark.parametrize("baseline", [None, "rloo", 1.5])
def test_discrete_unbiased_against_enumeration(case, baseline):
    f, make, th = case()
    exact = exact_expectation_grad(f, make, th)
    grads = expectation_grad(f, make, th, estimator="score", num_samples=40_000,
                             baseline=baseline, generator=gen(4))
    gc.assert_mean(grads, exact)


def test_distribution_gradlab_cannot_rebuild_uses_jacobian_of_log_probs():
    """LogNormal (a TransformedDistribution): E x = exp(mu + sigma^2/2), gradient (E, sigma E)."""
    th = torch.tensor([0.1, 0.4], dtype=F64)
    grads = expectation_grad(lambda x: x, lambda t: D.LogNormal(t[0], t[1]), th, estimator="score",
                             num_samples=100_000, generator=gen(5))
    mean = math.exp(0.1 + 0.4**2 / 2)
    gc.assert_mean(grads, torch.tensor([mean, 0.4 * mean], dtype=F64))


def test_gamma_through_arg_constraints():
    """Gamma(alpha, beta): E x = alpha / beta, gradient (1/beta, -alpha/beta^2)."""
    th = torch.tensor([2.0, 3.0], dtype=F64)
    grads = expectation_grad(lambda x: x, lambda t: D.Gamma(t[0], t[1]), th, estimator="score",
                             num_samples=100_000, generator=gen(6))
    gc.assert_mean(grads, torch.tensor([1 / 3.0, -2 / 9.0], dtype=F64))


def test_score_needs_log_prob():
    class NoLogProb(D.Distribution):
        arg_constraints = {}

        def __init__(self, loc):
            self.loc = loc
            super().__init__(validate_args=False)

        def sample(self, sample_shape=torch.Size()):
            return self.loc.expand(sample_shape)

    with pytest.raises(ValueError, match="log_prob"):
        expectation_grad(lambda x: x, lambda t: NoLogProb(t[0]), torch.zeros(1), estimator="score",
                         num_samples=3)


def test_per_item_costs_weight_each_items_score_by_its_own_cost_and_rloo_baseline():
    """Two items of three bits, f -> (N, 2): g_n = sum_i (f_ni - b_ni) (x_ni - p_i) in item i's logits,
    with the per-item leave-one-out b_ni = mean of f_mi over m != n (exact sums)."""
    from gradlab.distributions import draw

    th = torch.tensor([0.3, -0.5, 1.0, 0.2, 0.0, -0.8], dtype=F64)
    w = torch.tensor([[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]], dtype=F64)

    def make(t):
        return D.Independent(D.Bernoulli(logits=t.reshape(2, 3)), 1)

    def f(x):
        return ((x * w).sum(-1) - 0.3) ** 2

    n = 9
    x = draw(make(th), (n,), generator=gen(7))
    costs = f(x)
    p = th.reshape(2, 3).sigmoid()
    for baseline, b in [(None, torch.zeros_like(costs)), ("rloo", (costs.sum(0) - costs) / (n - 1))]:
        expected = ((costs - b).unsqueeze(-1) * (x - p)).reshape(n, 6)
        got = expectation_grad(f, make, th, estimator="score", num_samples=n, baseline=baseline, generator=gen(7))
        torch.testing.assert_close(got, expected)
    exact = exact_expectation_grad(lambda s: f(s).sum(1), make, th)
    gc.assert_mean(expectation_grad(f, make, th, estimator="score", num_samples=40_000, baseline="rloo",
                                    generator=gen(8)), exact)
    joint = expectation_grad(lambda s: f(s).sum(1), make, th, estimator="score", num_samples=40_000,
                             baseline="rloo", generator=gen(8))
    per_item = expectation_grad(f, make, th, estimator="score", num_samples=40_000, baseline="rloo", generator=gen(8))
    print("variance joint", joint.var(0).sum().item(), "per item", per_item.var(0).sum().item())
    assert per_item.var(0).sum() < joint.var(0).sum()
