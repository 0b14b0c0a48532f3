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


# --------------------------------------------------------------------------- fast path vs autograd
from torch.autograd.functional import jacobian  # noqa: E402

from gradlab.distributions import draw  # noqa: E402
from gradlab.score import per_sample_scores  # noqa: E402
from gradlab.score_fastpath import autograd_scores, closed_form_scores, score_params, theta_chain  # noqa: E402


def mix(seed, rows, cols):
    return torch.randn(rows, cols, generator=gen(seed), dtype=F64) / math.sqrt(cols)


A, C, W = mix(20, 10, 7), mix(21, 10, 7), mix(22, 6, 7)
SQUARE, SQUARE6 = mix(28, 7, 7), mix(29, 6, 6)  # square but mixing: must not pass as diagonal
FAST_CASES = {
    # make_dist, theta shape: identity, views, elementwise and non-diagonal Jacobians
    "bernoulli_logits_identity": (lambda t: D.Bernoulli(logits=t), (7,)),
    "bernoulli_logits_view": (lambda t: D.Independent(D.Bernoulli(logits=t.reshape(3, 2)), 1), (6,)),
    "bernoulli_probs_sigmoid": (lambda t: D.Bernoulli(probs=torch.sigmoid(t)), (2, 3)),
    "bernoulli_probs_dense": (lambda t: D.Bernoulli(probs=torch.sigmoid(W @ t)), (7,)),
    "normal_elementwise": (lambda t: D.Normal(t, 0.5 * t.exp() + 0.1), (2, 3)),
    "normal_split": (lambda t: D.Normal(t[:3], t[3:].exp()), (6,)),
    "normal_shared_scale": (lambda t: D.Independent(D.Normal(t[:4].reshape(2, 2), t[4].exp()), 2), (5,)),
    "normal_dense": (lambda t: D.Independent(D.Normal(A @ t, (C @ t).exp() * 0.5), 1), (7,)),
    "categorical_logits": (lambda t: D.Independent(D.Categorical(logits=t.reshape(2, 3)), 1), (6,)),
    "categorical_logits_scaled": (lambda t: D.Categorical(logits=t.reshape(2, 3) * torch.arange(1.0, 4.0, dtype=F64)), (6,)),
    "bernoulli_logits_square_dense": (lambda t: D.Bernoulli(logits=SQUARE @ t), (7,)),
    "normal_square_loc_dense": (lambda t: D.Normal(SQUARE @ t, t.exp()), (7,)),
    "categorical_logits_square_dense": (lambda t: D.Categorical(logits=(SQUARE6 @ t).reshape(2, 3)), (6,)),
    "categorical_probs_dense": (lambda t: D.Categorical(probs=torch.softmax((W @ t).reshape(2, 3), -1)), (7,)),
}


def direct_scores(make, theta, x):
    """grad_theta log p(x_n) for every n: the full Jacobian of the (N,) per-sample log-probs, float64."""
    return jacobian(lambda t: make(t).log_prob(x).reshape(x.shape[0], -1).sum(1), theta).reshape(x.shape[0], -1)


@pytest.mark.parametrize("name", sorted(FAST_CASES))
@pytest.mark.parametrize("num_samples", [3, 40])
def test_fast_path_scores_equal_autograd_to_round_off(name, num_samples):
    """Closed-form scores and the diagonal/dense chain rule against autograd through log_prob, per
    sample (N = 3 < P and N = 40 > P take both dense branches)."""
    make, shape = FAST_CASES[name]
    theta = torch.randn(shape, generator=gen(23), dtype=F64) * 0.7
    dist = make(theta)
    x = draw(dist, (num_samples,), generator=gen(24))
    params = score_params(dist)
    closed, auto = closed_form_scores(dist, x, params), autograd_scores(dist, x, params)
    assert closed is not None and auto is not None
    for k in params:
        torch.testing.assert_close(closed[k], auto[k], rtol=1e-12, atol=1e-12)
    got = per_sample_scores(make, dist, theta, x)
    torch.testing.assert_close(got, direct_scores(make, theta, x), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["normal_dense", "categorical_logits_scaled", "bernoulli_probs_sigmoid"])
