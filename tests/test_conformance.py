"""The conformance suite of the one estimator protocol, run over the WHOLE registry.

Every key of ``gradlab.ESTIMATORS`` is checked on every problem below that it supports (its
``check`` decides): output shape and dtype following theta, determinism under a generator with
the global RNG untouched, theta untouched, ``surrogate_loss``'s value (the mean cost) and gradient
(the mean per-sample estimate for the same generator state), unbiasedness against exact
enumeration or a Gaussian closed form (estimators with ``unbiased = False`` are skipped there
only), and the same error type and message prefix for the same bad input at every public entry
point. A newly registered estimator is covered without editing this file.

The problems avoid degenerate cases: several parameters, non-diagonal Jacobians of ``make_dist``,
products (``Independent``) of Bernoulli / Categorical / OneHotCategorical / Normal factors,
per-item costs, uneven numbers of samples. ``check_conformance`` and ``unbiasedness_z`` are also run
on deliberately broken estimators, which must fail them (the suite has power).

Statistics: the mean of N float64 per-sample estimates is compared with the truth coordinate by
coordinate, |mean - truth| < 5 standard errors (sample standard deviation / sqrt N): a false alarm
has probability below 1e-5 per coordinate. Power: the same samples scaled by 1.25 (a 25% bias) must
exceed 5 standard errors on some coordinate, checked on the same draw.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from torch import distributions as D

import gradlab
from gradlab.estimator import ESTIMATORS, Estimate, Estimator, UnsupportedDistribution
from gradlab.expectation import exact_expectation_grad, expectation_grad, surrogate_loss

F64 = torch.float64
NAMES = sorted(ESTIMATORS)
UNEVEN = 7
Z_MAX = 5.0
BIAS = 1.25


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# =========================================================================== problems
@dataclass
class Problem:
    name: str
    f: Callable
    make_dist: Callable
    theta: torch.Tensor
    truth: Callable[[], torch.Tensor]  # float64 exact gradient
    value: Callable[[], float]  # float64 exact E[f]
    num_samples: int = 30_001  # enough for the power check of every registered unbiased estimator


A = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.4]], dtype=F64)  # a non-diagonal Jacobian (3 x 2)
W = torch.tensor([1.0, 2.0, -1.5], dtype=F64)


def bern_f(b):
    return (b @ W.to(b) - 0.5) ** 2 + b[:, 0] * b[:, 2]


def bern_make(t):
    return D.Independent(D.Bernoulli(logits=A.to(t) @ t + 0.2), 1)


def exact_value(f, make_dist, theta):
    """E[f] by enumeration: exact_expectation_grad's states, weighted by their probabilities."""
    from gradlab.expectation import _support_states  # noqa: PLC2701 - a test may look inside

    dist = make_dist(theta.detach())
    states = _support_states(dist)
    probs = dist.log_prob(states).reshape(states.shape[0], -1).sum(1).exp()
    return float((probs * f(states).to(F64)).sum())


M = torch.tensor([[1.0, 0.4, -0.2], [0.0, 0.9, 0.5], [-0.6, 0.1, 1.0]], dtype=F64)  # mixes classes
C = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]], dtype=F64)


def onehot_logits(t):
    return t.reshape(2, 3) @ M.to(t)


def onehot_f(x):
    return ((x * C.to(x)).sum((-1, -2)) - 0.3) ** 2 + x[:, 0, 1] * x[:, 1, 2]


def onehot_make(t):
    return D.Independent(D.OneHotCategorical(logits=onehot_logits(t)), 1)


def onehot_as_index(f):
    return lambda idx: f(torch.nn.functional.one_hot(idx, 3).to(F64))


def cat_make(t):
    return D.Independent(D.Categorical(logits=onehot_logits(t)), 1)


def cat_f(idx):
    x = idx.to(F64)
    return (2.0 * x[:, 0] - x[:, 1]) ** 2 + (idx[:, 1] == 2).to(F64)


B = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.3, 0.2]], dtype=F64)
WG = torch.tensor([1.0, 0.5, 2.0], dtype=F64)


