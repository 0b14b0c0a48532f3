"""gradlab.widgets.GraphExplorer headless: its controls set as a reader would, its numbers against direct ones."""
import json
import re

import pytest
import torch

from gradlab.explore_graph import two_node_graph_problem
from gradlab.frames import fmt
from gradlab.scg import scg_surrogate
from gradlab.widgets import GraphExplorer

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

F64 = torch.float64
REPEATS = 12


def readout(explorer, name):
    match = re.search(rf'class="gradlab-{name}">([^<]*)<', explorer.readout.value)
    assert match, explorer.readout.value
    return match.group(1)


def direct(estimators, num_samples, seed=0, baseline=None, repeats=REPEATS):
    """The estimates by scg_surrogate itself, not through the explorer's code."""
    problem, g, rows = two_node_graph_problem(), torch.Generator().manual_seed(seed), []
    for _ in range(repeats):
        leaf = problem.theta.clone().requires_grad_(True)
        loss, _ = scg_surrogate(problem.build(leaf), num_samples=num_samples, estimators=estimators,
                                baseline=baseline, generator=g)
        rows.append(torch.autograd.grad(loss, leaf)[0])
    return torch.stack(rows), problem.exact_grad


@pytest.fixture
def explorer():
    ex = GraphExplorer(repeats=REPEATS, num_samples=30)
    ex.widget  # noqa: B018 (builds the controls, draws the first view)
    return ex


def test_menus_offer_only_what_applies_and_say_why_not(explorer):
    assert [v for _, v in explorer.controls["x"].options] == ["score", "pathwise", "measure_valued"]
    assert [v for _, v in explorer.controls["y"].options] == ["score", "measure_valued", "st", "concrete"]
    assert "pathwise does not apply to y" in explorer.readout.value and "rsample" in explorer.readout.value
    assert "pathwise does not apply to y" in explorer.static_note()


def test_each_menu_changes_the_variance_shown_to_the_direct_one(explorer):
    shown = {}
    for x, y in [("score", "score"), ("pathwise", "score"), ("pathwise", "measure_valued")]:
        explorer.controls["x"].value = x  # what the reader's menus send
        explorer.controls["y"].value = y
        est, exact = direct({"x": x, "y": y}, 30)
        for i in range(2):
            assert readout(explorer, f"var-theta{i}") == fmt(est[:, i].var().item())
            assert readout(explorer, f"bias-theta{i}") == fmt((est[:, i].mean() - exact[i]).item())
        shown[(x, y)] = (readout(explorer, "var-theta0"), readout(explorer, "var-theta1"))
    assert shown[("score", "score")][0] != shown[("pathwise", "score")][0]  # x's menu moves dJ/dθ₀
    assert shown[("pathwise", "score")][1] != shown[("pathwise", "measure_valued")][1]  # y's moves dJ/dθ₁


def test_the_slider_and_the_baseline_reach_the_estimate(explorer):
    explorer.controls["num_samples"].value = 200
    explorer.controls["baseline"].value = "rloo"
    est, _ = direct({"x": "score", "y": "score"}, 200, baseline="rloo")
    assert readout(explorer, "var-theta0") == fmt(est[:, 0].var().item())
    assert not explorer.controls["baseline"].disabled


def test_the_baseline_is_disabled_with_a_note_when_no_node_is_a_score_node(explorer):
    explorer.set(x="measure_valued", y="st")
    assert explorer.controls["baseline"].disabled
    assert "baseline does not apply" in explorer.readout.value
    assert explorer.key(explorer.params) == explorer.key({**explorer.params, "baseline": "rloo"})
    explorer.set(y="score")
    assert not explorer.controls["baseline"].disabled and "baseline does not apply" not in explorer.readout.value


def test_resample_draws_new_noise(explorer):
    before = readout(explorer, "var-theta0")
    explorer.widget.children[len(explorer.controls)].click()
    est, _ = direct({"x": "score", "y": "score"}, 30, seed=1)
    assert explorer.params["seed"] == 1
    assert readout(explorer, "var-theta0") == fmt(est[:, 0].var().item()) != before


def test_the_figure_shows_the_estimates_their_spread_and_the_exact_gradient():
    ex = GraphExplorer(repeats=REPEATS)
    fig = ex.figure(x="pathwise", y="measure_valued", num_samples=50)
    (ax,) = fig.axes
    est, exact = direct({"x": "pathwise", "y": "measure_valued"}, 50)
    dots = [c for c in ax.collections if c.get_offsets().shape[0] == REPEATS]
    assert len(dots) == 2
    for i, points in enumerate(dots):
        torch.testing.assert_close(torch.tensor(points.get_offsets()[:, 0]), est[:, i])
    exact_lines = [line for line in ax.lines if line.get_label() == "exact gradient" or line.get_color() == "k"]
    xs = sorted({round(float(line.get_xdata()[0]), 12) for line in exact_lines})
    assert xs == sorted(round(float(v), 12) for v in exact)
    low, high = ax.get_xlim()  # one scale for every choice at this N: that of the all-score graph
    reference, _ = direct({"x": "score", "y": "score"}, 50)
    mean, sd = reference.mean(0), reference.std(0)
    assert low <= (mean - 3 * sd).min() and high >= (mean + 3 * sd).max()
    assert low <= exact.min() and high >= exact.max()
    assert any(fmt(est[:, 0].var().item()) in t.get_text() for t in ax.texts)
    assert "x: pathwise" in ax.get_title() and "N = 50" in ax.get_title()


def test_precomputed_views_disable_the_baseline_where_it_does_nothing():
    ex = GraphExplorer(repeats=4)
    view = ex.static_html(x=["score", "measure_valued"], y=["measure_valued", "st"], baseline=["none", "rloo"],
                          num_samples=[10])
    assert view.num_frames == 8
    inactive = json.loads(re.search(r"inactive = (\[.*?\]);", view.html).group(1))
    labels = json.loads(re.search(r"names = (\[.*?\]);", view.html).group(1))
    baseline = labels.index("baseline")
    for k, off in enumerate(inactive):  # C order: x, y, baseline, N
        x_is_score = k // 4 == 0
        assert (baseline in off) == (not x_is_score), (k, off)
    assert "pathwise does not apply to y" in view.html
    assert "estimator of x" in view.html and "straight-through (biased)" in view.html


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"estimators\['y'\]"):
        GraphExplorer(estimators={"x": "score", "y": "pathwise"})
    with pytest.raises(TypeError, match="GraphProblem"):
        GraphExplorer(problem="two nodes")
    with pytest.raises(ValueError, match="baseline"):
        GraphExplorer(baseline="optimal")
