"""Discrete variables: Gumbel sampling, straight-through bias, REBAR/RELAX unbiasedness and variance, Sinkhorn.

Statistical tests use fixed seeds and tolerances of a few standard errors; exact gradients come
from enumerating the (small) support.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, OneHotCategorical

from gradlab.expectation import exact_expectation_grad, expectation_grad
from gradlab.estimator import UnsupportedDistribution
from gradlab.relax import ControlVariateEstimator
from gradlab.discrete import (
    REBAR,
    RELAX,
    GumbelSoftmaxEstimator,
    StraightThroughEstimator,
    binary_concrete,
    gumbel_max,
    gumbel_sinkhorn,
    gumbel_softmax,
    hungarian,
    sinkhorn,
    straight_through,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_within_se(samples: torch.Tensor, target: torch.Tensor, k: float = 4.0) -> None:
    """Mean of ``samples`` (dim 0) within ``k`` standard errors of ``target`` (plus float64 round-off)."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mean - target).abs() <= k * se + 1e-12), f"mean {mean} vs target {target} (se {se})"


# ---------------------------------------------------------------- exact gradients by enumeration
def exact_grad(f, make_dist, theta: torch.Tensor) -> torch.Tensor:
    r"""$\nabla_\theta \sum_b p_\theta(b) f(b)$ by gradlab's enumeration; a OneHotCategorical goes through its indices."""
    if isinstance(make_dist(theta), OneHotCategorical):
        k = theta.shape[-1]
        return exact_expectation_grad(
            lambda idx: f(torch.nn.functional.one_hot(idx, k).to(theta.dtype)), lambda th: Categorical(logits=th), theta
        )
    return exact_expectation_grad(f, make_dist, theta)


T = 0.45


def toy(b: torch.Tensor) -> torch.Tensor:
    """The classic toy: sum_j (b_j - t)^2, one cost per sample."""
    return ((b - T) ** 2).sum(-1)


def bernoulli(theta: torch.Tensor) -> Bernoulli:
    return Bernoulli(logits=theta)


W_MIX = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]], dtype=F64)


def mixed_bernoulli(theta: torch.Tensor) -> Bernoulli:
    """Logits that mix theta (2 numbers -> 3 variables), to exercise the chain rule to theta."""
    return Bernoulli(logits=theta @ W_MIX)


def coupled(b: torch.Tensor) -> torch.Tensor:
    """A non-separable cost (products of the variables), accepting relaxed inputs too."""
    return (b[..., 0] * b[..., 1] - 0.7 * b[..., 2]) ** 2 + 0.3 * b[..., 0]


W_CAT = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=F64)


def onehot_cost(b: torch.Tensor) -> torch.Tensor:
    return (b @ W_CAT - 0.5) ** 2


# ---------------------------------------------------------------- Gumbel-max and Gumbel-softmax
LOGITS = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=F64)


def test_gumbel_max_frequencies_match_softmax():
    n = 40000
    idx = gumbel_max(LOGITS, num_samples=n, generator=gen(0))
    freq = torch.bincount(idx, minlength=4).to(F64) / n
    p = torch.softmax(LOGITS, 0)
    se = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() < 4 * se), (freq, p)


def test_hard_gumbel_softmax_is_one_hot_with_categorical_frequencies():
    n = 40000
    y = gumbel_softmax(LOGITS.expand(n, 4), tau=0.7, hard=True, generator=gen(1))
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.all(y.sum(-1) == 1)
    p = torch.softmax(LOGITS, 0)
    se = (p * (1 - p) / n).sqrt()
    assert torch.all((y.mean(0) - p).abs() < 4 * se), (y.mean(0), p)


def test_hard_gumbel_softmax_carries_the_soft_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    w = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=F64)
    (gumbel_softmax(logits, 0.5, hard=True, generator=gen(2)) @ w).backward()
    g_hard = logits.grad.clone()
    logits.grad = None
    (gumbel_softmax(logits, 0.5, hard=False, generator=gen(2)) @ w).backward()
    torch.testing.assert_close(g_hard, logits.grad)


