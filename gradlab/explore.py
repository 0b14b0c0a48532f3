r"""The computations behind gradlab's explorers, as plain functions (no widgets, no plotting).

An *explorer estimator* is one entry of the registry :data:`ESTIMATORS`: a name, a label,
the knob it is tuned by (``"eps"`` for finite differences, ``"sigma"`` for evolution
strategies, ``None`` when it has none) and a function

``estimate(problem, *, num_samples, knob, generator) -> Tensor`` shaped like ``problem.theta``.

The problems (:class:`GradientProblem` and the reference problems) live in
:mod:`gradlab.problems` and are re-exported here. Point estimators (finite differences,
forward gradients, ES) apply to every problem; expectation estimators (registered through
:func:`expectation_entry`, one line each) to expectation problems, the discrete ones of
Chapter 6 to Bernoulli or one-hot categorical problems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from .compare import cosine_similarity, relative_error
from .es import es_grad
from . import problems
from .finite_diff import fd_grad, forward_grad
from .problems import (
    GradientProblem,
    bernoulli_problem,
    digits_mlp_problem,
    gaussian_problem,
    model_problem,
    quadratic_problem,
    wiggly_problem,
)
from .relax import REBAR, RELAX, GumbelSoftmaxEstimator, discrete_logits

__all__ = [
    "ExplorerEstimator",
    "ESTIMATORS",
    "register_explorer_estimator",
    "expectation_entry",
    "estimators_for",
    "GradientView",
    "estimate_once",
    "gradient_view",
    "error_stats",
    "adapted_relax",
    "smoothed",
    "es_slope",
    "log_grid",
    "SMOOTHING_FUNCTIONS",
] + problems.__all__  # re-exported


# =========================================================================== registry
@dataclass(frozen=True)
class ExplorerEstimator:
    """One choice in an explorer's estimator menu."""

    name: str
    label: str
    estimate: Callable[..., torch.Tensor]
    knob: Optional[str] = None  # "eps", "sigma", "tau" or None
    knob_range: Tuple[float, float] = (1e-3, 1.0)  # log-scale slider limits
    knob_default: Optional[float] = None
    uses_samples: bool = True
    kind: str = "point"  # "point" (needs objective) or "expectation" (needs f and make_dist)
    evaluations: Optional[Callable[[int, int], int]] = None  # (dim, num_samples) -> evaluations of f
    requires_rsample: bool = False  # pathwise: the distribution must be reparameterizable
    requires_relaxation: bool = False  # Chapter 6: a Bernoulli or one-hot categorical, f defined on relaxed samples

    def applies_to(self, problem: GradientProblem) -> bool:
        if self.kind == "point":
            return True
        if not problem.is_expectation:
            return False
        dist = problem.make_dist(problem.theta)
        if self.requires_relaxation:
            try:
                return discrete_logits(dist)[0] in ("bernoulli", "onehot")
            except (TypeError, ValueError):  # ValueError: gradlab.estimator.UnsupportedDistribution
                return False
        return not self.requires_rsample or dist.has_rsample


ESTIMATORS: Dict[str, ExplorerEstimator] = {}


def register_explorer_estimator(entry: ExplorerEstimator) -> ExplorerEstimator:
    """Add ``entry`` to :data:`ESTIMATORS` (replacing one of the same name) and return it."""
    if not isinstance(entry, ExplorerEstimator):
        raise TypeError(f"entry must be an ExplorerEstimator, got {type(entry).__name__}")
    ESTIMATORS[entry.name] = entry
    return entry


def _fd(scheme: str):
    def estimate(problem, *, num_samples, knob, generator):
        return fd_grad(problem.objective, problem.theta, eps=knob, scheme=scheme, vectorized=True)
    return estimate


def _es(method: str):
    def estimate(problem, *, num_samples, knob, generator):
        return es_grad(problem.objective, problem.theta, sigma=knob, num_samples=num_samples,
                       method=method, generator=generator, vectorized=True)
    return estimate


def _forward_gradient(problem, *, num_samples, knob, generator):
    return forward_grad(problem.objective, problem.theta, num_samples, generator=generator, vectorized=True)


