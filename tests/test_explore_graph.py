"""gradlab.explore_graph: the graph explorer's numbers, against the exact gradient and a direct computation."""
import math

import numpy as np
import pytest
import torch

from gradlab.explore_graph import graph_spread, node_choices, two_node_graph_problem, uses_baseline
from gradlab.scg import scg_surrogate

F64 = torch.float64
THETA = (0.2, -0.7)


@pytest.fixture(scope="module")
def problem():
    return two_node_graph_problem(THETA)


def by_hand_gradient(theta):
    """E[(y - x)^2] by an independent 80-point Gauss-Hermite rule (numpy), summed over y."""
    leaf = torch.tensor(theta, dtype=F64, requires_grad=True)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    x = leaf[0] + torch.tensor(nodes, dtype=F64)
    p = torch.sigmoid(x + leaf[1])
    value = (torch.tensor(weights / math.sqrt(2 * math.pi), dtype=F64) * (p * (1 - x) ** 2 + (1 - p) * x**2)).sum()
    return torch.autograd.grad(value, leaf)[0]


def direct_estimates(problem, estimators, num_samples, repeats, seed, baseline=None):
    g, rows = torch.Generator().manual_seed(seed), []
    for _ in range(repeats):
        leaf = torch.tensor(THETA, dtype=F64, requires_grad=True)
        loss, _ = scg_surrogate(problem.build(leaf), num_samples=num_samples, estimators=estimators,
                                baseline=baseline, generator=g)
        rows.append(torch.autograd.grad(loss, leaf)[0])
    return torch.stack(rows)


def test_the_exact_gradient_comes_from_the_graphs_enumeration(problem):
    torch.testing.assert_close(problem.exact_grad, by_hand_gradient(THETA), rtol=0, atol=1e-12)
    other = two_node_graph_problem((-0.5, 0.9))
    torch.testing.assert_close(other.exact_grad, by_hand_gradient((-0.5, 0.9)), rtol=0, atol=1e-12)
    assert (other.exact_grad - problem.exact_grad).abs().min() > 0.05  # it moves with theta


def test_which_estimators_apply_to_which_node(problem):
    choices = node_choices(problem)
    assert [e for e, why in choices["x"].items() if why is None] == ["score", "pathwise", "measure_valued"]
    assert [e for e, why in choices["y"].items() if why is None] == ["score", "measure_valued", "st", "concrete"]
    assert "rsample" in choices["y"]["pathwise"] and "Bernoulli" in choices["x"]["st"]


def test_the_spread_equals_a_direct_computation(problem):
    estimators = {"x": "pathwise", "y": "score"}
    spread = graph_spread(problem, estimators, num_samples=37, repeats=25, baseline="rloo", seed=4)
    direct = direct_estimates(problem, estimators, 37, 25, 4, baseline="rloo")
    assert torch.equal(spread.estimates, direct)
    torch.testing.assert_close(spread.variance, direct.var(0), rtol=1e-12, atol=0)  # the scale, not a direction
    torch.testing.assert_close(spread.bias, direct.mean(0) - by_hand_gradient(THETA), rtol=0, atol=1e-12)
    metrics = spread.metrics()
    assert metrics["var_theta1"] == pytest.approx(direct[:, 1].var().item(), rel=1e-12)
    assert metrics["bias_theta0"] == pytest.approx((direct[:, 0].mean() - problem.exact_grad[0]).item(), abs=1e-12)


def test_same_seed_same_numbers_and_the_global_rng_untouched(problem):
    state = torch.get_rng_state()
    first = graph_spread(problem, {"x": "measure_valued", "y": "st"}, num_samples=20, repeats=4, seed=1)
    again = graph_spread(problem, {"x": "measure_valued", "y": "st"}, num_samples=20, repeats=4, seed=1)
    other = graph_spread(problem, {"x": "measure_valued", "y": "st"}, num_samples=20, repeats=4, seed=2)
    assert torch.equal(first.estimates, again.estimates) and not torch.equal(first.estimates, other.estimates)
    assert torch.equal(torch.get_rng_state(), state)


def test_each_node_choice_changes_the_variance_it_should(problem):
    """x's estimator moves the variance of dJ/dθ₀ (score > pathwise > measure-valued here), y's that of dJ/dθ₁."""
    var = {(x, y): graph_spread(problem, {"x": x, "y": y}, num_samples=100, repeats=100, seed=0).variance
           for x in ("score", "pathwise", "measure_valued") for y in ("score", "measure_valued")}
    for y in ("score", "measure_valued"):
        assert var[("score", y)][0] > 2 * var[("pathwise", y)][0] > 4 * var[("measure_valued", y)][0]
    for x in ("score", "measure_valued"):  # (with x pathwise, y's score also reaches θ₀ through x)
        assert var[(x, "score")][1] > 3 * var[(x, "measure_valued")][1]
    assert len({tuple(v.tolist()) for v in var.values()}) == len(var)  # every choice shows other numbers


@pytest.mark.parametrize("x, y", [("score", "score"), ("pathwise", "measure_valued"), ("measure_valued", "score")])
def test_unbiased_choices_centre_on_the_exact_gradient_and_straight_through_does_not(problem, x, y):
    spread = graph_spread(problem, {"x": x, "y": y}, num_samples=200, repeats=60, seed=3)
    se = spread.sd / math.sqrt(60)
    assert (spread.bias.abs() < 4 * se).all(), (spread.bias / se).tolist()
    st = graph_spread(problem, {"x": x, "y": "st"}, num_samples=200, repeats=60, seed=3)
    assert st.bias[1].abs() > 5 * st.sd[1] / math.sqrt(60)  # the same check has the power to see a bias


def test_bad_arguments_raise_named_errors(problem):
    with pytest.raises(ValueError, match=r"estimators\['y'\].*rsample"):
        graph_spread(problem, {"x": "score", "y": "pathwise"})
    with pytest.raises(ValueError, match="every node"):
        graph_spread(problem, {"x": "score"})
    with pytest.raises(ValueError, match=r"estimators\['x'\] must be one of"):
        graph_spread(problem, {"x": "rebar", "y": "score"})
    with pytest.raises(ValueError, match="repeats"):
        graph_spread(problem, {"x": "score", "y": "score"}, repeats=1)
    with pytest.raises(ValueError, match="baseline"):
        graph_spread(problem, {"x": "score", "y": "score"}, baseline="optimal")
    with pytest.raises(ValueError, match="num_samples"):
        graph_spread(problem, {"x": "score", "y": "score"}, num_samples=0)
    with pytest.raises(ValueError, match="theta"):
        two_node_graph_problem((0.1, 0.2, 0.3))
    assert uses_baseline({"x": "pathwise", "y": "score"}) and not uses_baseline({"x": "pathwise", "y": "st"})