def gauss_make(t):
    return D.Independent(D.Normal(A.to(t) @ t, (B.to(t) @ t).exp()), 1)


def gauss_f(x):
    return ((x - 0.2) ** 2 * WG.to(x)).sum(-1)


def gauss_expectation(t):
    mu, sigma = A @ t, (B @ t).exp()
    return (((mu - 0.2) ** 2 + sigma**2) * WG).sum()


def gauss_truth(t):
    leaf = t.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(gauss_expectation(leaf), leaf)
    return g


AI = torch.tensor([[0.8, -0.3], [0.2, 0.6], [-0.5, 0.4], [0.3, 0.3], [0.7, -0.6], [-0.2, -0.9]], dtype=F64)
WI = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.5, -1.0]], dtype=F64)


def items_make(t):
    """Two independent items (batch_shape (2,)), three bits each; f returns one cost per item."""
    return D.Independent(D.Bernoulli(logits=(AI.to(t) @ t).reshape(2, 3)), 1)


def items_f(b):
    return ((b * WI.to(b)).sum(-1) - 0.4) ** 2  # (N, 2)


TH_BERN = torch.tensor([0.3, -0.6], dtype=F64)
TH_ONEHOT = torch.tensor([[0.2, -0.4, 0.9], [0.0, 0.5, -1.0]], dtype=F64)
TH_GAUSS = torch.tensor([0.4, -0.3], dtype=F64)

PROBLEMS = [
    Problem("bernoulli", bern_f, bern_make, TH_BERN,
            lambda: exact_expectation_grad(bern_f, bern_make, TH_BERN),
            lambda: exact_value(bern_f, bern_make, TH_BERN)),
    Problem("onehot", onehot_f, onehot_make, TH_ONEHOT,
            lambda: exact_expectation_grad(onehot_as_index(onehot_f), cat_make, TH_ONEHOT),
            lambda: exact_value(onehot_as_index(onehot_f), cat_make, TH_ONEHOT)),
    Problem("categorical", cat_f, cat_make, TH_ONEHOT,
            lambda: exact_expectation_grad(cat_f, cat_make, TH_ONEHOT),
            lambda: exact_value(cat_f, cat_make, TH_ONEHOT)),
    Problem("gaussian", gauss_f, gauss_make, TH_GAUSS,
            lambda: gauss_truth(TH_GAUSS), lambda: float(gauss_expectation(TH_GAUSS)), num_samples=90_001),
    Problem("per_item", items_f, items_make, TH_BERN,
            lambda: exact_expectation_grad(lambda b: items_f(b).sum(1), items_make, TH_BERN),
            lambda: exact_value(lambda b: items_f(b).sum(1), items_make, TH_BERN)),
]


def supports(estimator: Estimator, problem: Problem) -> bool:
    try:
        estimator.check(problem.make_dist(problem.theta))
    except UnsupportedDistribution:
        return False
    return True


def problems_for(estimator: Estimator):
    return [p for p in PROBLEMS if supports(estimator, p)]


