"""gradlab.explore and gradlab.widgets without a browser.

The explorers are built headless (ipywidgets objects with no front end), their controls
are set as a reader would set them, and the numbers they display are compared with a
direct computation that uses gradlab's estimators, not the explorers' code.
"""
from __future__ import annotations

import base64
import math
import re
import subprocess
import sys

import pytest
import torch

from gradlab import explore
from gradlab.compare import cosine_similarity, relative_error
from gradlab.discrete import REBAR, GumbelSoftmaxEstimator
from gradlab.es import es_grad
from gradlab.expectation import exact_expectation_grad
from gradlab.finite_diff import fd_grad, forward_grad
from gradlab.frames import fmt, frames_html
from gradlab.widgets import GradientExplorer, SmoothingExplorer, VarianceExplorer

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def readout(explorer, name: str) -> str:
    match = re.search(rf'class="gradlab-{name}">([^<]*)<', explorer.readout.value)
    assert match, explorer.readout.value
    return match.group(1)


@pytest.fixture(scope="module")
def small_problem():
    return explore.digits_mlp_problem(hidden=(4,), batch_size=32)


def direct_truth(problem):
    return torch.func.grad(problem.objective)(problem.theta)


# --------------------------------------------------------------------------- GradientExplorer
def test_default_gradient_explorer_is_the_digits_mlp_with_every_point_estimator():
    explorer = GradientExplorer()
    assert explorer.problem.theta.numel() == 64 * 16 + 16 + 16 * 10 + 10
    assert explorer.estimators == ["fd_forward", "fd_central", "forward_grad", "es_naive", "es_forward",
                                   "es_antithetic"]
    assert explorer.params["estimator"] == "es_antithetic" and explorer.params["knob"] == 0.01


def test_moving_sliders_shows_the_direct_es_cosine(small_problem):
    explorer = GradientExplorer(small_problem)
    explorer.widget  # noqa: B018 (builds the controls, draws the first view)
    first_image = bytes(explorer.image.value)
    assert first_image.startswith(PNG)
    explorer.controls["num_samples"].value = 300  # what the reader's slider sends
    explorer.controls["knob"].value = 0.05
    truth = direct_truth(small_problem)
    est = es_grad(small_problem.objective, small_problem.theta, sigma=explorer.controls["knob"].value,
                  num_samples=300, method="antithetic", generator=torch.Generator().manual_seed(0))
    assert readout(explorer, "cosine") == fmt(cosine_similarity(est, truth))
    assert readout(explorer, "relative-error") == fmt(relative_error(est, truth))
    assert readout(explorer, "evaluations") == "600"
    assert bytes(explorer.image.value) != first_image


def test_resample_draws_new_noise(small_problem):
    explorer = GradientExplorer(small_problem, estimators=["forward_grad"], num_samples=50)
    explorer.widget  # noqa: B018
    before = readout(explorer, "cosine")
    button = explorer.widget.children[len(explorer.controls)]
    button.click()
    est = forward_grad(small_problem.objective, small_problem.theta, 50, generator=torch.Generator().manual_seed(1))
    assert explorer.params["seed"] == 1
    assert readout(explorer, "cosine") == fmt(cosine_similarity(est, direct_truth(small_problem))) != before


def test_switching_to_finite_differences_uses_its_own_knob(small_problem):
    explorer = GradientExplorer(small_problem)
    explorer.widget  # noqa: B018
    explorer.controls["estimator"].value = "fd_central"
    knob = explorer.controls["knob"]
    assert knob.description == "ε" and math.isclose(knob.value, 1e-3)
    assert explorer.controls["num_samples"].layout.display == "none"
    explorer.controls["knob"].value = 1e-5
    est = fd_grad(small_problem.objective, small_problem.theta, eps=knob.value, scheme="central")
    assert readout(explorer, "cosine") == fmt(cosine_similarity(est, direct_truth(small_problem)))
    assert readout(explorer, "evaluations") == str(2 * small_problem.theta.numel())