def test_soft_samples_approach_one_hot_as_tau_goes_to_zero():
    n = 2000
    distances = []
    for tau in [1.0, 0.3, 0.1, 0.01]:
        soft = gumbel_softmax(LOGITS.expand(n, 4), tau, generator=gen(3))
        hard = gumbel_softmax(LOGITS.expand(n, 4), tau, hard=True, generator=gen(3))
        distances.append((soft - hard.detach()).abs().sum(-1).mean().item())
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < 0.02, distances


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_logits_stay_finite(dtype):
    logits = torch.tensor([1e4, -1e4, 0.0, 1e4], dtype=dtype).expand(500, 4).clone().requires_grad_(True)
    for hard in (False, True):
        y = gumbel_softmax(logits, 0.1, hard=hard, generator=gen(4))
        (y * torch.arange(4.0, dtype=dtype)).sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(logits.grad).all()
        logits.grad = None
    for method in ("identity", "gumbel"):
        b = straight_through(logits, dist="bernoulli", method=method, generator=gen(5))
        b.sum().backward()
        assert torch.isfinite(b).all() and torch.isfinite(logits.grad).all()
        logits.grad = None
    theta = torch.tensor([1e4, -1e4, 3.0], dtype=dtype)
    for est in (REBAR(), RELAX(num_inputs=3), GumbelSoftmaxEstimator(0.5)):
        g = est.to(dtype).per_sample_grads(toy, bernoulli, theta, num_samples=200, generator=gen(6))
        assert torch.isfinite(g).all(), type(est).__name__


