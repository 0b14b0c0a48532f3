"""Baselines and control variates: closed-form variances, unbiasedness (or measured bias), state, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import gaussian_closed_forms as gc
from gradlab.control_variates import EMABaseline, resolve_baseline
from gradlab.expectation import expectation_grad, surrogate_loss

F64 = torch.float64
K = 0.3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def score(num_samples, baseline, seed, k=K):
    return expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="score",
                            num_samples=num_samples, baseline=baseline, generator=gen(seed))


def batch_means(num_batches, num_samples, baseline, seed):
    """Means of many small independent batches (a loop over batches, not over samples)."""
    g = gen(seed)
    return torch.stack([
        expectation_grad(gc.cost(K), gc.make_normal, gc.theta(), estimator="score",
                         num_samples=num_samples, baseline=baseline, generator=g).mean(0)
        for _ in range(num_batches)
    ])


def test_constant_baseline_closed_form():
    """Var((f - b) s) = (A - 2bB + b^2 C)/sigma^2 - g^2 (gaussian_closed_forms); b = 1.2 lowers both
    variances because 0 < b < 2 b* for both coordinates."""
    b = 1.2
    grads = score(200_000, b, 1)
    gc.assert_mean(grads, gc.true_grad(K))
    gc.assert_variance(grads, gc.score_variance(K, b, b))
    assert all(v < v0 for v, v0 in zip(gc.score_variance(K, b, b), gc.score_variance(K)))


def test_rloo_variance_is_that_of_the_mean_cost_baseline():
    """RLOO: b_n -> E f = a^2 + sigma^2 as N grows; the extra variance Var(f) E[s^2]/(N-1) is below
    1e-4 here. E f lies in (0, 2 b*), so theory says RLOO must lower the variance."""
    a2 = (gc.MU - K) ** 2
    mean_cost = a2 + gc.SIGMA**2
    grads = score(200_000, "rloo", 2)
    gc.assert_mean(grads, gc.true_grad(K))
    gc.assert_variance(grads, gc.score_variance(K, mean_cost, mean_cost))
    assert all(v < v0 for v, v0 in zip(gc.score_variance(K, mean_cost, mean_cost), gc.score_variance(K)))


def test_rloo_unbiased_with_two_samples():
    """b_n is independent of x_n, so RLOO stays unbiased even at N = 2 (a baseline that included x_n,
    e.g. the batch mean, would halve the gradient: (N - 1)/N = 1/2)."""
    gc.assert_mean(batch_means(800, 2, "rloo", 3), gc.true_grad(K))


def test_rloo_equals_centred_form():
    """RLOO = N/(N-1) (f_n - mean f) s_n per sample."""
    n = 6
    plain = score(n, None, 4)
    rloo = score(n, "rloo", 4)
    eps = torch.randn(n, generator=gen(4), dtype=F64)
    f = (gc.MU + gc.SIGMA * eps - K) ** 2
    scores = plain / f.unsqueeze(1)
    torch.testing.assert_close(rloo, n / (n - 1) * (f - f.mean()).unsqueeze(1) * scores)


def test_optimal_baseline_variance_and_measured_bias():
    """With many samples the fitted b_j tends to b*_j (a^2 + 3 sigma^2, a^2 + 5 sigma^2) and the
    variance to the minimum over constants. With few samples the fit uses x_n itself and is
    biased: at N = 4 the mean is far (> 10 standard errors) below the gradient, and the bias
    shrinks with N (O(1/N)); the leave-one-out fit is unbiased at N = 4."""
    b_mu, b_sigma = gc.optimal_baseline(K)
    grads = score(200_000, "optimal", 5)
    gc.assert_variance(grads, gc.score_variance(K, b_mu, b_sigma))
    minimum = gc.score_variance(K, b_mu, b_sigma)
    assert all(m <= v for m, v in zip(minimum, gc.score_variance(K, (gc.MU - K) ** 2 + gc.SIGMA**2, 1.0)))
    batches = 300
    small, larger = batch_means(batches, 4, "optimal", 6), batch_means(batches, 16, "optimal", 7)
    truth = gc.true_grad(K)
    bias4, se4 = small.mean(0) - truth, small.std(0) / math.sqrt(batches)
    bias16, se16 = larger.mean(0) - truth, larger.std(0) / math.sqrt(batches)
    print("bias N=4", bias4.tolist(), "N=16", bias16.tolist())
    assert torch.all(bias4 < -10 * se4)
    assert torch.all(bias16.abs() + 3 * se16 < bias4.abs())
    gc.assert_mean(batch_means(batches, 4, "optimal_loo", 8), truth)


def test_ema_baseline_state_and_unbiasedness():
    """EMA: the value used for a batch is fixed before it, so the estimator is unbiased at N = 2;
    the value tracks E f = a^2 + sigma^2."""
    ema = EMABaseline(decay=0.9)
    means = batch_means(800, 2, ema, 9)
    gc.assert_mean(means, gc.true_grad(K))
    mean_cost = (gc.MU - K) ** 2 + gc.SIGMA**2
    assert abs(ema.value - mean_cost) < 0.5
    ema.reset()
    assert ema.value == 0.0
    with pytest.raises(ValueError, match="decay"):
        EMABaseline(decay=1.0)


@pytest.mark.parametrize("k", gc.CASES)
def test_delta_method_closed_form(k):
    """f - h = sigma^2 eps^2, so Var_mu = 15 sigma^2 and Var_sigma = 74 sigma^2 whatever k:
    below the plain score function's variance for every k here, by far when |mu - k| >> sigma."""
    grads = score(200_000, "delta", 10, k)
    gc.assert_mean(grads, gc.true_grad(k))
    gc.assert_variance(grads, gc.delta_variance(k))
    assert all(v < v0 for v, v0 in zip(gc.delta_variance(k), gc.score_variance(k)))