for _scheme, _cost in (("forward", lambda d, n: d + 1), ("central", lambda d, n: 2 * d)):
    register_explorer_estimator(ExplorerEstimator(
        f"fd_{_scheme}", f"finite differences ({_scheme})", _fd(_scheme), knob="eps",
        knob_range=(1e-7, 1e-1), knob_default=1e-3, uses_samples=False, evaluations=_cost))
register_explorer_estimator(ExplorerEstimator(
    "forward_grad", "forward gradient (JVPs)", _forward_gradient, evaluations=lambda d, n: n))
for _method, _cost in (("naive", lambda d, n: n), ("forward", lambda d, n: n + 1),
                       ("antithetic", lambda d, n: 2 * n)):
    register_explorer_estimator(ExplorerEstimator(
        f"es_{_method}", f"ES ({_method})", _es(_method), knob="sigma", knob_range=(1e-3, 1.0),
        knob_default=0.01, evaluations=_cost))


def expectation_entry(estimator: Any, label: Optional[str] = None, *, name: Optional[str] = None,
                      baseline: Any = None, **options: Any) -> ExplorerEstimator:
    r"""An explorer entry for an estimator of the one estimator signature.

    ``estimator`` is a name registered in :data:`gradlab.expectation.ESTIMATORS` (then
    :func:`gradlab.expectation_grad` is called), an object with ``per_sample_grads``, or,
    for an estimator tuned by a knob (``knob="tau"`` for a relaxation's temperature), a
    function ``knob value -> estimator object``. The estimate is the mean of the per-sample
    gradients. ``baseline`` is passed on (score function); ``options`` go to
    :class:`ExplorerEstimator` (``knob``, ``knob_range``, ``knob_default``, ``evaluations``, ...).

    The discrete estimators of Chapter 6 plug in this way, e.g. (below)
    ``expectation_entry(GumbelSoftmaxEstimator, "Gumbel-softmax (relaxed)", name="gumbel_softmax",
    knob="tau", knob_range=(0.05, 5.0), knob_default=0.5, requires_relaxation=True)``.
    """
    from .expectation import expectation_grad

    tuned = options.get("knob") is not None
    if tuned and not callable(estimator):
        raise TypeError("with a knob, estimator must be a function knob value -> estimator object")
    if name is None:
        name = estimator if isinstance(estimator, str) else getattr(estimator, "name", type(estimator).__name__)

    def estimate(problem, *, num_samples, knob, generator):
        chosen = estimator(knob) if tuned else estimator
        return expectation_grad(problem.f, problem.make_dist, problem.theta, estimator=chosen,
                                num_samples=num_samples, baseline=baseline, generator=generator).mean(0)

    options.setdefault("evaluations", lambda d, n: n)
    return ExplorerEstimator(name, label or name, estimate, kind="expectation", **options)


# The estimators of Chapters 4 and 5, one entry each (gradlab.expectation's one signature).
register_explorer_estimator(expectation_entry("score", "score function (REINFORCE)"))
register_explorer_estimator(expectation_entry("score", "score function + leave-one-out baseline",
                                              name="score_rloo", baseline="rloo"))
register_explorer_estimator(expectation_entry("pathwise", "pathwise (reparameterization)",
                                              requires_rsample=True))
register_explorer_estimator(expectation_entry("measure_valued", "measure-valued",
                                              evaluations=lambda d, n: 2 * d * n))


def adapted_relax(problem: GradientProblem, *, num_steps: int = 150, num_samples: int = 8, lr: float = 0.03,
                  seed: int = 0) -> Any:
    r"""A :class:`~gradlab.relax.RELAX` whose $\eta$, $\tau$ and surrogate $r_\phi$ were adapted at ``problem.theta``.

    ``num_steps`` Adam steps on $\frac1N\sum_i\|\hat g_i\|^2$ (its gradient is that of the variance,
    since $\hat g$ is unbiased for every parameter value), with noise and initialisation from
    ``seed``; made once per problem (``problem.cache``), then fixed. The estimator stays unbiased.
    """
    if "relax" not in problem.cache:
        with torch.random.fork_rng(devices=[]):  # a reproducible r_phi that leaves the global RNG alone
            torch.manual_seed(seed)
            est = RELAX(num_inputs=problem.theta.numel()).to(problem.theta.device, problem.theta.dtype)
        optimizer = torch.optim.Adam(est.parameters(), lr=lr)
        generator = torch.Generator(problem.theta.device).manual_seed(seed)
        for _ in range(num_steps):
            est.adapt_step(optimizer, problem.f, problem.make_dist, problem.theta, num_samples=num_samples,
                           generator=generator)
        problem.cache["relax"] = est
    return problem.cache["relax"]


