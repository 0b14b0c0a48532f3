"""ARM and DisARM: exact per-sample formulas, unbiasedness by enumeration (with a power check),
DisARM's variance never above ARM's, per-item costs, determinism."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from gradlab.arm import antithetic_pair, arm_logit_grads, disarm_logit_grads

F64 = torch.float64
LOGITS = torch.tensor([[0.3, -1.2, 2.0], [-0.4, 0.9, 0.1]], dtype=F64)  # 2 x 3 bits, uneven probabilities
WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 0.7, 1.5, -0.3], dtype=F64)


def cost(b: torch.Tensor) -> torch.Tensor:
    """A non-linear cost of all 6 bits (the bits interact, so no coordinate separates)."""
    flat = b.reshape(b.shape[0], -1)
    return ((flat * WEIGHTS).sum(1) - 0.7) ** 2 + flat[:, 0] * flat[:, 5] - flat[:, 2] * flat[:, 3]


def plain(f, x):
    return f(x)


def exact_logit_grad(f, logits: torch.Tensor) -> torch.Tensor:
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=logits.numel())), dtype=F64)
    leaf = logits.clone().requires_grad_(True)
    p = torch.sigmoid(leaf).reshape(-1)
    prob = (states * p + (1 - states) * (1 - p)).prod(1)
    (grad,) = torch.autograd.grad((prob * f(states.reshape(-1, *logits.shape))).sum(), leaf)
    return grad


def within(samples: torch.Tensor, target: torch.Tensor, k: float = 4.0) -> bool:
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return bool(((samples.mean(0) - target).abs() <= k * se + 1e-12).all())


def test_pair_has_the_right_law_and_is_antithetic():
    u, b, bt = antithetic_pair(LOGITS, 50_001, torch.Generator().manual_seed(3))
    assert torch.equal(b, (u < torch.sigmoid(LOGITS)).to(F64))
    assert torch.equal(bt, (1 - u < torch.sigmoid(LOGITS)).to(F64))
    p = torch.sigmoid(LOGITS)
    se = (p * (1 - p) / 50_001).sqrt()
    assert ((b.mean(0) - p).abs() < 4 * se).all() and ((bt.mean(0) - p).abs() < 4 * se).all()


def test_arm_per_sample_formula():
    gen = torch.Generator().manual_seed(5)
    u, b, bt = antithetic_pair(LOGITS, 7, gen)
    costs, grads = arm_logit_grads(cost, LOGITS, 7, generator=torch.Generator().manual_seed(5), evaluate=plain)
    for n in range(7):
        diff = float(cost(bt[n : n + 1]) - cost(b[n : n + 1]))
        assert torch.allclose(grads[n], diff * (u[n] - 0.5), rtol=0, atol=1e-14)
        assert math.isclose(float(costs[n]), 0.5 * float(cost(b[n : n + 1]) + cost(bt[n : n + 1])), abs_tol=1e-14)


def test_disarm_per_sample_formula():
    u, b, bt = antithetic_pair(LOGITS, 7, torch.Generator().manual_seed(8))
    _, grads = disarm_logit_grads(cost, LOGITS, 7, generator=torch.Generator().manual_seed(8), evaluate=plain)
    for n in range(7):
        diff = float(cost(b[n : n + 1]) - cost(bt[n : n + 1]))
        for i, j in itertools.product(range(2), range(3)):
            differ = float(b[n, i, j] != bt[n, i, j])
            expected = 0.5 * diff * (-1) ** float(bt[n, i, j]) * differ * float(torch.sigmoid(LOGITS[i, j].abs()))
            assert math.isclose(float(grads[n, i, j]), expected, abs_tol=1e-14)


@pytest.mark.parametrize("estimate", [arm_logit_grads, disarm_logit_grads])
def test_unbiased_by_enumeration_with_power(estimate):
    exact = exact_logit_grad(cost, LOGITS)
    _, grads = estimate(cost, LOGITS, 60_000, generator=torch.Generator().manual_seed(11), evaluate=plain)
    assert within(grads, exact), (grads.mean(0), exact)
    # Power: a gradient 10% off in one coordinate, or a wrong sign of the other item, is caught.
    shrunk = grads.clone()
    shrunk[:, 0, 1] *= 0.9
    assert not within(shrunk, exact)
    swapped = grads.clone()
    swapped[:, 1] *= -1
    assert not within(swapped, exact)


def test_disarm_variance_not_above_arm():
    """DisARM is ARM with u integrated out given the pair: its variance is at most ARM's, per coordinate."""
    _, arm = arm_logit_grads(cost, LOGITS, 40_000, generator=torch.Generator().manual_seed(2), evaluate=plain)
    _, dis = disarm_logit_grads(cost, LOGITS, 40_000, generator=torch.Generator().manual_seed(2), evaluate=plain)
    assert (dis.var(0) < arm.var(0)).all(), (dis.var(0), arm.var(0))