def test_estimates_are_costs_times_direct_scores(name):
    """The whole estimator (no baseline): g_n = f(x_n) grad_theta log p(x_n), to round-off."""
    make, shape = FAST_CASES[name]
    theta = torch.randn(shape, generator=gen(25), dtype=F64) * 0.7

    def f(x):
        flat = x.reshape(x.shape[0], -1).to(F64)
        return (flat * torch.arange(1.0, flat.shape[1] + 1, dtype=F64)).sum(1).sin() + 2.0

    grads = expectation_grad(f, make, theta, estimator="score", num_samples=9, generator=gen(26))
    x = draw(make(theta), (9,), generator=gen(26))
    expected = f(x).unsqueeze(1) * direct_scores(make, theta, x)
    torch.testing.assert_close(grads.reshape(9, -1), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_chain_rule_is_diagonal_exactly_for_elementwise_make_dist(name):
    """Identity, views and elementwise maps get the product with diag J (no dense Jacobian); maps
    that mix coordinates of theta are detected and get the dense chain rule."""
    make, shape = FAST_CASES[name]
    theta = torch.randn(shape, generator=gen(27), dtype=F64)
    chain = theta_chain(make, theta, list(score_params(make(theta))))
    dense = name.endswith("dense") or name in ("normal_shared_scale", "normal_split")
    assert chain.diagonal is not dense


def test_score_param_grads_is_the_estimate_on_the_distributions_own_parameters():
    """The protocol-facing hook: per-sample estimates w.r.t. lambda (here the logits of 3 items x 4 bits,
    per-item costs); chained with J = d lambda / d theta they are expectation_grad's estimates."""
    from gradlab.score import score_param_grads

    mix7 = torch.randn(12, 7, generator=gen(50), dtype=F64) / math.sqrt(7)

    def make(t):
        return D.Independent(D.Bernoulli(logits=(mix7 @ t).reshape(3, 4)), 1)

    def f(x):
        return (x * torch.arange(1.0, 5.0, dtype=F64)).sum(-1) ** 2 + torch.tensor([0.0, 3.0, -1.0], dtype=F64)

    theta = torch.randn(7, generator=gen(51), dtype=F64)
    est = score_param_grads(f, make(theta), num_samples=5, baseline="rloo", generator=gen(52))
    assert est.costs.shape == (5, 3) and est.grads.shape == (5, 12)
    chained = est.grads @ mix7  # J = mix7 for the logits
    grads = expectation_grad(f, make, theta, estimator="score", num_samples=5, baseline="rloo", generator=gen(52))
    torch.testing.assert_close(chained, grads, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_chain_rule_of_arbitrary_rows_is_rows_times_jacobian(name):
    """theta_chain(R) = R J for any rows R (not only scores: per-item and per-coordinate baselines give rows
    that are not zero-sum per Categorical row, where the exact projection of the normalisation matters)."""
    make, shape = FAST_CASES[name]
    theta = torch.randn(shape, generator=gen(53), dtype=F64)
    names = list(score_params(make(theta)))
    jac = jacobian(lambda t: torch.cat([v.reshape(-1) for v in score_params(make(t)).values()]), theta)
    jac = jac.reshape(jac.shape[0], -1)
    for count in (3, 40):
        rows = torch.randn(count, jac.shape[0], generator=gen(54 + count), dtype=F64)
        got = theta_chain(make, theta, names)(rows)
        torch.testing.assert_close(got, rows @ jac, rtol=1e-11, atol=1e-11)


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


# ------------------------------------------------------------------ exact per-sample values, surrogate values
A_MIX = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.1]], dtype=F64)  # theta (3) -> loc (2): non-square


def _make_normal(t):
    return D.Independent(D.Normal(A_MIX @ t, torch.nn.functional.softplus(t[:2] - t[2]) + 0.4), 1)


W_F = torch.tensor([0.7, -1.3], dtype=F64)


def _f_quad(x):
    return (x @ W_F) ** 2 + x[..., 0]


def _lambda_jacobian(make, th):
    def flat(t):
        d = make(t).base_dist
        return torch.cat([d.loc, d.scale])

    return torch.autograd.functional.jacobian(flat, th)  # (4, 3): non-square, non-diagonal