def _relax(problem, *, num_samples, knob, generator):
    return adapted_relax(problem).per_sample_grads(problem.f, problem.make_dist, problem.theta,
                                                   num_samples=num_samples, generator=generator).mean(0)


# The discrete estimators of Chapter 6 (gradlab.relax), on Bernoulli or one-hot categorical problems.
_TAU = dict(knob="tau", knob_range=(0.05, 5.0), knob_default=0.5, requires_relaxation=True)
register_explorer_estimator(expectation_entry(GumbelSoftmaxEstimator,
                                              "Gumbel-softmax (relaxed)", name="gumbel_softmax", **_TAU))
register_explorer_estimator(expectation_entry("st", "straight-through", name="straight_through",
                                              requires_relaxation=True))
register_explorer_estimator(expectation_entry(lambda tau: REBAR(eta=1.0, tau=tau), "REBAR (η = 1)", name="rebar",
                                              evaluations=lambda d, n: 3 * n, **_TAU))
register_explorer_estimator(ExplorerEstimator("relax", "RELAX (adapted at θ)", _relax, kind="expectation",
                                              evaluations=lambda d, n: 3 * n, requires_relaxation=True))


def estimators_for(problem: GradientProblem) -> Dict[str, ExplorerEstimator]:
    """The registered estimators that apply to ``problem``, in registration order."""
    return {name: entry for name, entry in ESTIMATORS.items() if entry.applies_to(problem)}


def _entry(estimator: Any) -> ExplorerEstimator:
    if isinstance(estimator, ExplorerEstimator):
        return estimator
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
    return ESTIMATORS[estimator]


def _knob(entry: ExplorerEstimator, knob: Optional[float]) -> Optional[float]:
    if entry.knob is None:
        return None
    value = entry.knob_default if knob is None else knob
    if value is not None and (not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"{entry.knob} must be a positive number, got {knob!r}")
    return None if value is None else float(value)


def _check_samples(num_samples: object) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    return num_samples


# =========================================================================== one estimate
@dataclass
class GradientView:
    """What a :class:`~gradlab.widgets.GradientExplorer` shows for one setting of its controls."""

    estimate: torch.Tensor
    true_grad: torch.Tensor
    cosine: float
    relative_error: float
    evaluations: Optional[int]

    def metrics(self) -> Dict[str, Any]:
        return {"cosine": self.cosine, "relative_error": self.relative_error, "evaluations": self.evaluations}


