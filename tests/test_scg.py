"""gradlab.scg against exact enumeration (discrete graphs) and closed forms (Gaussian graphs).

Statistical tests: R repetitions of a batch estimate, mean within 4 standard errors of the truth; each
family also has a power check (a wrong rule of the same size fails).
"""
import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from gradlab.scg import Graph, dice_objective, exact_graph_expectation, magic_box, scg_surrogate

F64 = torch.float64
THETA = [0.3, -0.5, 0.8, 1.2, -0.4]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def discrete_model(theta, causal=True):
    """z1 ~ Bernoulli, z2 ~ Categorical(3) whose logits depend on z1; costs c1(z1), c2(z2).

    causal=False declares c1 as depending on both nodes: still unbiased, z2's term then multiplies c1 + c2."""
    def model(g):
        n = g.num_samples
        z1 = g.sample("z1", D.Bernoulli(logits=theta[0].expand(n)))
        logits = torch.stack([theta[1] * z1, theta[2] * (1 - z1), theta[3] * z1 + theta[4]], -1)
        z2 = g.sample("z2", D.Categorical(logits=logits), parents=["z1"])
        g.cost("c1", (z1 - 0.3) * theta[3], parents=["z1"] if causal else None)  # None: all nodes so far
        g.cost("c2", (z2.to(F64) - 1.2) ** 2 * (1 + theta[4] ** 2), parents=["z2"])
    return model


def hessian(scalar, theta):
    (grad,) = torch.autograd.grad(scalar, theta, create_graph=True)
    rows = [torch.autograd.grad(grad[i], theta, retain_graph=True)[0] for i in range(len(theta))]
    return grad.detach(), torch.stack(rows)


def exact_discrete():
    theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
    return hessian(exact_graph_expectation(discrete_model(theta), {"z1": 2, "z2": 3}), theta)


def repeated(fn, reps, seed):
    """Stack reps results of fn(generator) -> tensor: mean and standard error."""
    out = torch.stack([fn(gen(seed + r)) for r in range(reps)])
    return out.mean(0), out.std(0) / math.sqrt(reps), out


def surrogate_grad(model_fn, num_samples, **kw):
    def fn(g):
        theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
        loss, _ = scg_surrogate(model_fn(theta), num_samples=num_samples, generator=g, **kw)
        return torch.autograd.grad(loss, theta)[0]
    return fn


def test_exact_enumeration_is_a_probability_sum():
    theta = torch.tensor(THETA, dtype=F64)
    # with every cost replaced by 1, the enumerated expectation is the total probability
    def ones(g):
        discrete_model(theta)(g)
        g.costs = [("one", torch.ones(g.num_samples, dtype=F64), frozenset())]
    assert torch.allclose(exact_graph_expectation(ones, {"z1": 2, "z2": 3}), torch.tensor(1.0, dtype=F64))


@pytest.mark.parametrize("baseline", [None, "rloo"])
def test_surrogate_first_derivative_is_unbiased(baseline):
    truth, _ = exact_discrete()
    mean, se, _ = repeated(surrogate_grad(discrete_model, 3001, baseline=baseline), 40, 10)
    assert ((mean - truth).abs() < 4 * se + 1e-12).all(), (mean, truth, se)
    assert truth.abs().min() > 4 * se.max()  # every coordinate is resolved (power)


def test_causality_lowers_variance_and_matches_the_rule_by_hand():
    theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
    loss, graph = scg_surrogate(discrete_model(theta), num_samples=257, generator=gen(3))
    (auto,) = torch.autograd.grad(loss, theta, retain_graph=True)
    c1, c2 = graph.costs[0][1], graph.costs[1][1]
    lp1, lp2 = graph.log_probs["z1"], graph.log_probs["z2"]
    by_hand = (c1 + c2 + lp1 * (c1 + c2).detach() + lp2 * c2.detach()).mean()  # z2's term: c2 only
    assert torch.allclose(auto, torch.autograd.grad(by_hand, theta)[0], atol=1e-12)
    truth, _ = exact_discrete()
    _, _, causal = repeated(surrogate_grad(discrete_model, 500, baseline=None), 60, 100)
    _, _, full = repeated(surrogate_grad(lambda t: discrete_model(t, causal=False), 500), 60, 100)
    assert (full.mean(0) - truth).abs().max() < 4 * (full.std(0) / math.sqrt(60)).max()  # still unbiased
    assert causal.var(0).sum() < 0.8 * full.var(0).sum()


