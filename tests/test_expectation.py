"""The one estimator signature: registry, shapes, errors, reproducibility, ES link, surrogate loss, enumeration."""
from __future__ import annotations

import pytest
import torch
from torch import distributions as D

import gaussian_closed_forms as gc
import gradlab
from gradlab.distributions import draw
from gradlab.es import es_grad
from gradlab.estimator import ALIASES, Estimate, Estimator, get_estimator
from gradlab.expectation import (
    ESTIMATORS,
    exact_expectation_grad,
    expectation_grad,
    register_estimator,
    surrogate_loss,
)

F64 = torch.float64
NAMES = ["score", "pathwise", "measure_valued"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic(x):
    return (x - 0.5).pow(2).sum(-1) + torch.sin(3 * x[..., 0])


def independent_normal(theta):
    return D.Independent(D.Normal(theta, 0.4), 1)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_reproducibility(name):
    th = torch.tensor([[0.1, -0.2], [0.3, 0.0]], dtype=F64)
    one = expectation_grad(matrix_cost, independent_normal_2d, th, estimator=name, num_samples=5, generator=gen(1))
    two = expectation_grad(matrix_cost, independent_normal_2d, th, estimator=name, num_samples=5, generator=gen(1))
    other = expectation_grad(matrix_cost, independent_normal_2d, th, estimator=name, num_samples=5, generator=gen(2))
    assert one.shape == (5, 2, 2) and one.dtype == F64
    assert torch.equal(one, two) and not torch.equal(one, other)
    assert not th.requires_grad and th.grad is None


def matrix_cost(x):
    return quadratic(x).sum(-1)


def independent_normal_2d(theta):
    return D.Independent(D.Normal(theta, 0.4), 2)


def test_distributions_torch_samples_use_the_generator_and_leave_global_state():
    """Gamma is sampled by torch under a forked global RNG seeded from the generator."""
    state = torch.get_rng_state()

    def make(t):
        return D.Gamma(t[0], t[1])

    th = torch.tensor([2.0, 3.0], dtype=F64)
    for name in ["score", "pathwise"]:
        one = expectation_grad(lambda x: x, make, th, estimator=name, num_samples=4, generator=gen(3))
        two = expectation_grad(lambda x: x, make, th, estimator=name, num_samples=4, generator=gen(3))
        assert torch.equal(one, two)
    assert torch.equal(state, torch.get_rng_state())


def test_pathwise_gamma_unbiased():
    th = torch.tensor([2.0, 3.0], dtype=F64)
    grads = expectation_grad(lambda x: x, lambda t: D.Gamma(t[0], t[1]), th, estimator="pathwise",
                             num_samples=50_000, generator=gen(4))
    gc.assert_mean(grads, torch.tensor([1 / 3.0, -2 / 9.0], dtype=F64))


def test_es_forward_is_score_function_with_f_theta_baseline():
    """Chapter 3's "forward" ES estimate = mean of score-function estimates for N(theta, sigma^2 I)
    with the constant baseline f(theta): the same numbers for the same generator state."""
    th = torch.tensor([0.3, -1.2, 0.8], dtype=F64)
    sigma = 0.25

    def single(x):
        return quadratic(x.unsqueeze(0))[0]

    es = es_grad(single, th, sigma=sigma, num_samples=64, method="forward", generator=gen(5))
    ours = expectation_grad(quadratic, lambda t: D.Independent(D.Normal(t, sigma), 1), th, estimator="score",
                            num_samples=64, baseline=float(single(th)), generator=gen(5))
    torch.testing.assert_close(ours.mean(0), es, rtol=1e-10, atol=1e-12)


def test_es_antithetic_is_the_coupled_pair_average():
    """Antithetic ES = average of the score-function estimates at the coupled draws z and -z."""
    th = torch.tensor([0.3, -1.2], dtype=F64)
    sigma = 0.25

    def single(x):
        return quadratic(x.unsqueeze(0))[0]

    es = es_grad(single, th, sigma=sigma, num_samples=32, method="antithetic", generator=gen(6))
    z = torch.randn(32, 2, generator=gen(6), dtype=F64)
    plus, minus = quadratic(th + sigma * z), quadratic(th - sigma * z)
    pair = 0.5 * (plus.unsqueeze(1) * z / sigma + minus.unsqueeze(1) * (-z) / sigma)
    torch.testing.assert_close(pair.mean(0), es)


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_loss_backward_is_the_mean_estimate(name):
    th = torch.tensor([0.2, -0.4], dtype=F64)
    leaf = th.clone().requires_grad_(True)
    loss = surrogate_loss(quadratic, independent_normal(leaf), estimator=name, num_samples=16, generator=gen(7))
    assert loss.dim() == 0
    loss.backward()
    expected = expectation_grad(quadratic, independent_normal, th, estimator=name, num_samples=16,
                                generator=gen(7)).mean(0)
    torch.testing.assert_close(leaf.grad, expected)


def test_registry_and_custom_estimator():
    """A new estimator is a subclass with one hook and a registration; the registry takes nothing else."""

    class Zero(Estimator):
        name = "zero_test"

        def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False):
            x = draw(dist, (num_samples,), generator=generator)
            return Estimate(f(x), torch.zeros(num_samples, sum(v.numel() for v in lam.values()), dtype=F64))

    class WrongShape(Zero):
        def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False):
            return Estimate(torch.zeros(num_samples), torch.zeros(num_samples, dtype=F64))

    class Legacy:  # the protocol before Estimator: an object with per_sample_grads
        def per_sample_grads(self, f, make_dist, theta, *, num_samples, baseline=None, generator=None):
            return torch.zeros(num_samples, *theta.shape, dtype=theta.dtype)

    th = torch.zeros(3, dtype=F64)
    assert set(NAMES) <= set(ESTIMATORS) and gradlab.ESTIMATORS is ESTIMATORS
    assert expectation_grad(quadratic, independent_normal, th, estimator=Zero(), num_samples=2).shape == (2, 3)
    assert expectation_grad(quadratic, independent_normal, th, estimator=Legacy(), num_samples=2).shape == (2, 3)
    register_estimator("zero_test", Zero())
    try:
        assert expectation_grad(quadratic, independent_normal, th, estimator="zero_test", num_samples=2).abs().sum() == 0
    finally:
        del ESTIMATORS["zero_test"]
    with pytest.raises(ValueError, match="expected shape"):
        expectation_grad(quadratic, independent_normal, th, estimator=WrongShape(), num_samples=2)
    with pytest.raises(TypeError, match="Estimator"):
        register_estimator("bad", object())
    with pytest.raises(TypeError, match="Estimator"):
        register_estimator("bad", Legacy())
    with pytest.raises(ValueError, match="alias"):
        register_estimator("gumbel_softmax", Zero())


