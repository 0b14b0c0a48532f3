"""gradlab.scg_nodes: the measure-valued and relaxed nodes of a graph, and the Gauss-Hermite exact expectation.

Ground truths: closed forms (a Gaussian graph with polynomial costs, a one-bit graph) and exact enumeration
(a Bernoulli -> Categorical graph). Statistical checks: R repetitions, the mean within 4 standard errors; the
biased straight-through node fails the same check (its power).
"""
import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from gradlab.scg import dice_objective, exact_graph_expectation, scg_surrogate
from gradlab.scg_nodes import gauss_hermite, unsupported_reason
from test_scg import GAUSS, THETA, discrete_model, exact_discrete, gaussian_expectation, gaussian_model, hessian

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def estimates(model_fn, theta0, estimators, *, num_samples, reps, seed, baseline=None):
    g, out = gen(seed), []
    for _ in range(reps):
        th = torch.tensor(theta0, dtype=F64, requires_grad=True)
        loss, _ = scg_surrogate(model_fn(th), num_samples=num_samples, estimators=estimators, baseline=baseline,
                                generator=g)
        out.append(torch.autograd.grad(loss, th)[0])
    out = torch.stack(out)
    return out.mean(0), out.std(0) / math.sqrt(reps)


def test_gauss_hermite_integrates_polynomials_exactly():
    z, log_w = gauss_hermite(4)
    w = log_w.exp()
    assert w.sum().item() == pytest.approx(1.0, abs=1e-14)
    moments = [(w * z**k).sum().item() for k in range(8)]
    assert moments == pytest.approx([1, 0, 1, 0, 3, 0, 15, 0], abs=1e-12)
    assert (w * z**8).sum().item() != pytest.approx(105, abs=1e-3)  # degree 2K is past the rule


def test_hermite_supports_give_the_gaussian_graph_closed_form_to_second_order():
    theta = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
    value = exact_graph_expectation(gaussian_model(theta), {"z1": ("hermite", 3), "z2": ("hermite", 3)})
    grad, hess = hessian(value, theta)
    truth_grad, truth_hess = hessian(gaussian_expectation(theta), theta)
    torch.testing.assert_close(value, gaussian_expectation(theta), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, truth_grad, rtol=0, atol=1e-11)
    torch.testing.assert_close(hess, truth_hess, rtol=0, atol=1e-10)


def two_node(theta):
    def model(g):
        x = g.sample("x", D.Normal(theta[0].expand(g.num_samples), theta[2].exp()))
        y = g.sample("y", D.Bernoulli(logits=x + theta[1]), parents=["x"])
        g.cost("c", (y - x) ** 2, parents=["x", "y"])
    return model


def test_hermite_and_enumeration_mix_on_the_two_node_graph():
    theta = torch.tensor([0.2, -0.7, 0.3], dtype=F64, requires_grad=True)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # an independent rule, written out by hand
    x = theta[0] + theta[2].exp() * torch.tensor(nodes, dtype=F64)
    p = torch.sigmoid(x + theta[1])
    by_hand = (torch.tensor(weights / math.sqrt(2 * math.pi), dtype=F64) * (p * (1 - x) ** 2 + (1 - p) * x**2)).sum()
    ours = exact_graph_expectation(two_node(theta), {"x": ("hermite", 60), "y": 2})
    truth = torch.autograd.grad(by_hand, theta)[0]
    got = torch.autograd.grad(ours, theta)[0]
    torch.testing.assert_close(got, truth, rtol=0, atol=1e-10)


@pytest.mark.parametrize("estimators", [
    "measure_valued", {"z1": "measure_valued", "z2": "pathwise"}, {"z1": "pathwise", "z2": "measure_valued"},
    {"z1": "measure_valued", "z2": "score"}])
def test_measure_valued_nodes_are_unbiased_on_the_gaussian_graph(estimators):
    theta = torch.tensor(GAUSS, dtype=F64, requires_grad=True)
    truth = torch.autograd.grad(gaussian_expectation(theta), theta)[0]  # scale too: theta[1], theta[4]
    mean, se = estimates(gaussian_model, GAUSS, estimators, num_samples=1001, reps=30, seed=3, baseline="rloo")
    assert ((mean - truth).abs() < 4 * se + 1e-12).all(), ((mean - truth) / se).tolist()


@pytest.mark.parametrize("estimators", ["measure_valued", {"z1": "measure_valued"}, {"z2": "measure_valued"}])
def test_measure_valued_discrete_nodes_match_enumeration(estimators):
    truth, _ = exact_discrete()
    mean, se = estimates(discrete_model, THETA, estimators, num_samples=500, reps=30, seed=5)
    assert ((mean - truth).abs() < 4 * se + 1e-12).all(), ((mean - truth) / se).tolist()
    if estimators == "measure_valued":  # every node enumerated at its outcomes: less noise than the score
        score_mean, score_se = estimates(discrete_model, THETA, "score", num_samples=500, reps=30, seed=5)
        assert (se < score_se).all()