def test_dice_second_derivative_is_unbiased_and_the_surrogate_rules_is_not():
    _, truth = exact_discrete()

    def dice_hessian(g):
        theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
        return hessian(dice_objective(discrete_model(theta), num_samples=4000, generator=g), theta)[1]

    def surrogate_hessian(g):
        theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
        return hessian(scg_surrogate(discrete_model(theta), num_samples=4000, generator=g)[0], theta)[1]

    mean, se, _ = repeated(dice_hessian, 30, 1)
    assert ((mean - truth).abs() < 4.5 * se + 1e-10).all(), (mean - truth) / se
    wrong, wrong_se, _ = repeated(surrogate_hessian, 30, 1)
    assert ((wrong - truth).abs() / (wrong_se + 1e-12)).max() > 8  # the surrogate's Hessian misses terms


def test_dice_value_and_first_derivative_equal_the_surrogate():
    theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
    dice = dice_objective(discrete_model(theta), num_samples=300, generator=gen(5))
    loss, _ = scg_surrogate(discrete_model(theta), num_samples=300, generator=gen(5))
    assert torch.allclose(dice, loss)
    assert torch.allclose(torch.autograd.grad(dice, theta)[0], torch.autograd.grad(loss, theta)[0], atol=1e-12)


def test_magic_box():
    tau = torch.tensor([0.3, -1.0], dtype=F64, requires_grad=True)
    box = magic_box(tau * tau)
    assert torch.allclose(box, torch.ones(2, dtype=F64))
    (grad,) = torch.autograd.grad(box.sum(), tau, create_graph=True)
    assert torch.allclose(grad, 2 * tau)
    (second,) = torch.autograd.grad(grad.sum(), tau)
    assert torch.allclose(second, 2 + 4 * tau.detach() ** 2)
    with pytest.raises(TypeError, match="tau"):
        magic_box(1.0)


# ---------------------------------------------------------------- Gaussian graph, closed forms
def gaussian_model(theta):
    """z1 ~ N(mu, sigma^2), z2 ~ N(a z1 + b, s^2); costs k z1 and z2^2. theta = (mu, log sigma, a, b, log s, k)."""
    def model(g):
        n = g.num_samples
        z1 = g.sample("z1", D.Normal(theta[0].expand(n), theta[1].exp()))
        z2 = g.sample("z2", D.Normal(theta[2] * z1 + theta[3], theta[4].exp()), parents=["z1"])
        g.cost("linear", theta[5] * z1, parents=["z1"])
        g.cost("square", z2**2, parents=["z2"])
    return model


def gaussian_expectation(theta):
    mu, sigma, a, b, s, k = theta[0], theta[1].exp(), theta[2], theta[3], theta[4].exp(), theta[5]
    return k * mu + (a * mu + b) ** 2 + a**2 * sigma**2 + s**2


GAUSS = [0.4, -0.3, 0.9, -0.6, -0.7, 1.5]


@pytest.mark.parametrize("estimators", [
    "score", "pathwise", {"z1": "pathwise", "z2": "score"}, {"z1": "score", "z2": "pathwise"}])
