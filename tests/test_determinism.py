"""Determinism and isolation of every public name of gradlab that draws random numbers.

For each name that takes ``generator=`` or ``seed=`` (found by introspection of ``gradlab`` and its
modules' ``__all__``; :data:`EXEMPT` lists the few that take one without drawing): the same
generator state or seed gives the same numbers, a different one gives different numbers, and
neither torch's nor numpy's global random state moves.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
import torch.distributions as D

import gradlab
from gradlab import arm, discrete, distributions, es, explore, labcheck_reference, measure_valued, qmc, relax, rng
from gradlab import explore_graph, scg_nodes, score, weak_derivatives
from gradlab.data import load_binarized_digits
from gradlab.envs import CartPole

LAZY = {"widgets", "widgets_smoothing", "widgets_graph", "frames", "dv_plots"}  # notebook-only modules (ipywidgets, plotting)

# Takes a generator or seed argument but draws nothing itself (validators, a device rule).
EXEMPT = {
    "check_generator": "validates its argument, draws nothing",
    "check_seed": "validates its argument, draws nothing",
    "draw_device": "chooses a device, draws nothing",
    # The explorers are widgets over gradient_view / error_stats / es_slope, which are covered below.
    "GradientExplorer": "widget over explore.gradient_view (covered)",
    "VarianceExplorer": "widget over explore.error_stats (covered)",
    "SmoothingExplorer": "widget over explore.es_slope (covered)",
    "GraphExplorer": "widget over explore_graph.graph_spread (covered)",
}


def G(key: int) -> torch.Generator:
    return torch.Generator().manual_seed(key)


def _quad(x):
    return (x**2).sum(-1) + x[..., 0]


def _model():
    with torch.random.fork_rng(devices=[]):  # the harness's model initialisation leaves the global state alone
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 2))


X3 = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
INPUTS = torch.linspace(-1, 1, 15).reshape(5, 3)
TARGETS = torch.tensor([0, 1, 1, 0, 1])
LOGITS = torch.tensor([[0.2, -0.4, 0.1], [0.5, 0.0, -0.3]], dtype=torch.float64)
NORMAL = lambda t: D.Independent(D.Normal(t, 0.5 + t.abs()), 1)  # noqa: E731


def _mse(out, y):
    return torch.nn.functional.cross_entropy(out, y)


def _es_step(k):
    model = _model()
    loss = gradlab.ES_step(model, _mse, INPUTS, TARGETS, lr=0.1, sigma=0.1, N=6, generator=G(k))
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()] + [torch.tensor([loss])])


def _lab_es_step(k):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    labcheck_reference.es_step(model, _mse, INPUTS, TARGETS, opt, sigma=0.1, num_samples=6, generator=G(k))
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _blackbox(k):
    est = gradlab.BlackboxGradientEstimator(lambda x: (x**2).sum(-1), generator=G(k))
    return est.estimate(X3.clone(), 5, 0.1)


def _zero_order(k):
    x = X3.clone().requires_grad_(True)
    value = gradlab.zero_order(num_samples=5, sigma=0.1, generator=G(k))(lambda t: (t**2).sum() + t[0])(x)
    (grad,) = torch.autograd.grad(value, x)
    return grad


def _surrogate_loss(k):
    theta = X3.clone().requires_grad_(True)
    loss = gradlab.surrogate_loss(lambda x: (x**2).sum(-1), NORMAL(theta), estimator="score", num_samples=5,
                                  generator=G(k))
    (grad,) = torch.autograd.grad(loss, theta)
    return torch.cat([loss.detach().reshape(1), grad])


def _graph(k):
    graph = gradlab.Graph(7, generator=G(k))
    return graph.sample("x", D.Normal(torch.zeros(7), 1.0))


def _scg_model(g):
    x = g.sample("x", D.Normal(torch.full((g.num_samples,), 0.3), 1.0))
    b = g.sample("b", D.Bernoulli(logits=x), parents=["x"])
    g.cost("c", (b - 0.5 * x) ** 2, parents=["x", "b"])


def _scg_surrogate(k):
    loss, graph = gradlab.scg_surrogate(_scg_model, num_samples=7, generator=G(k))
    return torch.cat([loss.reshape(1).detach(), graph.values["x"]])


def _log_joint(z):
    return -0.5 * ((z - 1.0) ** 2).sum(1)


def _dv_trainer(k):
    Z, Z_ref, _ = gradlab.correlated_gaussians(40, 0.5, seed=3, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).double()
    gradlab.DVTrainer(Z, Z_ref, net, 2, seed=k, lr=1e-2, holdout=0.25).step(2)
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _estimate_mi(k):
    Z, Z_ref, _ = gradlab.correlated_gaussians(32, 0.5, seed=3)
    Zt, Zt_ref, _ = gradlab.correlated_gaussians(16, 0.5, seed=4)
    return torch.as_tensor(labcheck_reference.estimate_mi(Z, Z_ref, Zt, Zt_ref, 1, seed=k)[:2], dtype=torch.float64)


def _train(k):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 33).reshape(11, 3)
    y = (torch.arange(11) % 2)
    gradlab.train(model, _mse, opt, x, y, num_epochs=1, batch_size=4, seed=k)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _policy_env():
    return CartPole(horizon=8)


def _rollout(k):
    env = _policy_env()
    env = gradlab.ChainMDP(num_states=3, horizon=4, seed=1)
    logits = torch.tensor([[0.3, -0.2], [0.0, 0.4], [-0.5, 0.1]])
    batch = gradlab.rollout(env, lambda s: logits[s], 9, generator=G(k))
    return torch.cat([batch.actions.reshape(-1).double(), batch.rewards.reshape(-1).double()])


def _train_policy(k):
    env = _policy_env()
    policy = gradlab.LinearPolicy(4, env.num_actions, seed=0)
    out = gradlab.train_policy(env, policy, method="reward_to_go", num_steps=2, num_episodes=5, seed=k)
    return torch.cat([out["returns"].reshape(-1).double(), policy.weight.detach().reshape(-1).double()])


def _chain_mdp(k):
    env = gradlab.ChainMDP(num_states=3, horizon=4, seed=k)
    return torch.cat([v.reshape(-1).double() for v in vars(env).values() if isinstance(v, torch.Tensor)])


def _weak(k):
    params = {"loc": torch.tensor([0.1, 0.2]), "scale": torch.tensor([1.0, 2.0])}
    const, states = weak_derivatives.weak_derivative(D.Normal, "scale", params, torch.zeros(4, 2), G(k))
    return states


def _problem(name):
    return lambda k: getattr(explore, name)(dim=3, seed=k).theta


SMALL_PROBLEM = explore.gaussian_problem(dim=3, seed=0)
PATHWISE = gradlab.ESTIMATORS["pathwise"]

# name -> (key -> tensor); each call gets its own generator G(key) or seed=key
CASES = {
    "forward_grad": lambda k: gradlab.forward_grad(_quad, X3, 4, generator=G(k)),
    "es_grad": lambda k: gradlab.es_grad(_quad, X3, sigma=0.1, num_samples=5, generator=G(k)),
    "es_grad_model": lambda k: gradlab.es_grad_model(_model(), _mse, INPUTS, TARGETS, sigma=0.1, num_samples=5,
                                                     generator=G(k)),
    "zero_order": _zero_order,
    "NoiseTable": lambda k: gradlab.NoiseTable(1000, seed=k).noise[:50],
    "ES_grad": lambda k: gradlab.ES_grad(_model(), _mse, INPUTS, TARGETS, sigma=0.1, N=6, generator=G(k)),
    "ES_step": _es_step,
    "BlackboxGradientEstimator": _blackbox,
    "expectation_grad": lambda k: gradlab.expectation_grad(lambda x: (x**2).sum(-1), NORMAL, X3, estimator="score",
                                                           num_samples=5, generator=G(k)),
    "surrogate_loss": _surrogate_loss,
    "gumbel_max": lambda k: gradlab.gumbel_max(LOGITS, num_samples=6, generator=G(k)).double(),
    "gumbel_softmax": lambda k: gradlab.gumbel_softmax(LOGITS, 0.5, generator=G(k)),
    "straight_through": lambda k: gradlab.straight_through(LOGITS, generator=G(k)),
    "gumbel_sinkhorn": lambda k: gradlab.gumbel_sinkhorn(torch.zeros(4, 4), 0.5, num_samples=3, generator=G(k)),
    "random_permutations": lambda k: gradlab.random_permutations(5, 4, generator=G(k)),
    "DVTrainer": _dv_trainer,
    "correlated_gaussians": lambda k: torch.cat(gradlab.correlated_gaussians(10, 0.5, dim=2, seed=k)[:2]),
    "product_of_marginals": lambda k: gradlab.product_of_marginals(torch.arange(24.0).reshape(6, 4), 2,
                                                                   generator=G(k)),
    "Graph": _graph,
    "scg_surrogate": _scg_surrogate,
    "dice_objective": lambda k: gradlab.dice_objective(_scg_model, num_samples=7, generator=G(k)).reshape(1),
    "elbo": lambda k: gradlab.elbo(_log_joint, torch.zeros(3), torch.zeros(3), num_samples=5, generator=G(k)),
    "elbo_grad": lambda k: gradlab.elbo_grad(_log_joint, torch.zeros(3), torch.zeros(3), estimator="score",
                                             num_samples=5, generator=G(k)),
    "fit_bbvi": lambda k: gradlab.fit_bbvi(_log_joint, 2, estimator="reparam", num_steps=3, num_samples=4,
                                           seed=k, num_eval=8)["mu"],
    "ChainMDP": _chain_mdp,
    "rollout": _rollout,
    "LinearPolicy": lambda k: gradlab.LinearPolicy(3, 2, seed=k).weight.detach(),
    "train_policy": _train_policy,
    "load_digits_split": lambda k: gradlab.load_digits_split(seed=k)[0][:5],
    "load_binarized_digits": lambda k: load_binarized_digits(seed=k)[0][:5],
    "train": _train,
    "antithetic_pair": lambda k: arm.antithetic_pair(LOGITS, 4, G(k))[0],
    "arm_logit_grads": lambda k: arm.arm_logit_grads(lambda b: b.sum((-1, -2)), LOGITS, 6, generator=G(k),
                                                     evaluate=lambda f, x: f(x))[1],
    "disarm_logit_grads": lambda k: arm.disarm_logit_grads(lambda b: b.sum((-1, -2)), LOGITS, 16, generator=G(k),
                                                           evaluate=lambda f, x: f(x))[0],
    "uniform": lambda k: discrete.uniform((5,), like=X3, generator=G(k)),
    "sample_gumbel": lambda k: discrete.sample_gumbel((5,), like=X3, generator=G(k)),
    "perturb": lambda k: discrete.perturb(LOGITS, "categorical", G(k)),
    "sample_z_b_ztilde": lambda k: torch.cat([t.reshape(-1) for t in discrete.sample_z_b_ztilde(
        "bernoulli", LOGITS.expand(3, 2, 3), G(k))]),
    "binary_concrete": lambda k: discrete.binary_concrete(LOGITS, 0.5, generator=G(k)),
    "draw": lambda k: distributions.draw(D.Gamma(torch.tensor([1.5, 2.0]), 1.0), (4,), generator=G(k)),
    "sample_noise": lambda k: es.sample_noise((4, 3), generator=G(k)),
    "estimate_once": lambda k: explore.estimate_once(SMALL_PROBLEM, "score", num_samples=5, generator=G(k)),
    "gradient_view": lambda k: torch.as_tensor(explore.gradient_view(SMALL_PROBLEM, "score", num_samples=5,
                                                                     seed=k).estimate),
    "error_stats": lambda k: torch.as_tensor(explore.error_stats(SMALL_PROBLEM, "score", [(5, None)], repeats=3,
                                                                 seed=k)["mse"], dtype=torch.float64),
    "adapted_relax": lambda k: torch.cat([p.detach().reshape(-1) for p in explore.adapted_relax(
        explore.bernoulli_problem(dim=2, seed=0), num_steps=2, num_samples=4, seed=k).parameters()]),
    "es_slope": lambda k: torch.tensor(explore.es_slope(lambda x: x**3, 0.5, sigma=0.1, num_samples=6, seed=k)),
    "digits_mlp_problem": lambda k: explore.digits_mlp_problem(seed=k).theta,
    "quadratic_problem": lambda k: explore.quadratic_problem(dim=3, seed=k).objective(torch.zeros(3,
                                                                                                  dtype=torch.float64)),
    "wiggly_problem": _problem("wiggly_problem"),
    "gaussian_problem": _problem("gaussian_problem"),
    "bernoulli_problem": _problem("bernoulli_problem"),
    "es_grad_model@labcheck_reference": lambda k: labcheck_reference.es_grad_model(
        _model(), _mse, INPUTS, TARGETS, sigma=0.1, num_samples=6, generator=G(k)),
    "es_step": _lab_es_step,
    "estimate_mi": _estimate_mi,
    "reinforce_loss": lambda k: labcheck_reference.reinforce_loss(
        torch.zeros(5, 3, requires_grad=True), torch.tensor([0, 1, 2, 1, 0]), num_samples=4,
        generator=G(k)).reshape(1),
    "relax_grad_samples": lambda k: labcheck_reference.relax_grad_samples(
        lambda b: (b - 0.3).pow(2).sum(-1), torch.tensor([0.2, -0.1]), lambda z: z.sum(-1), num_samples=4,
        generator=G(k)),
    "st_bernoulli": lambda k: labcheck_reference.st_bernoulli(torch.full((8,), 0.4), G(k)),
    "reinforce_grad_samples": lambda k: labcheck_reference.reinforce_grad_samples(
        lambda b: (b - 0.3).pow(2).sum(-1), torch.tensor([0.2, -0.1]), num_samples=4, generator=G(k)),
    "equal_cost_variance_ratio": lambda k: torch.tensor([labcheck_reference.equal_cost_variance_ratio(
        lambda b: (b - 0.3).pow(2).sum(-1), torch.tensor([0.2, -0.1]), 1.5, 0.5, num_evaluations=13,
        generator=G(k))]),
    "weibull": lambda k: measure_valued.weibull((5,), X3, G(k)),
    "double_sided_maxwell": lambda k: measure_valued.double_sided_maxwell((5,), X3, G(k)),
    "sobol_normal": lambda k: qmc.sobol_normal(4, torch.Size([3]), like=X3, generator=G(k)),
    "CoordinateSurrogate": lambda k: torch.cat([p.detach().reshape(-1) for p in
                                                relax.CoordinateSurrogate(4, seed=k).parameters()]),
    "randn": lambda k: rng.randn((5,), generator=G(k)),
    "rand": lambda k: rng.rand((5,), generator=G(k)),
    "randint": lambda k: rng.randint(0, 1000, (5,), generator=G(k)),
    "randperm": lambda k: rng.randperm(9, generator=G(k)),
    "normal_": lambda k: rng.normal_(torch.empty(5), generator=G(k)),
    "score_param_grads": lambda k: score.score_param_grads(lambda x: (x**2).sum(-1), NORMAL(X3), num_samples=5,
                                                           generator=G(k)).grads,
    "weak_derivative": _weak,
    "graph_spread": lambda k: explore_graph.graph_spread(
        explore_graph.two_node_graph_problem(), {"x": "measure_valued", "y": "concrete"}, num_samples=5, repeats=2,
        seed=k).estimates,
    "draw_relaxed": lambda k: scg_nodes.draw_relaxed("concrete", D.Bernoulli(logits=X3), G(k))[0],
    "measure_valued_term": lambda k: scg_nodes.measure_valued_term(
        "x", D.Normal(X3.clone().requires_grad_(True), 1.0), X3, lambda node, states: torch.stack(states) ** 2,
        G(k)).detach(),
}


def drawing_names() -> set:
    """Public names (``__all__`` of gradlab and its modules) with a ``generator`` or ``seed`` parameter."""
    found, seen = set(), set()
    modules = [gradlab] + [importlib.import_module(f"gradlab.{m.name}") for m in pkgutil.walk_packages(
        gradlab.__path__) if m.name.split(".")[-1] not in LAZY]
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if obj is None or id(obj) in seen or not callable(obj):
                continue
            seen.add(id(obj))
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            if "generator" in params or "seed" in params:
                key = name if name not in found else f"{name}@{module.__name__.split('.')[-1]}"
                found.add(key)
    return found


def test_every_public_drawing_name_has_a_case():
    missing = {n for n in drawing_names() - set(CASES) if n.split("@")[0] not in EXEMPT}
    assert not missing, f"public names taking generator=/seed= without a determinism case: {sorted(missing)}"


def _flat(value) -> torch.Tensor:
    if isinstance(value, (tuple, list)):
        return torch.cat([_flat(v) for v in value])
    return torch.as_tensor(value).detach().reshape(-1).double()


SLOW = {"DVTrainer", "digits_mlp_problem"}  # ~15 s each on 2 CPU cores (a critic's epochs; the digits data)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)])
def test_same_key_same_numbers_other_key_other_numbers_global_rng_untouched(name):
    case = CASES[name]
    case(1)  # warm up lazy imports and caches, which may legitimately touch nothing but themselves
    torch.manual_seed(12345)
    np.random.seed(12345)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = _flat(case(1))
    after_torch, after_numpy = torch.get_rng_state(), np.random.get_state()
    again, other = _flat(case(1)), _flat(case(2))
    print(name, "first:", first[:6], "other key:", other[:6])
    assert torch.equal(first, again), f"{name}: the same generator state / seed gave other numbers"
    assert first.shape != other.shape or not torch.equal(first, other), f"{name}: a different key gave the same numbers"
    assert torch.equal(torch_state, after_torch), f"{name}: torch's global RNG state moved"
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
               for a, b in zip(numpy_state, after_numpy)), f"{name}: numpy's global RNG state moved"