def test_surrogate_loss_gives_the_mean_estimate():
    """Every baseline, the per-coordinate "optimal" ones included (the generic surrogate)."""
    for baseline in [None, 0.7, "rloo", "delta", "optimal", "optimal_loo"]:
        th = gc.theta().requires_grad_(True)
        loss = surrogate_loss(gc.cost(K), gc.make_normal(th), num_samples=64, baseline=baseline,
                              generator=gen(11))
        loss.backward()
        torch.testing.assert_close(th.grad, score(64, baseline, 11).mean(0))


def test_errors():
    with pytest.raises(ValueError, match="baseline"):
        resolve_baseline("mean")
    with pytest.raises(TypeError, match="baseline"):
        resolve_baseline([1.0])
    with pytest.raises(ValueError, match="num_samples >= 2"):
        score(1, "rloo", 0)
    with pytest.raises(ValueError, match="Normal"):
        expectation_grad(lambda x: x.sum(-1), lambda t: D.Bernoulli(logits=t), torch.zeros(2, dtype=F64),
                         estimator="score", num_samples=4, baseline="delta")


def test_rloo_is_exact_in_float32_when_one_cost_dominates():
    """(sum - f_n)/(N - 1) would give b_0 = 1.333 for [3e7, 1, 2, 3] in float32; the exact sum gives 2."""
    from gradlab.control_variates import LeaveOneOut, ScoreBatch

    values = torch.tensor([3e7, 1.0, 2.0, 3.0], dtype=torch.float32)
    b = LeaveOneOut()(ScoreBatch(values, None, values, None, None))
    assert b.shape == (4,)  # a baseline is shaped like the costs
    assert b[0].item() == 2.0
    per_item = LeaveOneOut()(ScoreBatch(torch.stack([values, values.flip(0)], 1), None, values, None, None))
    assert per_item.shape == (4, 2) and per_item[0, 0].item() == 2.0 and per_item[3, 1].item() == 2.0


def test_delta_method_computes_its_expansion_once_per_batch_and_keeps_no_state():
    """terms() evaluates f at mu once (one extra call of f with one sample), and the baseline object
    carries nothing from one batch to the next (the same estimates in either order)."""
    from gradlab.control_variates import DeltaMethod

    calls = []

    def f(x):
        calls.append(x.shape[0])
        return gc.cost(K)(x)

    delta = DeltaMethod()
    expectation_grad(f, gc.make_normal, gc.theta(), estimator="score", num_samples=8, baseline=delta, generator=gen(3))
    assert sorted(calls) == [1, 8]
    assert not vars(delta)
    other = torch.tensor([0.2, 1.3], dtype=F64)
    a = score(8, delta, 4)
    expectation_grad(gc.cost(K), gc.make_normal, other, estimator="score", num_samples=8, baseline=delta)
    torch.testing.assert_close(score(8, delta, 4), a)