@pytest.mark.parametrize("baseline", [None, "rloo", "delta", "optimal"])
def test_per_sample_estimates_match_the_formula_with_each_baseline(baseline):
    r"""$g_n = J^\top[(f_n - b_n) s_n + c]$ per sample, $J$ the (4, 3) Jacobian of (loc, scale) in theta:
    $b_n = 0$, the leave-one-out mean, the delta method's $f(\mu) + (x_n - \mu)\cdot\nabla f(\mu)$
    whose correction $c$ is $\nabla f(\mu)$ in the loc block, or the per-coordinate optimal
    $b_j = \sum_n f_n s_{nj}^2 / \sum_n s_{nj}^2$ (one value per score column, N = 7)."""
    from gradlab.distributions import draw

    th = torch.tensor([0.4, -0.3, 0.2], dtype=F64)
    n = 7
    dist = _make_normal(th)
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    x = draw(dist, (n,), generator=gen(3))
    f = _f_quad(x)
    score = torch.cat([(x - loc) / scale**2, ((x - loc) ** 2 - scale**2) / scale**3], 1)
    correction = torch.zeros(4, dtype=F64)
    if baseline is None:
        b = torch.zeros(n, dtype=F64)
    elif baseline == "rloo":
        b = (f.sum() - f) / (n - 1)
    elif baseline == "optimal":
        b = (f.unsqueeze(1) * score**2).sum(0) / (score**2).sum(0)  # (4,): one per coordinate
    else:
        mu = loc.clone().requires_grad_(True)
        (grad_mu,) = torch.autograd.grad(_f_quad(mu), mu)
        b = _f_quad(loc) + (x - loc) @ grad_mu
        correction[:2] = grad_mu
    weights = f.unsqueeze(1) - b if baseline == "optimal" else (f - b).unsqueeze(1)
    expected = (weights * score + correction) @ _lambda_jacobian(_make_normal, th)
    got = expectation_grad(_f_quad, _make_normal, th, estimator="score", num_samples=n, baseline=baseline,
                           generator=gen(3))
    print("expected", expected[:2], "got", got[:2])
    torch.testing.assert_close(got, expected)


def _make_gamma(t):
    """No closed-form scores: the score surrogate's own path (one backward pass through log_prob)."""
    return D.Independent(D.Gamma(torch.exp(A_MIX @ t), torch.nn.functional.softplus(t[1:]) + 0.5), 1)


def _make_plain_gamma(t):
    """A batch of two Gammas that is not wrapped in Independent: log_prob is (N, 2), summed per sample."""
    return D.Gamma(torch.exp(A_MIX @ t), torch.nn.functional.softplus(t[1:]) + 0.5)


@pytest.mark.parametrize("make", [_make_gamma, _make_plain_gamma], ids=["independent", "plain-batch"])
@pytest.mark.parametrize("baseline", [None, "rloo"])
def test_surrogate_value_is_the_mean_cost_and_its_gradient_the_mean_estimate(baseline, make):
    """surrogate_loss's VALUE is the mean of f over its draws (N = 7, uneven), and its gradient the mean of the
    per-sample estimates of the same draws, for a product of Gammas (no closed form) with two parameters each."""
    from gradlab.distributions import draw
    from gradlab.expectation import surrogate_loss

    def f(x):
        return (x[..., 0] - 2.0 * x[..., 1]) ** 2 + x[..., 1]

    th = torch.tensor([0.2, -0.4, 0.3], dtype=F64, requires_grad=True)
    n = 7
    loss = surrogate_loss(f, make(th), estimator="score", num_samples=n, baseline=baseline, generator=gen(5))
    x = draw(make(th.detach()), (n,), generator=gen(5))
    print("value", loss.item(), "mean cost", f(x).mean().item())
    torch.testing.assert_close(loss.detach(), f(x).mean())
    (grad,) = torch.autograd.grad(loss, th)
    mean = expectation_grad(f, make, th.detach(), estimator="score", num_samples=n, baseline=baseline,
                            generator=gen(5)).mean(0)
    torch.testing.assert_close(grad, mean)
    if baseline == "rloo":  # and the baseline matters here: without it the gradient differs
        plain = expectation_grad(f, make, th.detach(), estimator="score", num_samples=n,
                                 generator=gen(5)).mean(0)
        assert (plain - mean).abs().max() > 1e-3


def test_surrogate_with_per_item_costs_uses_each_items_own_log_prob():
    """Per-item costs (N, 2) of two independent Gamma items: the surrogate's gradient is the mean per-item
    estimate (item i's cost times item i's score only), N = 5."""
    from gradlab.expectation import surrogate_loss

    def make(t):
        return D.Independent(D.Gamma(torch.exp(t.reshape(2, 2)), torch.tensor([1.0, 2.0], dtype=F64)), 1)

    def f(x):  # (N, 2, 2) -> (N, 2)
        return (x - torch.tensor([0.5, 1.5], dtype=F64)).pow(2).sum(-1) * torch.tensor([1.0, 3.0], dtype=F64)

    th = torch.tensor([0.1, -0.2, 0.4, 0.3], dtype=F64, requires_grad=True)
    loss = surrogate_loss(f, make(th), estimator="score", num_samples=5, baseline="rloo", generator=gen(9))
    (grad,) = torch.autograd.grad(loss, th)
    mean = expectation_grad(f, make, th.detach(), estimator="score", num_samples=5, baseline="rloo",
                            generator=gen(9)).mean(0)
    torch.testing.assert_close(grad, mean)