@pytest.mark.parametrize("estimate", [arm_logit_grads, disarm_logit_grads])
def test_per_item_costs_use_each_items_own_difference(estimate):
    """With costs (N, B), item j's logits see only item j's cost difference."""
    def per_item(b):  # (N, 2, 3) -> (N, 2)
        return ((b * WEIGHTS.reshape(2, 3)).sum(-1) - 0.2) ** 2

    _, joint = estimate(per_item, LOGITS, 9, generator=torch.Generator().manual_seed(4), evaluate=plain)
    for item in range(2):
        def one(b, item=item):
            return per_item(b)[:, item]

        _, alone = estimate(one, LOGITS, 9, generator=torch.Generator().manual_seed(4), evaluate=plain)
        assert torch.allclose(joint[:, item], alone[:, item], rtol=0, atol=1e-14)
    exact = torch.stack([exact_logit_grad(lambda b, i=i: per_item(b)[:, i], LOGITS)[i] for i in range(2)])
    _, many = estimate(per_item, LOGITS, 60_000, generator=torch.Generator().manual_seed(6), evaluate=plain)
    assert within(many, exact)


@pytest.mark.parametrize("estimate", [arm_logit_grads, disarm_logit_grads])
def test_deterministic_and_global_rng_untouched(estimate):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = estimate(cost, LOGITS, 13, generator=torch.Generator().manual_seed(1), evaluate=plain)[1]
    b = estimate(cost, LOGITS, 13, generator=torch.Generator().manual_seed(1), evaluate=plain)[1]
    c = estimate(cost, LOGITS, 13, generator=torch.Generator().manual_seed(2), evaluate=plain)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)


def test_zero_when_both_samples_agree():
    logits = torch.tensor([8.0, -8.0, 9.0], dtype=F64)  # almost surely b == b~
    _, grads = disarm_logit_grads(lambda b: b.sum(1), logits, 100, generator=torch.Generator().manual_seed(0), evaluate=plain)
    assert (grads == 0).all()


# ---------------------------------------------------------------- through the one protocol
from torch.distributions import Bernoulli, Independent, Normal  # noqa: E402

import gradlab  # noqa: E402


def mixing_dist(theta):
    """Logits = A theta + c: 4 parameters to 6 bits (2 items x 3), a non-square, non-diagonal Jacobian."""
    a = torch.tensor([[1.0, 0.5, 0.0, -0.3], [0.0, 1.0, 0.2, 0.0], [0.4, 0.0, -1.0, 0.6],
                      [0.0, -0.7, 0.3, 1.0], [0.9, 0.0, 0.0, 0.5], [-0.2, 0.3, 0.8, 0.0]], dtype=theta.dtype)
    return Independent(Bernoulli(logits=(a @ theta + 0.1).reshape(2, 3)), 1)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_registered_and_unbiased_through_expectation_grad(name):
    theta = torch.tensor([0.2, -0.5, 0.9, 0.1], dtype=F64)
    exact = gradlab.exact_expectation_grad(cost, mixing_dist, theta)
    g = gradlab.expectation_grad(cost, mixing_dist, theta, estimator=name, num_samples=40_001,
                                 generator=torch.Generator().manual_seed(9))
    assert g.shape == (40_001, 4) and g.dtype == F64
    assert within(g, exact), (g.mean(0), exact)
    loss = gradlab.surrogate_loss(cost, mixing_dist(theta.clone().requires_grad_(True)), estimator=name,
                                  num_samples=5, generator=torch.Generator().manual_seed(1))
    assert loss.ndim == 0


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_rejects_what_it_cannot_handle(name):
    theta = torch.zeros(2, dtype=F64)
    with pytest.raises(gradlab.UnsupportedDistribution, match=f"estimator='{name}' needs a Bernoulli"):
        gradlab.expectation_grad(lambda x: x.sum(1), lambda t: Normal(t, 1.0), theta, estimator=name, num_samples=3)
    with pytest.raises(ValueError, match="baseline"):
        gradlab.expectation_grad(lambda x: x.sum(1), lambda t: Bernoulli(logits=t), theta, estimator=name,
                                 num_samples=3, baseline="rloo")