def test_uniform_zero_draws_do_not_produce_infinities(monkeypatch):
    """torch.rand can return exactly 0; the samplers must not take log(0)."""
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(real_rand(*a, **k)))
    assert torch.isfinite(gumbel_softmax(LOGITS, 0.5)).all()
    assert torch.isfinite(binary_concrete(LOGITS, 0.5)).all()
    g = REBAR().double().per_sample_grads(toy, bernoulli, LOGITS[:3], num_samples=4)
    assert torch.isfinite(g).all()


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(LOGITS, tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(LOGITS, tau=-1.0)
    with pytest.raises(TypeError, match="logits"):
        gumbel_softmax(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="dist"):
        straight_through(LOGITS, dist="poisson")
    with pytest.raises(ValueError, match="baseline"):
        REBAR().per_sample_grads(toy, bernoulli, LOGITS[:3], num_samples=4, baseline="rloo")
    with pytest.raises(UnsupportedDistribution, match="estimator='rebar' needs a Bernoulli"):
        REBAR().per_sample_grads(toy, lambda th: Normal(th, 1.0), LOGITS[:3], num_samples=4)
    with pytest.raises(ValueError, match="shape"):  # (N, 3) would be per-item costs: (N, 6) is wrong
        REBAR().double().per_sample_grads(lambda b: torch.cat([b, b], 1), bernoulli, LOGITS[:3], num_samples=4)
    with pytest.raises(ValueError, match="OneHotCategorical"):
        REBAR().per_sample_grads(lambda b: b.double(), lambda th: Categorical(logits=th), LOGITS, num_samples=4)
    with pytest.raises(ValueError, match="surrogate"):
        ControlVariateEstimator(None, rebar_term=False, eta=1.0, tau=0.5)
    with pytest.raises(TypeError, match="surrogate"):
        RELAX(surrogate=3)
    with pytest.raises(ValueError, match="num_samples"):
        RELAX(num_inputs=3).per_sample_grads(toy, bernoulli, LOGITS[:3], num_samples=0)


def test_same_generator_state_gives_same_estimates():
    est = RELAX(num_inputs=3).double()
    a = est.per_sample_grads(toy, bernoulli, LOGITS[:3], num_samples=50, generator=gen(7))
    b = est.per_sample_grads(toy, bernoulli, LOGITS[:3], num_samples=50, generator=gen(7))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- straight-through: a bias we can derive
def test_straight_through_bias_matches_its_derived_value_and_can_have_the_wrong_sign():
    r"""Bernoulli(σ(θ)), f(b) = (b - t)².

    The identity ST estimate is f'(b) ∂p/∂θ = 2(b - t) p(1-p), with expectation 2(p - t) p(1-p);
    the true gradient is (f(1) - f(0)) p(1-p) = (1 - 2t) p(1-p). At p = 0.2, t = 0.45 the first is
    -0.1 p(1-p)·5 < 0 and the second +0.1 p(1-p) > 0: opposite signs.
    """
    theta = torch.tensor([math.log(0.2 / 0.8), 0.0, 1.5], dtype=F64)
    p = torch.sigmoid(theta)
    est = StraightThroughEstimator("identity")
    g = est.per_sample_grads(toy, bernoulli, theta, num_samples=40000, generator=gen(8))
    expected = 2 * (p - T) * p * (1 - p)
    assert_within_se(g, expected)
    exact = exact_grad(toy, bernoulli, theta)
    torch.testing.assert_close(exact, (1 - 2 * T) * p * (1 - p))
    assert g.mean(0)[0] < 0 < exact[0], "the p = 0.2 coordinate has the wrong sign"


def test_straight_through_function_gradient_is_the_identity_through_p():
    theta = torch.tensor([0.3, -1.0], dtype=F64, requires_grad=True)
    b = straight_through(theta, dist="bernoulli", generator=gen(9))
    (b * torch.tensor([2.0, 3.0], dtype=F64)).sum().backward()
    p = torch.sigmoid(theta.detach())
    torch.testing.assert_close(theta.grad, torch.tensor([2.0, 3.0], dtype=F64) * p * (1 - p))
    one_hot = straight_through(LOGITS, dist="categorical", generator=gen(9))
    assert one_hot.sum() == 1 and set(one_hot.unique().tolist()) == {0.0, 1.0}


# ---------------------------------------------------------------- REBAR and RELAX: unbiased for any parameters
def random_surrogate(d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).double()


CASES = {
    "toy": (toy, bernoulli, torch.tensor([0.0, -0.5, 2.0], dtype=F64)),
    "mixed": (coupled, mixed_bernoulli, torch.tensor([0.4, -1.3], dtype=F64)),
    "onehot": (onehot_cost, lambda th: OneHotCategorical(logits=th), torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=F64)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "make_estimator",
    [
        lambda d: REBAR(),
        lambda d: REBAR(eta=2.5, tau=0.1),
        lambda d: REBAR(eta=-0.7, tau=3.0),
        lambda d: RELAX(random_surrogate(d, 0), eta=0.5, tau=0.3),
        lambda d: RELAX(random_surrogate(d, 1), rebar_term=False),
    ],
    ids=["rebar-default", "rebar-sharp", "rebar-negative-eta", "relax", "relax-surrogate-only"],
)
def test_rebar_and_relax_are_unbiased(case, make_estimator):
    f, make_dist, theta = CASES[case]
    d = make_dist(theta).logits.shape[-1]
    est = make_estimator(d).double()
    g = expectation_grad(f, make_dist, theta, estimator=est, num_samples=20000, generator=gen(10))
    assert g.shape == (20000, *theta.shape)
    assert_within_se(g, exact_grad(f, make_dist, theta))


def test_relax_works_with_index_categoricals_without_the_rebar_term():
    make_dist = lambda th: Categorical(logits=th)  # noqa: E731
    f = lambda idx: W_CAT[idx] ** 2  # noqa: E731
    theta = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=F64)
    est = RELAX(random_surrogate(4, 2), rebar_term=False).double()
    g = est.per_sample_grads(f, make_dist, theta, num_samples=20000, generator=gen(11))
    assert_within_se(g, exact_grad(f, make_dist, theta))


@pytest.mark.parametrize("make_estimator", [lambda: REBAR(), lambda: RELAX(num_inputs=3)], ids=["rebar", "relax"])
def test_adapted_variance_is_below_reinforce_and_stays_unbiased(make_estimator):
    theta = torch.tensor([0.0, -0.5, 0.7], dtype=F64)
    est = make_estimator().double()
    before = est.per_sample_grads(toy, bernoulli, theta, num_samples=20000, generator=gen(12)).var(0).sum()
    opt = torch.optim.Adam(est.parameters(), lr=3e-2)
    g_gen = gen(13)
    for _ in range(150):
        est.adapt_step(opt, toy, bernoulli, theta, num_samples=16, generator=g_gen)
    g = est.per_sample_grads(toy, bernoulli, theta, num_samples=20000, generator=gen(14))
    var_reinforce = expectation_grad(toy, bernoulli, theta, estimator="score", num_samples=20000, generator=gen(15)).var(0).sum()
    assert g.var(0).sum() < 0.5 * var_reinforce, (g.var(0).sum(), var_reinforce)
    assert g.var(0).sum() < before, "adaptation did not reduce the variance"
    assert_within_se(g, exact_grad(toy, bernoulli, theta))