# =========================================================================== the checks, reusable
def rng_states(device: torch.device):
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def check_conformance(estimator: Estimator, problem: Problem, device: str = "cpu") -> None:
    """Every rule of the protocol but unbiasedness, on one problem; raises AssertionError."""
    device = torch.device(device)

    def seeded(seed):
        return torch.Generator(device).manual_seed(seed)

    for dtype in (F64, torch.float32):
        theta = problem.theta.to(device=device, dtype=dtype)
        before = theta.clone()
        state = rng_states(device)
        one = estimator.per_sample_grads(problem.f, problem.make_dist, theta, num_samples=UNEVEN, generator=seeded(1))
        assert all(torch.equal(a, b) for a, b in zip(state, rng_states(device))), "the global RNG state changed"
        two = estimator.per_sample_grads(problem.f, problem.make_dist, theta, num_samples=UNEVEN, generator=seeded(1))
        other = estimator.per_sample_grads(problem.f, problem.make_dist, theta, num_samples=UNEVEN,
                                           generator=seeded(2))
        assert one.shape == (UNEVEN, *theta.shape), f"shape {tuple(one.shape)}, expected {(UNEVEN, *theta.shape)}"
        assert one.dtype == dtype, f"dtype {one.dtype}, expected {dtype}"
        assert one.device == theta.device, f"device {one.device}, expected {theta.device}"
        assert not one.requires_grad
        assert torch.isfinite(one).all()
        assert torch.equal(one, two), "the same generator state gave different estimates"
        assert not torch.equal(one, other), "different generator states gave the same estimates"
        assert torch.equal(theta, before) and theta.grad is None and not theta.requires_grad
        via_call = expectation_grad(problem.f, problem.make_dist, theta, estimator=estimator,
                                    num_samples=UNEVEN, generator=seeded(1))
        assert torch.equal(via_call, one), "expectation_grad differs from per_sample_grads"
    # surrogate_loss: value = mean cost of the draw, gradient = mean of the per-sample estimates
    count = 64
    theta = problem.theta.to(device)
    leaf = theta.clone().requires_grad_(True)
    loss = surrogate_loss(problem.f, problem.make_dist(leaf), estimator=estimator, num_samples=count,
                          generator=seeded(3))
    assert loss.dim() == 0, f"surrogate_loss has shape {tuple(loss.shape)}"
    loss.backward()
    expected = estimator.per_sample_grads(problem.f, problem.make_dist, theta, num_samples=count,
                                          generator=seeded(3)).mean(0)
    torch.testing.assert_close(leaf.grad, expected, msg="surrogate gradient != mean per-sample estimate")
    costs = estimator.theta_estimate(problem.f, problem.make_dist, theta, num_samples=count,
                                     generator=seeded(3)).costs
    costs = costs.sum(1) if costs.dim() == 2 else costs
    torch.testing.assert_close(loss.detach(), costs.mean().to(loss.dtype), msg="surrogate value != mean cost")


def unbiasedness_z(estimator: Estimator, problem: Problem, num_samples: int, seed: int, scale: float = 1.0):
    """max over coordinates of |mean - truth| / standard error, for the estimates times ``scale``."""
    grads = scale * estimator.per_sample_grads(problem.f, problem.make_dist, problem.theta,
                                               num_samples=num_samples, generator=gen(seed)).reshape(num_samples, -1)
    truth = problem.truth().reshape(-1)
    se = grads.std(0) / math.sqrt(num_samples)
    z = (grads.mean(0) - truth).abs() / se.clamp_min(1e-12)
    return float(z.max()), grads


# =========================================================================== over the registry
def registry_cases():
    """(key, problem) for every registered estimator and every problem it supports."""
    return [(name, p.name) for name in sorted(ESTIMATORS) for p in problems_for(ESTIMATORS[name])]


CASES = registry_cases()
PROBLEM = {p.name: p for p in PROBLEMS}


def test_every_registered_estimator_is_an_estimator_and_supports_a_problem():
    for name in NAMES:
        est = ESTIMATORS[name]
        assert isinstance(est, Estimator) and est.name == name
        assert isinstance(est.unbiased, bool) and est.needs_f and est.cost
        assert problems_for(est), f"{name}: no conformance problem applies; add one to PROBLEMS"
    table = gradlab.estimator.properties_table().splitlines()
    assert len(table) == 2 + len(NAMES) and all(f"``{name}``" in "".join(table) for name in NAMES)


@pytest.mark.parametrize("name, problem", CASES)
def test_conformance(name, problem):
    check_conformance(ESTIMATORS[name], PROBLEM[problem])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name, problem", CASES)
def test_conformance_on_cuda(name, problem):
    """Device follows theta: the same rules with theta and the generator on the GPU."""
    est = ESTIMATORS[name]
    if isinstance(est, torch.nn.Module):
        est = copy.deepcopy(est).to("cuda")
    check_conformance(est, PROBLEM[problem], device="cuda")