def test_gaussian_graph_gradient_matches_closed_form(estimators):
    theta = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
    truth = torch.autograd.grad(gaussian_expectation(theta), theta)[0]
    mu, sigma, a, b, s, k = GAUSS[0], math.exp(GAUSS[1]), GAUSS[2], GAUSS[3], math.exp(GAUSS[4]), GAUSS[5]
    by_hand = torch.tensor([k + 2 * a * (a * mu + b), 2 * a**2 * sigma**2, 2 * mu * (a * mu + b) + 2 * a * sigma**2,
                            2 * (a * mu + b), 2 * s**2, mu], dtype=F64)
    assert torch.allclose(truth, by_hand)

    def fn(g):
        th = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
        loss, _ = scg_surrogate(gaussian_model(th), num_samples=4001, estimators=estimators, baseline="rloo",
                                generator=g)
        return torch.autograd.grad(loss, th)[0]

    mean, se, _ = repeated(fn, 30, 7)
    assert ((mean - truth).abs() < 4 * se + 1e-12).all(), (mean - truth) / se


@pytest.mark.parametrize("estimators", ["score", {"z1": "pathwise", "z2": "score"}])
def test_gaussian_graph_dice_hessian_matches_closed_form(estimators):
    theta = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
    _, truth = hessian(gaussian_expectation(theta), theta)

    def fn(g):
        th = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
        return hessian(dice_objective(gaussian_model(th), num_samples=20000, estimators=estimators, generator=g),
                       th)[1]

    mean, se, _ = repeated(fn, 30, 11)
    assert ((mean - truth).abs() < 4.5 * se + 1e-10).all(), (mean - truth) / se


# ---------------------------------------------------------------- two nodes: naive backward is wrong
def two_node_model(theta):
    """x ~ N(theta_0, 1) by rsample, y ~ Bernoulli(sigmoid(x + theta_1)), cost (y - x)^2."""
    def model(g):
        x = g.sample("x", D.Normal(theta[0].expand(g.num_samples), 1.0))
        y = g.sample("y", D.Bernoulli(logits=x + theta[1]), parents=["x"])
        g.cost("c", (y - x) ** 2, parents=["x", "y"])
    return model


def two_node_exact(theta):
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    x = theta[0] + torch.tensor(nodes, dtype=F64)
    w = torch.tensor(weights / math.sqrt(2 * math.pi), dtype=F64)
    p = torch.sigmoid(x + theta[1])
    return (w * (p * (1 - x) ** 2 + (1 - p) * x**2)).sum()


def test_two_node_surrogate_is_right_where_naive_backward_is_wrong():
    theta = torch.tensor([0.2, -0.7], dtype=F64, requires_grad=True)
    truth = torch.autograd.grad(two_node_exact(theta), theta)[0]

    def surrogate(g):
        th = torch.tensor([0.2, -0.7], dtype=F64, requires_grad=True)
        return torch.autograd.grad(scg_surrogate(two_node_model(th), num_samples=4000, generator=g,
                                                 estimators={"x": "pathwise"}, baseline="rloo")[0], th)[0]

    def naive(g):
        th = torch.tensor([0.2, -0.7], dtype=F64, requires_grad=True)
        x = D.Normal(th[0].expand(4000), 1.0).rsample()
        y = torch.bernoulli(torch.sigmoid(x + th[1]).detach(), generator=g)
        grad = torch.autograd.grad(((y - x) ** 2).mean(), th, allow_unused=True)[0]
        return grad

    mean, se, _ = repeated(surrogate, 30, 21)
    assert ((mean - truth).abs() < 4 * se).all(), (mean - truth) / se
    torch.manual_seed(0)
    wrong, wrong_se, _ = repeated(naive, 30, 21)
    assert ((wrong - truth).abs() / wrong_se).max() > 10