def test_gradient_figure_has_the_components_the_diagonal_and_the_metrics(small_problem):
    explorer = GradientExplorer(small_problem)
    fig = explorer.figure(estimator="es_forward", sigma=0.02, num_samples=64)
    (ax,) = fig.axes
    (points,) = ax.collections
    offsets = torch.tensor(points.get_offsets())
    est = es_grad(small_problem.objective, small_problem.theta, sigma=0.02, num_samples=64, method="forward",
                  generator=torch.Generator().manual_seed(0))
    assert offsets.shape == (small_problem.theta.numel(), 2)
    torch.testing.assert_close(offsets[:, 0], direct_truth(small_problem).double())
    torch.testing.assert_close(offsets[:, 1], est.double())
    diagonal = ax.lines[0].get_xydata()
    assert (diagonal[:, 0] == diagonal[:, 1]).all()
    assert fmt(cosine_similarity(est, direct_truth(small_problem))) in ax.texts[0].get_text()
    assert "65 evaluations" in ax.texts[0].get_text()


def test_gradient_explorer_accepts_any_scalar_function():
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    explorer = GradientExplorer(lambda x: (x**4).sum(), theta, estimators=["fd_central"])
    metrics = explorer.metrics(eps=1e-5)
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["relative_error"] < 1e-8
    with pytest.raises(TypeError, match="theta"):
        GradientExplorer(lambda x: x.sum())


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(estimators=["nope"]), "estimators"), (dict(estimators=[]), "estimators"),
     (dict(estimator="fd_forward", estimators=["es_naive"]), "estimator")],
)
def test_gradient_explorer_rejects_bad_arguments(small_problem, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientExplorer(small_problem, **kwargs)


@pytest.mark.parametrize("num_samples, error", [(2.0, TypeError), (True, TypeError), (0, ValueError)])
def test_explorers_reject_a_bad_num_samples_as_the_estimators_do(small_problem, num_samples, error):
    # one home for the checks (gradlab.checks): the same bad input, the same error type everywhere
    with pytest.raises(error, match="num_samples") as from_es:
        es_grad(small_problem.objective, small_problem.theta, sigma=0.1, num_samples=num_samples)
    with pytest.raises(error, match="num_samples") as from_explorer:
        explore.estimate_once(small_problem, "es_naive", num_samples=num_samples, knob=0.1)
    assert str(from_es.value) == str(from_explorer.value)


def test_the_explorer_menu_is_data_registered_nowhere_else():
    assert list(explore.EXPLORER_METHODS) == [entry.name for entry in explore.builtin_methods()]
    assert not hasattr(explore, "ESTIMATORS")  # the one ESTIMATORS is gradlab's estimator registry


def test_knob_outside_its_range_is_clamped_and_bad_knob_rejected(small_problem):
    explorer = GradientExplorer(small_problem)
    assert explorer.normalize({**explorer.params, "sigma": 50.0})["knob"] == 1.0
    with pytest.raises(ValueError, match="sigma"):
        explore.gradient_view(small_problem, "es_naive", knob=-1.0)


# --------------------------------------------------------------------------- registry
class GaussianPathwise:
    """A stand-in for an estimator of the one estimator signature: x = θ + ε, per-sample ∇_θ f(x)."""

    name = "test_pathwise"

    def per_sample_grads(self, f, make_dist, theta, *, num_samples, baseline=None, generator=None):
        eps = torch.randn((num_samples, *theta.shape), generator=generator, dtype=theta.dtype)
        one = torch.func.grad(lambda t, e: f((t + e).unsqueeze(0))[0])
        return torch.func.vmap(one, in_dims=(None, 0))(theta, eps)


@pytest.fixture
def expectation_problem():
    def f(x):
        return (x**2).sum(-1)

    theta = torch.tensor([0.5, -1.0], dtype=torch.float64)
    problem = explore.GradientProblem(
        "E[x²], x ~ N(θ, I)", theta, lambda t: (t**2).sum() + t.numel(), f=f,
        make_dist=lambda t: torch.distributions.Normal(t, 1.0),
    )
    entry = explore.register_explorer_estimator(explore.expectation_entry(GaussianPathwise(), "pathwise (test)"))
    yield problem
    del explore.EXPLORER_METHODS[entry.name]


def test_an_expectation_estimator_plugs_in_with_one_entry(expectation_problem, small_problem):
    assert "test_pathwise" in explore.estimators_for(expectation_problem)
    assert "test_pathwise" not in explore.estimators_for(small_problem)
    explorer = GradientExplorer(expectation_problem, estimators=["test_pathwise", "es_antithetic"])
    explorer.set(estimator="test_pathwise", num_samples=400)
    per_sample = GaussianPathwise().per_sample_grads(
        expectation_problem.f, expectation_problem.make_dist, expectation_problem.theta, num_samples=400,
        generator=torch.Generator().manual_seed(0))
    truth = 2 * expectation_problem.theta
    assert readout(explorer, "cosine") == fmt(cosine_similarity(per_sample.mean(0), truth))
    assert explorer.controls["knob"].layout.display == "none"
    with pytest.raises(ValueError, match="expectation problem"):
        explore.estimate_once(small_problem, "test_pathwise")
    with pytest.raises(TypeError, match="ExplorerEstimator"):
        explore.register_explorer_estimator("score")


# --------------------------------------------------------------------------- VarianceExplorer
def test_error_stats_split_the_mse_and_match_direct_draws():
    problem = explore.wiggly_problem(dim=5)
    stats = explore.error_stats(problem, "es_forward", [(20, 0.3), (80, 0.3)], repeats=12, seed=3)
    torch.testing.assert_close(stats["bias2"] + stats["variance"], stats["mse"])
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([es_grad(problem.objective, problem.theta, sigma=0.3, num_samples=80, method="forward",
                                 generator=gen) for _ in range(12)])
    truth = direct_truth(problem)
    errors = (draws - truth).pow(2).sum(1)
    assert stats["mse"][1].item() == pytest.approx(errors.mean().item(), rel=1e-10)
    assert stats["bias2"][1].item() == pytest.approx((draws.mean(0) - truth).pow(2).sum().item(), rel=1e-10)
    assert (stats["lower"] <= stats["upper"]).all()


def test_es_bias_on_the_wiggly_function_is_the_closed_form():
    """The mean of many antithetic draws sits within 5 standard errors of ∇f_σ = ∇f + 3(e^{-9σ²/2} - 1) cos 3x."""
    problem, sigma, repeats = explore.wiggly_problem(dim=4), 0.4, 200
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([es_grad(problem.objective, problem.theta, sigma=sigma, num_samples=50, generator=gen)
                         for _ in range(repeats)])
    bias = 3 * (math.exp(-4.5 * sigma**2) - 1) * torch.cos(3 * problem.theta)
    se = draws.std(0) / math.sqrt(repeats)
    assert ((draws.mean(0) - direct_truth(problem) - bias).abs() < 5 * se).all()


def test_variance_explorer_shows_the_direct_numbers_and_draws_bands():
    explorer = VarianceExplorer(explore.wiggly_problem(dim=3), ["es_forward", "es_antithetic"],
                                sample_grid=(10, 40), knob_grid=(0.05, 0.5), repeats=6)
    explorer.widget  # noqa: B018
    explorer.controls["axis"].value = "knob"
    explorer.controls["num_samples"].value = 40
    direct = explore.error_stats(explorer.problem, "es_antithetic", [(40, 0.5)], repeats=6, seed=0)
    assert readout(explorer, "es-antithetic-mse") == fmt(float(direct["mse"][0]))
    assert readout(explorer, "es-antithetic-bias2") == fmt(float(direct["bias2"][0]))
    fig = explorer.figure()
    (ax,) = fig.axes
    assert len(ax.collections) == 2  # one band per estimator
    assert len(ax.lines) == 2 * 3 + 3  # MSE, bias², variance per estimator + the style legend
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="share one knob"):
        VarianceExplorer(estimators=["fd_forward", "es_naive"])
    with pytest.raises(ValueError, match="axis"):
        explorer.figure(axis="time")