@pytest.mark.parametrize("name, problem", CASES)
def test_unbiased_against_exact_gradient_with_power(name, problem):
    est, prob = ESTIMATORS[name], PROBLEM[problem]
    if not est.unbiased:
        pytest.skip(f"{name} is biased by design (unbiased = False)")
    z, _ = unbiasedness_z(est, prob, prob.num_samples, seed=11)
    z_biased, _ = unbiasedness_z(est, prob, prob.num_samples, seed=11, scale=BIAS)
    print(f"{name} on {problem}: max z = {z:.2f}; with a {BIAS - 1:.0%} bias: {z_biased:.2f}")
    assert z < Z_MAX
    assert z_biased > Z_MAX, "too few samples to detect a 25% bias: raise SAMPLES for this problem"


@pytest.mark.parametrize("name, problem", [c for c in CASES if ESTIMATORS[c[0]].unbiased])
def test_surrogate_value_estimates_the_expectation(name, problem):
    est, prob = ESTIMATORS[name], PROBLEM[problem]
    count = 4001
    costs = est.theta_estimate(prob.f, prob.make_dist, prob.theta, num_samples=count, generator=gen(5)).costs
    costs = (costs.sum(1) if costs.dim() == 2 else costs).to(F64)
    se = costs.std() / math.sqrt(count)
    value = surrogate_loss(prob.f, prob.make_dist(prob.theta), estimator=name, num_samples=count, generator=gen(5))
    assert abs(float(value) - prob.value()) < Z_MAX * float(se)