def test_variance_loss_gradient_matches_finite_differences_in_eta():
    """The adaptation gradient is d/dη of the mean squared estimate, with the noise held fixed."""
    theta = torch.tensor([0.3, -0.2, 1.0], dtype=F64)
    est = REBAR(eta=0.8, tau=0.6).double()
    _, loss = est.grads_and_variance(toy, bernoulli, theta, num_samples=64, generator=gen(16))
    (d_eta,) = torch.autograd.grad(loss, est.eta)
    h = 1e-5
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            est.eta += sign * h
        values.append(est.grads_and_variance(toy, bernoulli, theta, num_samples=64, generator=gen(16))[1].item())
        with torch.no_grad():
            est.eta -= sign * h
    assert d_eta.item() == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5, abs=1e-9)


def test_gumbel_softmax_estimator_bias_shrinks_with_tau():
    theta = torch.tensor([0.0, -0.5, 2.0], dtype=F64)
    exact = exact_grad(toy, bernoulli, theta)
    bias = []
    for tau in (1.0, 0.3, 0.1):
        g = GumbelSoftmaxEstimator(tau).per_sample_grads(toy, bernoulli, theta, num_samples=40000, generator=gen(17))
        bias.append((g.mean(0) - exact).norm().item())
        se = (g.var(0).sum() / g.shape[0]).sqrt().item()
    assert bias[0] > bias[1] > bias[2], bias
    assert bias[0] > 10 * se  # at tau = 1 the relaxation's bias is far outside the noise


# ---------------------------------------------------------------- Sinkhorn and Gumbel-Sinkhorn
def test_sinkhorn_marginals_are_one():
    x = torch.randn(3, 6, 6, generator=gen(18), dtype=F64)
    p = sinkhorn(x, n_iters=200, tau=0.5)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 6, dtype=F64), atol=1e-8, rtol=0)
    torch.testing.assert_close(p.sum(-2), torch.ones(3, 6, dtype=F64), atol=1e-8, rtol=0)


def test_sinkhorn_tends_to_the_hungarian_permutation_and_stays_finite():
    x = torch.randn(4, 5, 5, generator=gen(19), dtype=F64)
    perm = hungarian(x)
    assert torch.equal(perm.sum(-1), torch.ones(4, 5, dtype=F64)) and torch.equal(perm.sum(-2), torch.ones(4, 5, dtype=F64))
    errors = [(sinkhorn(x, n_iters=1000, tau=tau) - perm).abs().max().item() for tau in (1.0, 0.1, 0.01, 0.001)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 0.01, errors
    tiny = sinkhorn(x.float(), n_iters=50, tau=1e-4)
    assert torch.isfinite(tiny).all()


def test_hungarian_maximises_the_score():
    x = torch.randn(6, 6, generator=gen(20), dtype=F64)
    best = max(sum(x[i, j].item() for i, j in enumerate(perm)) for perm in itertools.permutations(range(6)))
    assert (hungarian(x) * x).sum().item() == pytest.approx(best)


def test_gumbel_sinkhorn_hard_samples_are_permutations_with_soft_gradients():
    x = torch.randn(4, 4, generator=gen(21), dtype=F64, requires_grad=True)
    y = gumbel_sinkhorn(x, tau=0.5, n_iters=30, num_samples=8, hard=True, generator=gen(22))
    assert y.shape == (8, 4, 4)
    assert torch.equal(y.detach().sum(-1), torch.ones(8, 4, dtype=F64))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    (y * torch.arange(16.0, dtype=F64).reshape(4, 4)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="log_alpha"):
        sinkhorn(torch.randn(3, 4))


def test_registered_names_and_the_exact_enumeration_agree():
    """estimator="st" / "concrete" / "rebar" / "relax" are registered (and the deprecated keys
    "straight_through" / "gumbel_softmax" give the same numbers); my enumeration for one-hot matches Categorical."""
    theta = torch.tensor([0.0, -0.5, 2.0], dtype=F64)
    a = expectation_grad(toy, bernoulli, theta, estimator="st", num_samples=10, generator=gen(30))
    b = StraightThroughEstimator().per_sample_grads(toy, bernoulli, theta, num_samples=10, generator=gen(30))
    old = expectation_grad(toy, bernoulli, theta, estimator="straight_through", num_samples=10, generator=gen(30))
    assert torch.equal(a, b) and torch.equal(a, old)
    g = expectation_grad(toy, bernoulli, theta, estimator="concrete", num_samples=10, generator=gen(31))
    h = GumbelSoftmaxEstimator(0.5).per_sample_grads(toy, bernoulli, theta, num_samples=10, generator=gen(31))
    old = expectation_grad(toy, bernoulli, theta, estimator="gumbel_softmax", num_samples=10, generator=gen(31))
    assert g.shape == (10, 3) and torch.isfinite(g).all() and torch.equal(g, h) and torch.equal(g, old)
    r = expectation_grad(toy, bernoulli, theta, estimator="rebar", num_samples=10, generator=gen(32))
    torch.testing.assert_close(r, REBAR().double().per_sample_grads(toy, bernoulli, theta, num_samples=10,
                                                                     generator=gen(32)))
    logits = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=F64)
    p = torch.softmax(logits, 0)
    values = (torch.eye(4, dtype=F64) @ W_CAT - 0.5) ** 2
    direct = p * (values - (p * values).sum())  # d/dlogits of sum_k p_k v_k
    torch.testing.assert_close(exact_grad(onehot_cost, lambda th: OneHotCategorical(logits=th), logits), direct)


