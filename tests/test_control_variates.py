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
    assert b.shape == (4, 1)
    assert b[0, 0].item() == 2.0
    per_item = LeaveOneOut()(ScoreBatch(torch.stack([values, values.flip(0)], 1), None, values, None, None))
    assert per_item.shape == (4, 2) and per_item[0, 0].item() == 2.0 and per_item[3, 1].item() == 2.0


def test_delta_method_computes_its_expansion_once_per_batch_and_keeps_no_state():
    """fit() evaluates f at mu once (one extra call of f with one sample), and the baseline object
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