# =========================================================================== bad input, every entry point
class NoLogProb(D.Distribution):
    arg_constraints = {}

    def __init__(self, loc):
        self.loc = loc
        super().__init__(validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        return self.loc.expand(sample_shape)


UNSUPPORTED = [
    lambda t: D.Normal(t, 1.0),
    lambda t: D.Bernoulli(logits=t),
    lambda t: D.Uniform(t - 1.0, t + 1.0),
    lambda t: NoLogProb(t),
    lambda t: D.Categorical(logits=t),
]


def unsupported_make_dist(est: Estimator) -> Optional[Callable]:
    for make in UNSUPPORTED:
        try:
            est.check(make(torch.zeros(3, dtype=F64)))
        except UnsupportedDistribution:
            return make
    return None


def grad_entry(kind):
    """Entry points that take (f, make_dist, theta)."""
    def call(est, name, f, make_dist, theta, **kw):
        if kind == "expectation_grad(name)":
            return expectation_grad(f, make_dist, theta, estimator=name, **kw)
        if kind == "expectation_grad(instance)":
            return expectation_grad(f, make_dist, theta, estimator=est, **kw)
        if kind == "Estimator.per_sample_grads":
            return est.per_sample_grads(f, make_dist, theta, **kw)
        return gradlab.expectation_grad(f, make_dist, theta, estimator=name, **kw)
    return call


def loss_entry(kind):
    """Entry points that take (f, dist)."""
    def call(est, name, f, make_dist, theta, **kw):
        dist = make_dist(theta) if callable(make_dist) else make_dist
        if kind == "surrogate_loss(name)":
            return surrogate_loss(f, dist, estimator=name, **kw)
        if kind == "surrogate_loss(instance)":
            return surrogate_loss(f, dist, estimator=est, **kw)
        return est.surrogate_loss(f, dist, **kw)
    return call


GRAD_ENTRIES = ["expectation_grad(name)", "expectation_grad(instance)", "Estimator.per_sample_grads",
                "gradlab.expectation_grad"]
LOSS_ENTRIES = ["surrogate_loss(name)", "surrogate_loss(instance)", "Estimator.surrogate_loss"]
ENTRIES = [(e, grad_entry(e)) for e in GRAD_ENTRIES] + [(e, loss_entry(e)) for e in LOSS_ENTRIES]


def bad_inputs(est: Estimator, problem: Problem, takes_theta: bool):
    """(label, kwargs overrides, error type, message prefix)."""
    cases = [
        ("f not callable", dict(f=3.0), TypeError, "f must be callable"),
        ("num_samples = 0", dict(num_samples=0), ValueError, "num_samples must be >= 1"),
        ("num_samples float", dict(num_samples=2.0), TypeError, "num_samples must be an int >= 1"),
        ("num_samples bool", dict(num_samples=True), TypeError, "num_samples must be an int >= 1"),
        ("generator", dict(generator=0), TypeError, "generator must be a torch.Generator or None"),
        ("f wrong shape", dict(f=lambda x: torch.zeros(x.shape[0] + 1, dtype=F64)), ValueError,
         "f must map a batch of"),
        ("f not finite", dict(f=lambda x: problem.f(x) / 0.0), ValueError, "f returned a non-finite value"),
    ]
    if not est.uses_baseline:
        cases.append(("baseline", dict(baseline="rloo"), ValueError, "baseline is not used by estimator="))
    unsupported = unsupported_make_dist(est)
    if unsupported is not None:
        cases.append(("unsupported distribution", dict(make_dist=unsupported, theta=torch.zeros(3, dtype=F64)),
                      UnsupportedDistribution, f"estimator={est.name!r} needs "))
    if takes_theta:
        cases += [
            ("make_dist not callable", dict(make_dist=None), TypeError, "make_dist must be callable"),
            ("make_dist returns a tensor", dict(make_dist=lambda t: t), TypeError,
             "make_dist(theta) must return a torch.distributions.Distribution"),
            ("theta a list", dict(theta=[0.0, 1.0]), TypeError, "theta must be a torch.Tensor"),
            ("theta integer", dict(theta=torch.zeros(2, dtype=torch.long)), TypeError,
             "theta must be a floating-point tensor"),
            ("theta empty", dict(theta=torch.zeros(0, dtype=F64)), ValueError, "theta must not be empty"),
        ]
    else:
        cases.append(("dist a tensor", dict(make_dist=torch.zeros(2)), TypeError,
                      "dist must be a torch.distributions.Distribution"))
    return cases


def error_cases():
    return [
        (name, entry, label)
        for name in sorted(ESTIMATORS)
        for entry, _ in ENTRIES
        for label, *_ in bad_inputs(ESTIMATORS[name], problems_for(ESTIMATORS[name])[0], entry in GRAD_ENTRIES)
    ]


ERROR_CASES = error_cases()


@pytest.mark.parametrize("name, entry, label", ERROR_CASES)
def test_bad_input_same_error_everywhere(name, entry, label):
    est = ESTIMATORS[name]
    problem = problems_for(est)[0]
    call = dict(ENTRIES)[entry]
    (_, override, error, prefix), = [c for c in bad_inputs(est, problem, entry in GRAD_ENTRIES) if c[0] == label]
    kwargs = dict(f=problem.f, make_dist=problem.make_dist, theta=problem.theta, num_samples=4, generator=None)
    kwargs.update(override)
    f, make_dist, theta = kwargs.pop("f"), kwargs.pop("make_dist"), kwargs.pop("theta")
    with pytest.raises(error) as info:
        call(est, name, f, make_dist, theta, **kwargs)
    assert type(info.value) is error, f"{type(info.value).__name__} instead of {error.__name__}"
    assert str(info.value).startswith(prefix), f"{str(info.value)!r} does not start with {prefix!r}"


# =========================================================================== the suite has power
class Wrapped(Estimator):
    """Delegates to a registered estimator (to break one rule at a time below)."""

    def __init__(self, inner: Estimator):
        self.inner = inner
        self.name = inner.name
        self.uses_baseline = inner.uses_baseline
        self.unbiased = inner.unbiased

    def check(self, dist):
        self.inner.check(dist)

    def params(self, dist):
        return self.inner.params(dist)

    def param_grads(self, f, dist, lam, **kw):
        return self.inner.param_grads(f, dist, lam, **kw)


class Biased(Wrapped):
    def param_grads(self, f, dist, lam, **kw):
        est = self.inner.param_grads(f, dist, lam, **kw)
        return Estimate(est.costs, BIAS * est.grads)


class GlobalNoise(Wrapped):
    """Adds noise drawn from the global RNG: not reproducible under a generator."""

    def param_grads(self, f, dist, lam, **kw):
        est = self.inner.param_grads(f, dist, lam, **kw)
        return Estimate(est.costs, est.grads + 1e-3 * torch.randn(est.grads.shape, dtype=est.grads.dtype))


class WrongDtype(Wrapped):
    """Returns float32 estimates whatever theta's dtype (here lambda is theta: no chain rule casts it)."""

    def param_grads(self, f, dist, lam, **kw):
        est = self.inner.param_grads(f, dist, lam, **kw)
        return Estimate(est.costs, est.grads.float())


class ZeroValueSurrogate(Wrapped):
    """A surrogate with the right gradient but value 0 instead of the mean cost."""

    def surrogate(self, f, dist, **kw):
        loss = Estimator.surrogate(self, f, dist, **kw)
        return loss - loss.detach()


class WrongShapeGrads(Wrapped):
    def param_grads(self, f, dist, lam, **kw):
        est = self.inner.param_grads(f, dist, lam, **kw)
        return Estimate(est.costs, est.grads[:, :-1])


def logits_problem():
    """make_dist(theta) = Bernoulli(logits=theta): lambda is theta itself for the discrete estimators."""
    th = torch.tensor([0.4, -0.2, 0.7], dtype=F64)
    make = lambda t: D.Bernoulli(logits=t)  # noqa: E731
    return Problem("logits", bern_f, make, th, lambda: exact_expectation_grad(bern_f, make, th),
                   lambda: exact_value(bern_f, make, th))


def test_a_conforming_wrapper_passes():
    check_conformance(Wrapped(ESTIMATORS["score"]), PROBLEM["bernoulli"])
    check_conformance(Wrapped(ESTIMATORS["rebar"]), logits_problem())


@pytest.mark.parametrize("broken", [GlobalNoise, WrongDtype, ZeroValueSurrogate])
def test_an_estimator_breaking_a_rule_fails_the_suite(broken):
    with pytest.raises(AssertionError):
        check_conformance(broken(ESTIMATORS["rebar"]), logits_problem())


def test_a_hook_returning_the_wrong_shape_is_refused_by_the_base():
    with pytest.raises(ValueError, match="expected shape"):
        check_conformance(WrongShapeGrads(ESTIMATORS["score"]), PROBLEM["bernoulli"])


@pytest.mark.parametrize("name", ["score", "rebar"])
def test_a_biased_copy_fails_the_unbiasedness_check(name):
    z, _ = unbiasedness_z(Biased(ESTIMATORS[name]), PROBLEM["bernoulli"], PROBLEM["bernoulli"].num_samples, seed=11)
    assert z > Z_MAX


def test_a_new_estimator_is_covered_by_registering_it(monkeypatch):
    """The parametrizations are collected from ESTIMATORS: a registered subclass is in every one."""
    wrapped = Wrapped(ESTIMATORS["score"])
    wrapped.name = "wrapped_score"
    monkeypatch.setitem(ESTIMATORS, "wrapped_score", wrapped)
    assert ("wrapped_score", "bernoulli") in registry_cases()
    assert any(case[0] == "wrapped_score" for case in error_cases())


# =========================================================================== the chain rule's two paths
@pytest.mark.parametrize("count", [1, 2, 5, 6, 7, 40])
@pytest.mark.parametrize("make, theta", [(gauss_make, TH_GAUSS), (onehot_make, TH_ONEHOT), (items_make, TH_BERN)])
def test_chain_rule_equals_the_jacobian_product_on_both_paths(count, make, theta):
    """N < P uses N batched vector-Jacobian products, N >= P the Jacobian: both equal g J (float64)."""
    from gradlab.distributions import distribution_params, parameter_jacobian
    from gradlab.estimator import chain_rule

    leaf = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        lam = distribution_params(make(leaf))
    size = sum(v.numel() for v in lam.values())
    g = torch.randn(count, size, generator=gen(count), dtype=F64)
    expected = g @ parameter_jacobian(make, theta)
    torch.testing.assert_close(chain_rule(lam, leaf, g), expected)