# ---------------------------------------------------------------- plumbing
def test_same_generator_same_numbers_and_global_rng_untouched():
    theta = torch.tensor(GAUSS, dtype=F64)
    state = torch.get_rng_state()
    a, _ = scg_surrogate(gaussian_model(theta), num_samples=7, generator=gen(4))
    b, _ = scg_surrogate(gaussian_model(theta), num_samples=7, generator=gen(4))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_bad_inputs_raise_named_errors():
    theta = torch.tensor(GAUSS, dtype=F64)
    with pytest.raises(ValueError, match="estimators"):
        scg_surrogate(gaussian_model(theta), num_samples=4, estimators="nope")
    with pytest.raises(ValueError, match="estimators"):
        scg_surrogate(gaussian_model(theta), num_samples=4, estimators="rebar")  # not a graph node's
    with pytest.raises(ValueError, match="pathwise"):
        scg_surrogate(discrete_model(torch.tensor(THETA)), num_samples=4, estimators="pathwise")
    with pytest.raises(ValueError, match="baseline"):
        scg_surrogate(gaussian_model(theta), num_samples=4, baseline="optimal")
    with pytest.raises(ValueError, match="num_samples"):
        scg_surrogate(gaussian_model(theta), num_samples=0)
    with pytest.raises(ValueError, match="rloo"):
        scg_surrogate(gaussian_model(theta), num_samples=1, baseline="rloo")
    with pytest.raises(TypeError, match="model"):
        scg_surrogate(3, num_samples=4)

    def bad_shape(g):
        g.sample("x", D.Normal(torch.zeros(3), 1.0))

    def bad_cost(g):
        x = g.sample("x", D.Normal(torch.zeros(g.num_samples), 1.0))
        g.cost("c", x.sum())

    def bad_parent(g):
        g.sample("x", D.Normal(torch.zeros(g.num_samples), 1.0), parents=["y"])

    def twice(g):
        for _ in range(2):
            g.sample("x", D.Normal(torch.zeros(g.num_samples), 1.0))

    def no_cost(g):
        g.sample("x", D.Normal(torch.zeros(g.num_samples), 1.0))

    for model, message in [(bad_shape, "batch_shape"), (bad_cost, "shape"), (bad_parent, "parents"),
                           (twice, "twice"), (no_cost, "no cost")]:
        with pytest.raises(ValueError, match=message):
            scg_surrogate(model, num_samples=4)
    with pytest.raises(ValueError, match="supports"):
        exact_graph_expectation(discrete_model(torch.tensor(THETA, dtype=F64)), {"z1": 2})
    with pytest.raises(TypeError, match="supports"):
        exact_graph_expectation(discrete_model(torch.tensor(THETA, dtype=F64)), [])
    assert isinstance(Graph(3), Graph)


@pytest.mark.parametrize("baseline", [None, "rloo"])
def test_surrogate_value_and_gradient_per_sample_formula_on_a_plain_batch(baseline):
    r"""One node of three plain Bernoullis per sample (log_prob (N, 3), summed per sample), N = 5:
    value = mean cost, gradient = $\frac1N\sum_n (c_n - b_n)(x_n - p)$ with $b_n$ the mean of the others."""
    from gradlab.distributions import draw

    theta = torch.tensor([0.4, -0.3, 0.9], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    n = 5

    def model(g):
        x = g.sample("x", D.Bernoulli(logits=theta.expand(g.num_samples, 3)))
        g.cost("c", (x @ w - 0.3) ** 2, parents=["x"])

    loss, _ = scg_surrogate(model, num_samples=n, baseline=baseline, generator=gen(3))
    x = draw(D.Bernoulli(logits=theta.detach().expand(n, 3)), generator=gen(3))
    c = (x @ w - 0.3) ** 2
    b = torch.zeros(n, dtype=torch.float64) if baseline is None else (c.sum() - c) / (n - 1)
    torch.testing.assert_close(loss.detach(), c.mean())
    (grad,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(grad, ((c - b).unsqueeze(1) * (x - torch.sigmoid(theta.detach()))).mean(0))


def test_the_enumeration_limit_is_65536_states_inclusive():
    """Sixteen binary nodes (exactly 2^16 joint states) enumerate, E[sum b] = sum p; one state more is refused."""
    p = torch.linspace(0.1, 0.8, 16, dtype=torch.float64)

    def model(g):
        for i in range(16):
            b = g.sample(f"b{i}", D.Bernoulli(probs=p[i].expand(g.num_samples)))
            g.cost(f"c{i}", b, parents=[f"b{i}"])

    value = exact_graph_expectation(model, {f"b{i}": 2 for i in range(16)})
    torch.testing.assert_close(value, p.sum())
    with pytest.raises(ValueError, match="65537"):
        exact_graph_expectation(model, {"a": 65537})