# --------------------------------------------------------------------------- SmoothingExplorer
def test_smoothing_quadrature_matches_closed_forms():
    xs = torch.linspace(-2, 2, 41, dtype=torch.float64)
    sigma = 0.4
    value, slope = explore.smoothed(lambda x: x**2 / 4 + torch.sin(3 * x), xs, sigma)
    damp = math.exp(-4.5 * sigma**2)
    torch.testing.assert_close(value, (xs**2 + sigma**2) / 4 + damp * torch.sin(3 * xs), atol=1e-6, rtol=0)
    torch.testing.assert_close(slope, xs / 2 + 3 * damp * torch.cos(3 * xs), atol=1e-6, rtol=0)
    _, kink_slope = explore.smoothed(torch.abs, xs, sigma)  # d/dx E|x + σz| = erf(x / (σ√2))
    torch.testing.assert_close(kink_slope, torch.erf(xs / (sigma * math.sqrt(2))), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="sigma"):
        explore.smoothed(torch.abs, xs, 0.0)


def test_smoothing_explorer_shows_the_direct_es_slope():
    explorer = SmoothingExplorer()
    explorer.widget  # noqa: B018
    explorer.controls["sigma"].value = 0.5
    explorer.controls["x0"].value = -1.0
    explorer.controls["num_samples"].value = 500
    f = explorer.functions[explorer.params["function"]]
    gen = torch.Generator().manual_seed(0)
    est = es_grad(lambda x: f(x).sum(), torch.tensor([-1.0], dtype=torch.float64), sigma=explorer.params["sigma"],
                  num_samples=500, generator=gen)
    assert readout(explorer, "es-estimate") == fmt(float(est[0]))
    exact = -0.5 + 3 * math.exp(-4.5 * explorer.params["sigma"] ** 2) * math.cos(-3.0)
    assert float(readout(explorer, "smoothed-slope")) == pytest.approx(exact, abs=1e-3)
    (ax,) = explorer.figure().axes
    assert len(ax.lines) == 5
    tangent = ax.lines[3].get_xydata()
    assert (tangent[1, 1] - tangent[0, 1]) / (tangent[1, 0] - tangent[0, 0]) == pytest.approx(float(est[0]))
    with pytest.raises(ValueError, match="function"):
        explorer.figure(function="nope")