def test_unreadable_distribution_with_per_item_costs_matches_the_formula():
    r"""A LogNormal of batch_shape (2, 3), 2 items of 3 factors (parameters gradlab cannot read: the
    forward-mode fallback), every factor mixing all 3 coordinates of theta, f -> (N, 2): per sample
    $g_n = \sum_i (f_{ni} - b_{ni}) \nabla_\theta \log p(x_{ni})$, with b = 0 and the per-item leave-one-out mean."""
    from torch.autograd.functional import jacobian

    from gradlab.distributions import draw

    mix = torch.randn(6, 3, generator=gen(60), dtype=F64) / 2
    th = torch.tensor([0.2, -0.1, 0.4], dtype=F64)

    def make(t):
        return D.LogNormal((mix @ t).reshape(2, 3), (torch.nn.functional.softplus(mix.flip(0) @ t) + 0.2).reshape(2, 3))

    def f(x):  # (N, 2, 3) -> (N, 2)
        return torch.stack([((x[:, 0] - 1.0) ** 2).sum(-1), x[:, 1].sqrt().sum(-1) + 2.0 * x[:, 0, 0]], 1)

    n = 7
    x = draw(make(th), (n,), generator=gen(61))
    costs = f(x)
    scores = jacobian(lambda t: make(t).log_prob(x).sum(-1), th)  # (N, 2, 3): each item's row summed
    for baseline, b in [(None, torch.zeros_like(costs)), ("rloo", (costs.sum(0) - costs) / (n - 1))]:
        expected = ((costs - b).unsqueeze(-1) * scores).sum(1)
        got = expectation_grad(f, make, th, estimator="score", num_samples=n, baseline=baseline, generator=gen(61))
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_per_item_costs_of_a_batched_family_without_independent():
    r"""Gamma with batch_shape (2, 3) (no Independent): item i is the row of 3 factors, its log-prob the sum
    of the row's 3 log-probs. The surrogate's value is the mean summed cost and its gradient the mean
    per-sample estimate; per sample $g_n = \sum_i (f_{ni} - b_{ni}) \nabla\log p(x_{ni})$ (autograd reference)."""
    from torch.autograd.functional import jacobian

    from gradlab.distributions import draw
    from gradlab.expectation import surrogate_loss

    mix = torch.randn(6, 4, generator=gen(62), dtype=F64) / 2

    def make(t):
        return D.Gamma(torch.exp(mix @ t).reshape(2, 3), torch.tensor([1.0, 2.0, 0.5], dtype=F64))

    def f(x):  # (N, 2, 3) -> (N, 2)
        return (x - torch.tensor([0.5, 1.5, 1.0], dtype=F64)).pow(2).sum(-1) * torch.tensor([1.0, 3.0], dtype=F64)

    th = torch.tensor([0.1, -0.2, 0.4, 0.3], dtype=F64)
    n = 6
    x = draw(make(th), (n,), generator=gen(63))
    costs = f(x)
    scores = jacobian(lambda t: make(t).log_prob(x).sum(-1), th)  # (N, 2, 4): each item's row summed
    b = (costs.sum(0) - costs) / (n - 1)
    expected = ((costs - b).unsqueeze(-1) * scores).sum(1)
    got = expectation_grad(f, make, th, estimator="score", num_samples=n, baseline="rloo", generator=gen(63))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    leaf = th.clone().requires_grad_(True)
    loss = surrogate_loss(f, make(leaf), estimator="score", num_samples=n, baseline="rloo", generator=gen(63))
    torch.testing.assert_close(loss.detach(), costs.sum(1).mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(loss, leaf)[0], expected.mean(0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("baseline", ["rloo", 0.4, None])
def test_closed_form_surrogate_gradient_is_the_mean_per_sample_estimate(baseline):
    """surrogate_loss's backward = the mean of expectation_grad's estimates for the same draws (float64, N = 7)."""
    theta = torch.tensor([0.4, -1.1, 0.7, 0.2], dtype=F64)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)

    def f(x):
        return (x * w).sum(-1) ** 2

    def make(t):
        return D.Independent(D.Bernoulli(logits=t), 1)

    leaf = theta.clone().requires_grad_(True)
    loss = surrogate_loss_of(f, make(leaf), baseline, gen(60))
    loss.backward()
    per_sample = expectation_grad(f, make, theta, estimator="score", num_samples=7, baseline=baseline, generator=gen(60))
    torch.testing.assert_close(leaf.grad, per_sample.mean(0), rtol=1e-12, atol=1e-12)


def surrogate_loss_of(f, dist, baseline, generator):
    from gradlab.expectation import surrogate_loss

    return surrogate_loss(f, dist, num_samples=7, baseline=baseline, generator=generator)