@pytest.mark.parametrize("estimators", [{"x": "pathwise", "y": "measure_valued"}, "measure_valued",
                                        {"x": "measure_valued", "y": "score"}])
def test_measure_valued_nodes_on_the_two_node_graph_match_quadrature(estimators):
    """y's cost (y - x)^2 reads x, drawn before y: the re-runs must keep it."""
    theta = torch.tensor([0.2, -0.7, 0.3], dtype=F64, requires_grad=True)
    truth = torch.autograd.grad(exact_graph_expectation(two_node(theta), {"x": ("hermite", 60), "y": 2}), theta)[0]
    mean, se = estimates(two_node, [0.2, -0.7, 0.3], estimators, num_samples=400, reps=30, seed=4)
    assert ((mean - truth).abs() < 4 * se + 1e-12).all(), ((mean - truth) / se).tolist()


def one_bit(theta, a=0.3):
    def model(g):
        y = g.sample("y", D.Bernoulli(logits=theta[0].expand(g.num_samples)))
        g.cost("c", (y - a) ** 2)
    return model


def test_straight_through_node_has_its_closed_form_bias_and_fails_the_unbiasedness_check():
    """For c = (y - a)^2: the gradient is p(1-p)(1 - 2a); straight-through's mean is 2(p - a) p(1-p)."""
    theta0, a = 0.4, 0.3
    p = 1 / (1 + math.exp(-theta0))
    truth, st_mean = p * (1 - p) * (1 - 2 * a), 2 * (p - a) * p * (1 - p)
    mean, se = estimates(one_bit, [theta0], "st", num_samples=400, reps=40, seed=9)
    assert abs(mean.item() - st_mean) < 4 * se.item()
    assert abs(mean.item() - truth) > 10 * se.item()  # the check the unbiased nodes pass fails here
    mvd_mean, mvd_se = estimates(one_bit, [theta0], "measure_valued", num_samples=400, reps=40, seed=9)
    assert abs(mvd_mean.item() - truth) < 4 * mvd_se.item() + 1e-12


def test_concrete_node_targets_the_relaxed_graph():
    """Its mean is the gradient of E[(sigmoid((theta + L) / tau) - a)^2], L logistic, tau = 0.5 (a quadrature)."""
    theta = torch.tensor([0.4], dtype=F64, requires_grad=True)
    u = (torch.arange(400_000, dtype=F64) + 0.5) / 400_000  # midpoint rule over the logistic noise's quantiles
    relaxed = torch.sigmoid((theta + torch.log(u) - torch.log1p(-u)) / 0.5)
    target = torch.autograd.grad(((relaxed - 0.3) ** 2).mean(), theta)[0].item()
    p = 1 / (1 + math.exp(-0.4))
    assert abs(target - p * (1 - p) * 0.4) > 1e-3  # the relaxed graph's gradient is not the discrete one's
    mean, se = estimates(one_bit, [0.4], "concrete", num_samples=400, reps=40, seed=2)
    assert abs(mean.item() - target) < 4 * se.item()


def test_same_generator_same_numbers_and_the_global_rng_untouched():
    state = torch.get_rng_state()
    first = estimates(discrete_model, THETA, "measure_valued", num_samples=50, reps=3, seed=1)[0]
    again = estimates(discrete_model, THETA, "measure_valued", num_samples=50, reps=3, seed=1)[0]
    other = estimates(discrete_model, THETA, "measure_valued", num_samples=50, reps=3, seed=2)[0]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), state)


def test_unsupported_nodes_raise_named_errors():
    assert "rsample" in unsupported_reason("pathwise", D.Bernoulli(probs=torch.full((3,), 0.5)))
    assert "Bernoulli" in unsupported_reason("st", D.Normal(torch.zeros(3), 1.0))
    assert "scalar" in unsupported_reason("measure_valued", D.MultivariateNormal(torch.zeros(3, 2), torch.eye(2)))
    assert unsupported_reason("concrete", D.OneHotCategorical(logits=torch.zeros(3, 4))) is None
    with pytest.raises(ValueError, match="node 'z1'.*'st' needs a Bernoulli"):
        scg_surrogate(gaussian_model(torch.tensor(GAUSS)), num_samples=4, estimators={"z1": "st"})
    with pytest.raises(ValueError, match="dice_objective.*measure_valued"):
        dice_objective(discrete_model(torch.tensor(THETA)), num_samples=4, estimators="measure_valued")
    with pytest.raises(ValueError, match="hermite"):
        exact_graph_expectation(discrete_model(torch.tensor(THETA)), {"z1": ("gauss", 3), "z2": 3})
    with pytest.raises(ValueError, match="Normal"):
        exact_graph_expectation(discrete_model(torch.tensor(THETA)), {"z1": ("hermite", 3), "z2": 3})