def test_es_slope_is_unbiased_for_the_smoothed_slope_on_a_staircase():
    f = explore.SMOOTHING_FUNCTIONS["staircase: ⌊2x⌋/2"]
    _, exact = explore.smoothed(f, torch.tensor([0.3]), 0.3)
    values = torch.tensor([explore.es_slope(f, 0.3, sigma=0.3, num_samples=200, seed=s) for s in range(40)])
    assert abs(values.mean() - exact[0]) < 5 * values.std() / math.sqrt(40)


# --------------------------------------------------------------------------- precomputed views
def test_static_html_has_one_png_per_grid_point_and_no_external_resource(small_problem):
    explorer = GradientExplorer(small_problem, estimators=["es_forward", "es_antithetic"])
    view = explorer.static_html(estimator=["es_forward", "es_antithetic"], num_samples=[10, 100, 1000])
    assert view.num_frames == 6
    frames = re.search(r"var frames = (\[.*?\]),", view.html).group(1)
    pngs = [base64.b64decode(s) for s in re.findall(r'"([A-Za-z0-9+/=]+)"', frames)]
    assert len(pngs) == 6 and all(p.startswith(PNG) for p in pngs) and len(set(pngs)) == 6
    assert not re.search(r"<script[^>]*src=|<link|https?://(?!colab)", view.html)
    assert 'type="range"' in view.html and "<select" in view.html
    assert "ES (antithetic)" in view.html  # the menu shows labels
    assert view._repr_html_() == view.html


def test_frames_html_checks_its_inputs():
    with pytest.raises(ValueError, match="one image per grid point"):
        frames_html([PNG], [("N", ["1", "2"])])
    with pytest.raises(ValueError, match="captions"):
        frames_html([PNG, PNG], [("N", ["1", "2"])], captions=["a"])


def test_ipywidgets_is_optional_and_imported_lazily():
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"
        "import torch, gradlab\n"
        "from gradlab.widgets import GradientExplorer\n"
        "ex = GradientExplorer(lambda x: (x ** 2).sum(), torch.ones(3), estimators=['fd_central'])\n"
        "assert ex.figure().axes\n"
        "try:\n    ex.widget\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "lazy"