def test_samplers_do_not_import_the_estimators_and_any_import_order_works():
    """discrete.py (samplers) sits below relax.py (estimators): no module-level import of relax, and
    gradlab.discrete.REBAR still resolves (a deprecated alias set by gradlab/__init__). Importing the samplers first gives the full registry."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import gradlab.discrete as discrete
    import gradlab.relax as relax

    tree = ast.parse(Path(discrete.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in top if isinstance(n, ast.ImportFrom) and (n.module or "").endswith("relax")]
    assert not [n for n in top if any(a.name.endswith("relax") for a in n.names)]
    assert discrete.REBAR is relax.REBAR and discrete.sample_z_b_ztilde is relax.sample_z_b_ztilde
    root = str(Path(discrete.__file__).resolve().parents[1])
    for first in ["gradlab.discrete"]:  # every import runs gradlab/__init__ first: one fresh process suffices
        code = f"import {first}, gradlab; print(sorted(gradlab.ESTIMATORS))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                             env={"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}, check=True).stdout
        assert "'rebar'" in out and "'score'" in out and "'st'" in out, (first, out)


# ---------------------------------------------------------------- categorical REBAR's conditional sample
from scipy import stats  # noqa: E402

from gradlab.discrete import perturb, sample_z_b_ztilde  # noqa: E402

CAT_LOGITS = torch.tensor([0.9, -0.4, 0.2, -1.1], dtype=F64)  # unnormalised, uneven


def conditional_samples(num_samples, seed, shift=0.0):
    lam = CAT_LOGITS.expand(num_samples, 4).clone()
    z, b, score, z_tilde = sample_z_b_ztilde("onehot", lam, gen(seed))
    z_tilde = z_tilde + shift * b  # shift: a seeded error in the maximum, for the power check
    return z, b, z_tilde


def rejection_samples(num_samples, seed, k):
    """z = log_softmax(lambda) + Gumbel noise, kept when argmax z == k: exact draws of p(z | b = k)."""
    z = perturb(torch.log_softmax(CAT_LOGITS, -1).expand(num_samples, 4), "onehot", gen(seed))
    return z[z.argmax(-1) == k]


def test_conditional_gumbel_sample_has_the_law_of_rejection_sampling_with_power():
    _, b, z_tilde = conditional_samples(40_000, 1)
    _, _, shifted = conditional_samples(40_000, 1, shift=0.2)
    assert torch.equal(z_tilde.argmax(-1), b.argmax(-1))  # the conditional sample keeps the category
    for k in (0, 3):  # the likeliest and the least likely category
        kept = rejection_samples(120_000, 2, k)
        given = z_tilde[b[:, k] == 1]
        for j in range(4):
            p = stats.ks_2samp(given[:, j].numpy(), kept[:, j].numpy()).pvalue
            assert p > 1e-3, f"b={k}, coordinate {j}: KS p-value {p:.2e}"
        p_bad = stats.ks_2samp(shifted[b[:, k] == 1][:, k].numpy(), kept[:, k].numpy()).pvalue
        assert p_bad < 1e-4, f"a 0.2 shift of the maximum went unseen (p = {p_bad:.2e})"


def test_the_maximum_of_the_conditional_sample_is_standard_gumbel_whatever_b():
    _, b, z_tilde = conditional_samples(20_000, 3)
    for k in range(4):
        top = z_tilde[b[:, k] == 1][:, k].numpy()
        assert stats.kstest(top, stats.gumbel_r.cdf).pvalue > 1e-3
        assert stats.kstest(top + 0.1, stats.gumbel_r.cdf).pvalue < 1e-3 or top.size < 2_000


MIX = torch.tensor([[1.0, 0.4, -0.2, 0.3], [0.0, 0.9, 0.5, -0.4], [-0.6, 0.1, 1.0, 0.2]], dtype=F64)
COST = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)


def cat_toy_dist(t):
    return OneHotCategorical(logits=t @ MIX)


def cat_toy_f(x):
    return ((x * COST.to(x)).sum(-1) - 0.3) ** 2 + 2.0 * x[..., 1]


@pytest.mark.parametrize("eta, tau", [(1.0, 0.5), (0.6, 0.2), (1.4, 2.0)])
def test_categorical_rebar_is_unbiased_against_enumeration_with_power(eta, tau):
    theta = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
    truth = exact_expectation_grad(
        lambda idx: cat_toy_f(torch.nn.functional.one_hot(idx, 4).to(F64)),
        lambda t: Categorical(logits=t @ MIX), theta,
    )
    grads = REBAR(eta=eta, tau=tau).double().per_sample_grads(cat_toy_f, cat_toy_dist, theta, num_samples=30_001,
                                                              generator=gen(8))
    se = grads.std(0) / math.sqrt(grads.shape[0])
    assert ((grads.mean(0) - truth).abs() / se).max() < 5.0
    assert ((1.25 * grads.mean(0) - truth).abs() / (1.25 * se)).max() > 5.0


def test_hard_gumbel_sinkhorn_follows_the_noise():
    """With flat log_alpha every permutation is equally likely: 40 hard samples of 4x4 must be permutation
    matrices and not all the same one (a sampler that ignores the Gumbel noise returns one assignment)."""
    import torch

    from gradlab import gumbel_sinkhorn

    hard = gumbel_sinkhorn(torch.zeros(4, 4, dtype=torch.float64), 0.5, num_samples=40, hard=True,
                           generator=torch.Generator().manual_seed(0)).detach()
    assert torch.equal(hard.sum(-1), torch.ones(40, 4, dtype=torch.float64))
    assert torch.equal(hard.sum(-2), torch.ones(40, 4, dtype=torch.float64))
    distinct = {tuple(h.argmax(-1).tolist()) for h in hard}
    print("distinct permutations among 40:", len(distinct))
    assert len(distinct) >= 5  # 24 permutations, 40 uniform draws: fewer than 5 distinct has probability < 1e-12


@pytest.mark.parametrize("make", [lambda: REBAR(eta=0.7, tau=0.3), lambda: RELAX(num_inputs=3, eta=0.6, tau=0.4)])
def test_shared_forward_is_the_control_variate_at_z_and_z_tilde(make):
    """One call of f on (b, sigma(z), sigma(z~)) gives f(b), c(z), c(z~) as separate calls would (float64)."""
    est = make().double()
    with torch.no_grad():  # a RELAX surrogate that is not zero, so that its part is checked too
        for p in est.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(40), dtype=F64))
    lam = torch.tensor([0.3, -1.2, 0.8], dtype=F64).expand(5, 3).clone()
    z, b, _, z_tilde = sample_z_b_ztilde("bernoulli", lam, gen(41))
    values, c_z, c_tilde = est.shared_forward(toy, "bernoulli", b, z, z_tilde)
    torch.testing.assert_close(values, toy(b), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(c_z, est.control_variate(toy, "bernoulli", z), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(c_tilde, est.control_variate(toy, "bernoulli", z_tilde), rtol=1e-13, atol=1e-13)
    assert not torch.allclose(c_z, c_tilde)