def test_leave_one_out_sums_are_exact_when_one_sample_dominates():
    """sum - v_n would leave round-off of the big value where the exact answer is 0 or tiny."""
    from gradlab.control_variates import leave_one_out_sums

    values = torch.tensor([[1e20, 0.0], [0.0, 1.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    expected = values.sum(0, keepdim=True) - values  # exact for this case only where no cancellation
    got = leave_one_out_sums(values)
    print("expected", expected, "got", got)
    assert got[0, 0] == 3.0  # the big one excluded: exactly the rest
    assert torch.equal(got[:, 1], expected[:, 1])
    assert torch.equal(got[1:, 0], torch.full((3,), 1e20 + 0.0, dtype=torch.float64) + torch.tensor([3.0, 3.0, 0.0]).double())


def test_optimal_loo_stays_finite_when_a_score_coordinate_is_nonzero_for_one_sample():
    """A joint categorical over 320 states, 32 draws: most coordinates are hit by at most one draw."""
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))

    def joint(t):
        return D.Categorical(logits=torch.log_softmax(t, -1).reshape(-1))

    def cost(d):
        return -(d % 10 == target[d // 10]).double()

    g = expectation_grad(cost, joint, logits, estimator="score", num_samples=32,
                                 baseline="optimal_loo", generator=torch.Generator().manual_seed(2))
    plain = expectation_grad(cost, joint, logits, estimator="score", num_samples=32,
                                     generator=torch.Generator().manual_seed(2))
    print("max |g| optimal_loo:", g.abs().max().item(), "plain:", plain.abs().max().item())
    assert torch.isfinite(g).all()
    assert g.abs().max() <= plain.abs().max() * 10


# --------------------------------------------------------------------------- per-item baselines
from torch.autograd.functional import jacobian  # noqa: E402

from gradlab.control_variates import (  # noqa: E402
    Baseline,
    DeltaMethod,
    LeaveOneOut,
    ScoreBatch,
    leave_one_out_means,
)
from gradlab.distributions import draw  # noqa: E402
from gradlab.expectation import exact_expectation_grad  # noqa: E402

ITEMS, DIM = 3, 4
MIX = torch.randn(ITEMS * DIM, 7, generator=gen(30), dtype=F64) / math.sqrt(7)
MIX2 = torch.randn(ITEMS * DIM, 7, generator=gen(31), dtype=F64) / math.sqrt(7)
ITEM_WEIGHTS = torch.randn(ITEMS, DIM, generator=gen(32), dtype=F64)


def items_bernoulli(t):
    """Three items of four bits each, logits mixing all 7 coordinates of theta (non-diagonal J)."""
    return D.Independent(D.Bernoulli(logits=(MIX @ t).reshape(ITEMS, DIM)), 1)


def items_normal(t):
    return D.Independent(D.Normal((MIX @ t).reshape(ITEMS, DIM), 0.3 * (MIX2 @ t).exp().reshape(ITEMS, DIM)), 1)


def item_costs(x):
    """f_{n,i}: one cost per sample and item, depending on item i only; item-specific offsets."""
    return ((x.to(F64) * ITEM_WEIGHTS).sum(-1) - 0.5) ** 2 + torch.tensor([5.0, -2.0, 20.0], dtype=F64)


def per_item_scores(make, theta, x):
    """grad_theta log p(x_{n,i}) for every sample and item: (N, B, D), by autograd in float64."""
    return jacobian(lambda t: make(t).log_prob(x), theta)


def items_categorical(t):
    """Three items, each one Categorical over 4 classes, logits mixing all of theta."""
    return D.Categorical(logits=(MIX @ t).reshape(ITEMS, DIM))


def categorical_item_costs(x):
    return (x.to(F64) * torch.tensor([1.0, 2.0, -1.5], dtype=F64)) ** 2 + torch.tensor([5.0, -2.0, 20.0], dtype=F64)


def direct_rloo(make, theta, x, item_costs=item_costs):
    values = item_costs(x)
    n = values.shape[0]
    b = torch.stack([torch.cat([values[:m], values[m + 1:]]).mean(0) for m in range(n)])  # others, same item
    pooled = torch.stack([torch.cat([values[:m], values[m + 1:]]).sum(1).mean() for m in range(n)])
    scores = per_item_scores(make, theta, x)
    per_item = ((values - b).unsqueeze(-1) * scores).sum(1)
    pooled_grads = (values.sum(1) - pooled).unsqueeze(-1) * scores.sum(1)
    return per_item, pooled_grads


@pytest.mark.parametrize("make, cost", [(items_bernoulli, item_costs), (items_normal, item_costs),
                                        (items_categorical, categorical_item_costs)])
@pytest.mark.parametrize("num_samples", [5, 2])
def test_per_item_rloo_against_direct_float64(make, cost, num_samples):
    """sum_i (f_ni - b_ni) grad log p(x_ni) with b_ni the mean of the other samples OF ITEM i; the case
    tells it from a pooled baseline (one leave-one-out mean over all items' summed costs)."""
    theta = torch.randn(7, generator=gen(33), dtype=F64)
    grads = expectation_grad(cost, make, theta, estimator="score", num_samples=num_samples,
                             baseline="rloo", generator=gen(34))
    x = draw(make(theta), (num_samples,), generator=gen(34))
    expected, pooled = direct_rloo(make, theta, x, cost)
    print("max |per-item - pooled|:", (expected - pooled).abs().max().item())
    assert (expected - pooled).abs().max() > 1e-2  # a pooled baseline would fail the check below
    torch.testing.assert_close(grads, expected, rtol=1e-10, atol=1e-10)


def test_per_item_surrogate_gives_the_mean_estimate_and_the_summed_cost():
    theta = torch.randn(7, generator=gen(35), dtype=F64)
    for baseline in [None, "rloo", 2.0]:
        leaf = theta.clone().requires_grad_(True)
        loss = surrogate_loss(item_costs, items_bernoulli(leaf), num_samples=6, baseline=baseline, generator=gen(36))
        loss.backward()
        grads = expectation_grad(item_costs, items_bernoulli, theta, estimator="score", num_samples=6,
                                 baseline=baseline, generator=gen(36))
        torch.testing.assert_close(leaf.grad, grads.mean(0))
        x = draw(items_bernoulli(theta), (6,), generator=gen(36))
        torch.testing.assert_close(loss.detach(), item_costs(x).sum(1).mean())


class IncludingSelf(Baseline):
    """A biased per-item baseline (the item's mean over ALL samples, x_n included): scales by (N-1)/N."""

    def __call__(self, batch):
        return batch.values.mean(0).expand_as(batch.values)


def enumeration_case():
    theta = torch.tensor([[0.4, -0.8], [1.1, 0.2]], dtype=F64)
    weights = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)

    def f(x):  # (N, 2 items, 2 bits) -> (N, 2)
        return (x * weights).sum(-1) ** 2 + torch.tensor([4.0, -1.0], dtype=F64) + x[..., 0] * x[..., 1]

    return f, (lambda t: D.Bernoulli(logits=t)), theta


@pytest.mark.parametrize("baseline", ["rloo", 1.5, "ema", "optimal_loo"])
def test_per_item_baselines_unbiased_by_enumeration(baseline):
    """A product Bernoulli with 2 items of 2 bits (batch_shape (2, 2)); N = 3 per batch."""
    f, make, theta = enumeration_case()
    exact = exact_expectation_grad(lambda x: f(x).sum(1), make, theta)
    control = EMABaseline(0.8) if baseline == "ema" else baseline
    g = gen(37)
    means = torch.stack([expectation_grad(f, make, theta, estimator="score", num_samples=3, baseline=control,
                                          generator=g).mean(0).reshape(-1) for _ in range(3000)])
    gc.assert_mean(means, exact.reshape(-1))


def test_per_item_enumeration_test_has_power():
    """The same test rejects a baseline that includes x_n (bias factor (N - 1)/N = 2/3 at N = 3)."""
    f, make, theta = enumeration_case()
    exact = exact_expectation_grad(lambda x: f(x).sum(1), make, theta)
    g = gen(37)
    means = torch.stack([expectation_grad(f, make, theta, estimator="score", num_samples=3,
                                          baseline=IncludingSelf(), generator=g).mean(0).reshape(-1)
                         for _ in range(3000)])
    with pytest.raises(AssertionError):
        gc.assert_mean(means, exact.reshape(-1))


def test_per_item_costs_need_items_of_the_distribution():
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        expectation_grad(lambda x: torch.zeros(4, 2, dtype=F64), items_bernoulli, torch.zeros(7, dtype=F64),
                         estimator="score", num_samples=4)


# --------------------------------------------------------------------------- regressions
def synthetic_batch(values):
    return ScoreBatch(values, None, values, None, None)


def test_rloo_is_exact_in_float32_when_one_cost_dominates():
    """(sum - f_n)/(N - 1) gives b_0 = 1.333 for [3e7, 1, 2, 3] in float32; the mean of the others is 2."""
    values = torch.tensor([3e7, 1.0, 2.0, 3.0], dtype=torch.float32)
    b = LeaveOneOut()(synthetic_batch(values))
    print("b", b.tolist())
    assert b[0].item() == 2.0
    per_item = LeaveOneOut()(synthetic_batch(torch.stack([values, values.flip(0)], 1)))
    assert per_item[0, 0].item() == 2.0 and per_item[3, 1].item() == 2.0
    assert torch.equal(leave_one_out_means(values), b)


def test_ema_value_for_a_batch_does_not_depend_on_that_batch():
    """Two EMAs see the same first batch and different second batches: the b used for the second is
    identical (exactly) and is decay * initial + (1 - decay) * mean(first batch); per item too."""
    first = torch.tensor([1.0, 4.0, 2.5], dtype=F64)
    for shape in [(3,), (3, 2)]:
        a, b = EMABaseline(0.75, initial=0.5), EMABaseline(0.75, initial=0.5)
        batch1 = first if len(shape) == 1 else torch.stack([first, 2 * first], 1)
        a(synthetic_batch(batch1)), b(synthetic_batch(batch1))
        second_a = torch.randn(shape, generator=gen(40), dtype=F64)
        second_b = 100 + torch.randn(shape, generator=gen(41), dtype=F64)
        used_a, used_b = a.terms(synthetic_batch(second_a))[0], b.terms(synthetic_batch(second_b))[0]
        assert torch.equal(used_a, used_b)
        expected = 0.75 * 0.5 + 0.25 * batch1.mean(0)
        assert torch.equal(used_a, expected.expand(shape))


def counting(f):
    calls = []

    def wrapped(x):
        calls.append(x.shape[0])
        return f(x)

    return wrapped, calls


WEIGHTS7 = torch.randn(ITEMS * DIM, generator=gen(42), dtype=F64)


def smooth_cost(x):
    """A differentiable non-linear cost of the (N, 3, 4) samples: (N,)."""
    flat = x.reshape(x.shape[0], -1)
    return (flat * WEIGHTS7).sum(1).sin() + 0.3 * (flat**2).sum(1)


def test_delta_method_computes_its_expansion_once_and_keeps_no_state():
    f, calls = counting(smooth_cost)
    theta = torch.randn(7, generator=gen(43), dtype=F64)
    expectation_grad(f, items_normal, theta, estimator="score", num_samples=5, baseline="delta", generator=gen(44))
    assert calls == [5, 1]  # the batch, then f(mu) once
    batch = ScoreBatch(smooth_cost(draw(items_normal(theta), (5,), generator=gen(44))), None,
                       draw(items_normal(theta), (5,), generator=gen(44)), items_normal(theta), smooth_cost,
                       {"base.loc": torch.zeros(ITEMS, DIM), "base.scale": torch.zeros(ITEMS, DIM)})
    delta = DeltaMethod()
    correction = delta.correction(batch)  # no earlier __call__ needed: nothing is cached between the two
    assert not hasattr(batch, "cache")
    b, again = delta.terms(batch)
    torch.testing.assert_close(correction, again)
    torch.testing.assert_close(b, delta(batch))


def delta_reference(f, make, theta, x, per_item):
    """(f - h) s_theta + J_mu^T grad f(mu), with h the first-order expansion of f at mu, float64 autograd."""
    mu = make(theta).base_dist.loc.detach().requires_grad_(True)
    value = f(mu.unsqueeze(0))[0]
    grad = torch.autograd.grad(value.sum(), mu)[0]
    h = value + ((x - mu.detach()) * grad).reshape(x.shape[0], *value.shape, -1).sum(-1)
    jac_mu = jacobian(lambda t: make(t).base_dist.loc, theta).reshape(mu.numel(), -1)
    correction = grad.reshape(-1) @ jac_mu
    if per_item:
        scores = per_item_scores(make, theta, x)
        return ((f(x) - h.detach()).unsqueeze(-1) * scores).sum(1) + correction
    scores = jacobian(lambda t: make(t).log_prob(x).sum(1), theta)
    return (f(x) - h.detach()).unsqueeze(-1) * scores + correction


@pytest.mark.parametrize("per_item", [False, True])
def test_delta_method_on_independent_normal_with_dense_jacobian(per_item):
    """12 Normal factors whose loc and scale mix all 7 coordinates of theta; joint and per-item costs."""
    theta = torch.randn(7, generator=gen(45), dtype=F64) * 0.5

    def f(x):
        per = (x * ITEM_WEIGHTS).sum(-1).sin() + 0.2 * (x**2).sum(-1)  # (N, 3)
        return per if per_item else per.sum(1)

    grads = expectation_grad(f, items_normal, theta, estimator="score", num_samples=6, baseline="delta",
                             generator=gen(46))
    x = draw(items_normal(theta), (6,), generator=gen(46))
    torch.testing.assert_close(grads, delta_reference(f, items_normal, theta, x, per_item), rtol=1e-10, atol=1e-10)
    leaf = theta.clone().requires_grad_(True)
    surrogate_loss(f, items_normal(leaf), num_samples=6, baseline="delta", generator=gen(46)).backward()
    torch.testing.assert_close(leaf.grad, grads.mean(0))


def test_delta_method_surrogate_correction_has_the_correction_as_its_gradient():
    """surrogate_correction(batch) is a scalar whose gradient w.r.t. theta is J^T (grad f(mu), 0), the
    chain rule of correction(batch) (12 Normal factors mixing 7 coordinates of theta, non-linear f)."""
    theta = torch.randn(7, generator=gen(47), dtype=F64)
    leaf = theta.clone().requires_grad_(True)
    dist = items_normal(leaf)
    x = draw(items_normal(theta), (5,), generator=gen(48))
    params = {"base.loc": dist.base_dist.loc.detach(), "base.scale": dist.base_dist.scale.detach()}
    batch = ScoreBatch(smooth_cost(x), None, x, dist, smooth_cost, params)
    delta = DeltaMethod()
    b, scalar = delta.surrogate_terms(batch)
    torch.testing.assert_close(b, delta(batch))
    (got,) = torch.autograd.grad(scalar, leaf)
    jac = jacobian(lambda t: torch.cat([items_normal(t).base_dist.loc.reshape(-1),
                                        items_normal(t).base_dist.scale.reshape(-1)]), theta)
    want = delta.correction(batch) @ jac
    assert want.abs().min() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_leave_one_out_sums_agree_on_both_paths():
    """Small batches use one product with the off-diagonal ones, large ones prefix/suffix sums: the same sums."""
    from gradlab.control_variates import MATMUL_LOO, leave_one_out_sums

    for count in (5, 7, 3 + int(MATMUL_LOO**0.5)):  # the last one above the product's size limit
        values = torch.randn(count, 3, generator=torch.Generator().manual_seed(count), dtype=torch.float64)
        expected = torch.stack([values[torch.arange(count) != n].sum(0) for n in range(count)])
        torch.testing.assert_close(leave_one_out_sums(values), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(leave_one_out_sums(values[:, 0]), expected[:, 0], rtol=1e-12, atol=1e-12)