def test_deprecated_aliases_resolve_to_the_new_keys():
    assert get_estimator("gumbel_softmax") is ESTIMATORS["concrete"]
    assert get_estimator("straight_through") is ESTIMATORS["st"]
    assert not set(ALIASES) & set(ESTIMATORS)


@pytest.mark.parametrize("name", NAMES)
def test_input_errors(name):
    th = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="num_samples"):
        expectation_grad(quadratic, independent_normal, th, estimator=name, num_samples=0)
    with pytest.raises(TypeError, match="num_samples"):
        expectation_grad(quadratic, independent_normal, th, estimator=name, num_samples=2.0)
    with pytest.raises(ValueError, match=r"to costs of shape \(\d+,\)"):
        expectation_grad(lambda x: x, independent_normal, th, estimator=name, num_samples=4)
    with pytest.raises(ValueError, match="non-finite"):
        expectation_grad(lambda x: quadratic(x) / 0.0, independent_normal, th, estimator=name, num_samples=4)
    with pytest.raises(TypeError, match="make_dist"):
        expectation_grad(quadratic, lambda t: t, th, estimator=name, num_samples=4)
    with pytest.raises(TypeError, match="make_dist"):
        expectation_grad(quadratic, None, th, estimator=name, num_samples=4)
    with pytest.raises(TypeError, match="f must be callable"):
        expectation_grad(3.0, independent_normal, th, estimator=name, num_samples=4)
    with pytest.raises(TypeError, match="theta"):
        expectation_grad(quadratic, independent_normal, [0.0, 1.0], estimator=name, num_samples=4)
    with pytest.raises(TypeError, match="theta"):
        expectation_grad(quadratic, independent_normal, torch.zeros(3, dtype=torch.long), estimator=name,
                         num_samples=4)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        expectation_grad(quadratic, independent_normal, torch.zeros(2), estimator="reinforce", num_samples=2)
    with pytest.raises(TypeError, match="estimator"):
        expectation_grad(quadratic, independent_normal, torch.zeros(2), estimator=3, num_samples=2)