def estimate_once(problem: GradientProblem, estimator: Any, *, num_samples: int = 100,
                  knob: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One estimate of the gradient of ``problem`` with a registered estimator."""
    entry = _entry(estimator)
    if not entry.applies_to(problem):
        raise ValueError(f"estimator {entry.name!r} needs an expectation problem (f and make_dist)")
    return entry.estimate(problem, num_samples=_check_samples(num_samples), knob=_knob(entry, knob),
                          generator=generator)


def gradient_view(problem: GradientProblem, estimator: Any, *, num_samples: int = 100,
                  knob: Optional[float] = None, seed: int = 0) -> GradientView:
    """The estimate for one setting (noise from ``torch.Generator().manual_seed(seed)``) against backprop."""
    entry = _entry(estimator)
    generator = torch.Generator(problem.theta.device).manual_seed(seed)
    est = estimate_once(problem, entry, num_samples=num_samples, knob=knob, generator=generator)
    truth = problem.true_grad
    evaluations = None if entry.evaluations is None else entry.evaluations(truth.numel(), num_samples)
    return GradientView(est.detach(), truth, cosine_similarity(est, truth), relative_error(est, truth),
                        evaluations)


def error_stats(problem: GradientProblem, estimator: Any, settings: Sequence[Tuple[int, Optional[float]]],
                *, repeats: int = 30, seed: int = 0, target: Optional[torch.Tensor] = None,
                band: Tuple[float, float] = (0.1, 0.9)) -> Dict[str, torch.Tensor]:
    r"""Bias², variance and MSE of an estimator at each ``(num_samples, knob)`` in ``settings``.

    With $R$ = ``repeats`` independent estimates $\hat g_r$ and the target $g$ (default:
    the backprop gradient), $\bar g = \frac1R\sum_r \hat g_r$ and

    $\text{MSE} = \frac1R\sum_r\|\hat g_r - g\|^2 = \underbrace{\|\bar g - g\|^2}_{\text{bias}^2}
    + \underbrace{\tfrac1R\sum_r \|\hat g_r - \bar g\|^2}_{\text{variance}}$ (exactly).

    ``lower``/``upper`` are the ``band`` quantiles of $\|\hat g_r - g\|^2$ over the draws.
    Every setting draws from a generator seeded with ``seed`` (common random numbers: the
    curves over settings are smooth and each point is reproducible on its own). The
    estimated bias² carries variance/R. Returns float64 tensors of length ``len(settings)``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an int >= 2, got {repeats!r}")
    entry = _entry(estimator)
    truth = (problem.true_grad if target is None else target).reshape(-1).double()
    rows = []
    for num_samples, knob in settings:
        generator = torch.Generator(problem.theta.device).manual_seed(seed)
        draws = torch.stack([
            estimate_once(problem, entry, num_samples=num_samples, knob=knob, generator=generator)
            .reshape(-1).double() for _ in range(repeats)  # each draw is itself vectorized over samples
        ])
        errors = (draws - truth).pow(2).sum(1)
        mean = draws.mean(0)
        bias2, variance = (mean - truth).pow(2).sum(), (draws - mean).pow(2).sum(1).mean()
        rows.append(torch.stack([bias2, variance, errors.mean(), errors.quantile(band[0]),
                                 errors.quantile(band[1])]))
    table = torch.stack(rows).T.cpu()
    return dict(zip(("bias2", "variance", "mse", "lower", "upper"), table))


# =========================================================================== smoothing in 1-D
_Z = torch.linspace(-6.0, 6.0, 1201, dtype=torch.float64)
_W = torch.exp(-0.5 * _Z**2)
_W = _W / _W.sum()

SMOOTHING_FUNCTIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "wiggly: x²/4 + sin 3x": lambda x: x**2 / 4 + torch.sin(3 * x),
    "staircase: ⌊2x⌋/2": lambda x: torch.floor(2 * x) / 2,
    "kink: |x| + x/4": lambda x: x.abs() + x / 4,
}


def smoothed(f: Callable[[torch.Tensor], torch.Tensor], xs: torch.Tensor, sigma: float
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""$f_\sigma(x) = \mathbb E_z[f(x+\sigma z)]$ and $f_\sigma'(x) = \mathbb E_z[f(x+\sigma z)\,z]/\sigma$ at ``xs``.

    ``f`` maps a tensor of points to values elementwise (it may be a black box with jumps);
    the expectations are a 1201-point quadrature rule on $z\in[-6, 6]$ with Gaussian weights,
    which needs no derivative of ``f``.
    """
    if not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    xs = torch.as_tensor(xs, dtype=torch.float64)
    with torch.no_grad():
        values = f(xs[:, None] + sigma * _Z[None, :])
    return values @ _W, (values * _Z) @ _W / sigma


def es_slope(f: Callable[[torch.Tensor], torch.Tensor], x0: float, *, sigma: float, num_samples: int,
             method: str = "antithetic", seed: int = 0) -> float:
    """ES estimate of $f_\\sigma'(x_0)$ with gradlab's ``es_grad`` (noise from ``seed``)."""
    point = torch.tensor([float(x0)], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    return float(es_grad(lambda x: f(x).sum(), point, sigma=sigma, num_samples=num_samples, method=method,
                         generator=gen, vectorized=True)[0])


def log_grid(low: float, high: float, count: int) -> Tuple[float, ...]:
    """``count`` values from ``low`` to ``high``, evenly spaced in log scale, rounded to 3 significant digits."""
    return tuple(float(f"{v:.3g}") for v in torch.logspace(math.log10(low), math.log10(high), count).tolist())