# --------------------------------------------------------------------------- expectation estimators (Ch. 4-5)
def test_expectation_estimators_are_registered_where_they_apply():
    gaussian, bernoulli = explore.gaussian_problem(dim=4), explore.bernoulli_problem(dim=4)
    for name in ("score", "score_rloo", "pathwise", "measure_valued"):
        assert name in explore.estimators_for(gaussian)
    assert "pathwise" not in explore.estimators_for(bernoulli)  # Bernoulli has no rsample
    assert "score" in explore.estimators_for(bernoulli)


@pytest.mark.parametrize("name, baseline", [("score", None), ("score_rloo", "rloo"), ("pathwise", None)])
def test_gradient_explorer_shows_expectation_grad(name, baseline):
    from gradlab import expectation_grad

    problem = explore.gaussian_problem(dim=4)
    explorer = GradientExplorer(problem, estimators=["score", "score_rloo", "pathwise"])
    explorer.set(estimator=name, num_samples=200)
    est = expectation_grad(problem.f, problem.make_dist, problem.theta, estimator=name.split("_")[0],
                           num_samples=200, baseline=baseline, generator=torch.Generator().manual_seed(0)).mean(0)
    truth = -math.exp(-0.5) * torch.sin(problem.theta)  # d/dθ E[cos x], x ~ N(θ, 1)
    assert readout(explorer, "cosine") == fmt(cosine_similarity(est, truth))


def test_variance_explorer_without_a_knob_has_only_the_samples_axis():
    explorer = VarianceExplorer(explore.bernoulli_problem(dim=3), ["score", "score_rloo"], sample_grid=(10, 100),
                                repeats=8)
    explorer.widget  # noqa: B018
    assert [v for _, v in explorer.controls["axis"].options] == ["num_samples"]
    metrics = explorer.metrics()
    assert metrics["score_rloo_mse"] < metrics["score_mse"]  # the baseline reduces the variance here
    (ax,) = explorer.figure().axes
    assert "N =" not in ax.get_title()  # N is the x axis, not a fixed value
    with pytest.raises(ValueError, match="axis"):
        explorer.figure(axis="knob")


def test_an_estimator_with_a_knob_gets_it_from_the_slider(expectation_problem):
    seen = []

    def make(tau):
        seen.append(tau)
        return GaussianPathwise()

    entry = explore.register_explorer_estimator(explore.expectation_entry(
        make, "tuned (test)", name="test_tuned", knob="tau", knob_range=(0.1, 10.0), knob_default=1.0))
    try:
        explorer = GradientExplorer(expectation_problem, estimators=["test_tuned"])
        explorer.widget  # noqa: B018
        assert explorer.controls["knob"].description == "τ"
        explorer.controls["knob"].value = 2.0
        assert seen[-1] == pytest.approx(2.0)
        with pytest.raises(TypeError, match="knob"):
            explore.expectation_entry("score", knob="tau")
    finally:
        del explore.EXPLORER_METHODS[entry.name]


def test_gradient_explorer_takes_a_model_and_a_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    explorer = GradientExplorer(model, loss_fn=torch.nn.functional.mse_loss, inputs=x, targets=y,
                                estimators=["fd_central"])
    torch.nn.functional.mse_loss(model(x), y).backward()
    backprop = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(explorer.problem.true_grad, backprop)
    assert explorer.metrics(eps=1e-6)["relative_error"] < 1e-8
    with pytest.raises(TypeError, match="loss_fn"):
        GradientExplorer(model)


# --------------------------------------------------------------------------- discrete estimators (Ch. 6)
DISCRETE = ("gumbel_softmax", "straight_through", "rebar", "relax")