def test_per_sample_lifts_a_function_of_one_sample():
    th = torch.tensor([0.2, -0.4], dtype=F64)

    def single(x):
        return (x - 0.5).pow(2).sum() + torch.sin(3 * x[0])

    for name in NAMES:
        lifted = expectation_grad(gradlab.per_sample(single), independent_normal, th, estimator=name,
                                  num_samples=6, generator=gen(8))
        batched = expectation_grad(quadratic, independent_normal, th, estimator=name, num_samples=6,
                                   generator=gen(8))
        torch.testing.assert_close(lifted, batched)


def test_exact_expectation_grad_closed_forms():
    """Bernoulli(sigmoid theta) product, f = w.x: gradient w * p (1 - p). Categorical(softmax theta),
    f(k) = c_k: gradient p * (c - p.c)."""
    th = torch.tensor([0.3, -0.5, 1.0], dtype=F64)
    w = torch.tensor([1.0, 2.0, -3.0], dtype=F64)
    p = th.sigmoid()
    torch.testing.assert_close(exact_expectation_grad(lambda x: x @ w, lambda t: D.Bernoulli(logits=t), th),
                               w * p * (1 - p))
    torch.testing.assert_close(
        exact_expectation_grad(lambda x: x @ w, lambda t: D.Independent(D.Bernoulli(logits=t), 1), th),
        w * p * (1 - p))
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    q = th.softmax(0)
    torch.testing.assert_close(exact_expectation_grad(lambda x: c[x], lambda t: D.Categorical(logits=t), th),
                               q * (c - q @ c))


def test_exact_expectation_grad_errors():
    with pytest.raises(ValueError, match="Bernoulli or Categorical"):
        exact_expectation_grad(quadratic, independent_normal, torch.zeros(2))
    with pytest.raises(ValueError, match="joint states"):
        exact_expectation_grad(lambda x: x.sum(-1), lambda t: D.Bernoulli(logits=t), torch.zeros(20))


def test_enumeration_limit_is_inclusive_at_exactly_max_enumeration_states():
    """16 independent bits are exactly 2^16 = MAX_ENUMERATION joint states: enumerated (gradient of E[sum b]
    is p(1 - p)); one more state (a 17th bit) is refused."""
    import torch
    from torch import distributions as D

    from gradlab.expectation import MAX_ENUMERATION, exact_expectation_grad

    assert MAX_ENUMERATION == 2**16
    theta = torch.linspace(-1.0, 1.0, 16, dtype=torch.float64)
    grad = exact_expectation_grad(lambda b: b.sum(-1), lambda t: D.Independent(D.Bernoulli(logits=t), 1), theta)
    p = torch.sigmoid(theta)
    torch.testing.assert_close(grad, p * (1 - p))
    with pytest.raises(ValueError, match="131072"):
        exact_expectation_grad(lambda b: b.sum(-1), lambda t: D.Independent(D.Bernoulli(logits=t), 1),
                               torch.zeros(17, dtype=torch.float64))