def test_discrete_estimators_apply_to_bernoulli_and_one_hot_problems_only():
    bernoulli = explore.bernoulli_problem(dim=3)
    for name in DISCRETE:
        assert name in explore.estimators_for(bernoulli)
        assert name not in explore.estimators_for(explore.gaussian_problem(dim=3))
    theta = torch.zeros(2, 3, dtype=torch.float64)
    onehot = explore.GradientProblem(
        "one-hot", theta, lambda t: torch.softmax(t, -1)[:, 0].sum(), f=lambda y: y[..., 0].sum(-1),
        make_dist=lambda t: torch.distributions.Independent(torch.distributions.OneHotCategorical(logits=t), 1))
    index = explore.GradientProblem("index", theta, onehot.objective, f=lambda k: (k == 0).double().sum(-1),
                                    make_dist=lambda t: torch.distributions.Categorical(logits=t))
    assert set(DISCRETE) <= set(explore.estimators_for(onehot))
    assert not set(DISCRETE) & set(explore.estimators_for(index))  # f cannot take relaxed index samples
    assert "score" in explore.estimators_for(index)


@pytest.mark.parametrize("name, make", [("gumbel_softmax", lambda tau: GumbelSoftmaxEstimator(tau)),
                                        ("rebar", lambda tau: REBAR(eta=1.0, tau=tau))])
def test_tau_slider_shows_the_direct_discrete_estimate(name, make):
    problem = explore.bernoulli_problem(dim=6)
    explorer = GradientExplorer(problem, estimators=["gumbel_softmax", "rebar", "straight_through"])
    explorer.widget  # noqa: B018
    explorer.controls["estimator"].value = name
    knob = explorer.controls["knob"]
    assert knob.description == "τ" and math.isclose(knob.value, 0.5)
    explorer.controls["num_samples"].value = 300
    shown = {}
    for tau in (0.1, 2.0):
        knob.value = tau
        est = make(knob.value).per_sample_grads(problem.f, problem.make_dist, problem.theta, num_samples=300,
                                                 generator=torch.Generator().manual_seed(0)).mean(0)
        truth = exact_expectation_grad(problem.f, problem.make_dist, problem.theta)
        assert readout(explorer, "cosine") == fmt(cosine_similarity(est, truth))
        assert readout(explorer, "relative-error") == fmt(relative_error(est, truth))
        shown[tau] = readout(explorer, "relative-error")
    assert shown[0.1] != shown[2.0]  # the knob changes the estimate
    assert readout(explorer, "evaluations") == ("900" if name == "rebar" else "300")


def test_gumbel_softmax_shrinks_towards_zero_at_high_temperature():
    """At τ = 5 the relaxed sample barely depends on θ: the mean estimate is a fraction of the true gradient."""
    problem = explore.bernoulli_problem(dim=6)
    truth = problem.true_grad
    hot = explore.estimate_once(problem, "gumbel_softmax", num_samples=20000, knob=5.0,
                                generator=torch.Generator().manual_seed(0))
    cold = explore.estimate_once(problem, "gumbel_softmax", num_samples=20000, knob=0.1,
                                 generator=torch.Generator().manual_seed(0))
    assert hot.norm() < 0.5 * truth.norm()
    assert (cold - truth).norm() < (hot - truth).norm()


def test_adapted_relax_is_unbiased_cached_and_cuts_the_variance():
    problem = explore.bernoulli_problem(dim=3)
    state = torch.get_rng_state()
    est = explore.adapted_relax(problem)
    assert torch.equal(torch.get_rng_state(), state)  # its initialisation leaves the global RNG alone
    assert explore.adapted_relax(problem) is est
    g = est.per_sample_grads(problem.f, problem.make_dist, problem.theta, num_samples=20000,
                             generator=torch.Generator().manual_seed(1))
    truth = exact_expectation_grad(problem.f, problem.make_dist, problem.theta)
    assert ((g.mean(0) - truth).abs() < 5 * g.std(0) / math.sqrt(len(g))).all()
    stats = {name: explore.error_stats(problem, name, [(10, None)], repeats=200)["variance"][0]
             for name in ("score", "relax")}
    assert stats["relax"] < 0.5 * stats["score"]
    explorer = GradientExplorer(problem, estimators=["relax"], num_samples=50)
    direct = est.per_sample_grads(problem.f, problem.make_dist, problem.theta, num_samples=50,
                                  generator=torch.Generator().manual_seed(0)).mean(0)
    assert explorer.metrics()["cosine"] == cosine_similarity(direct, truth)
