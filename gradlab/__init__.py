r"""gradlab: how gradients are computed and estimated in PyTorch.

The package mirrors the book, chapter by chapter (``__chapters__`` lists the public names of
each, and ``__all__`` is their concatenation; the API page reads in this order):

Exact gradients (Chapter 1):
    :mod:`gradlab.autograd` (custom autograd Functions), :mod:`gradlab.nn` (modules built on
    them), :mod:`gradlab.backprop` (a tiny reverse-mode engine).
Finite differences and forward gradients (Chapter 2):
    :mod:`gradlab.finite_diff`.
Evolution strategies (Chapter 3):
    the subpackage :mod:`gradlab.es`: the point estimator ``es_grad`` (``es.point``), the
    population estimator ``es_grad_model`` (``es.population``, with the Sequential fast path
    ``es.fastpath``), the ``zero_order`` layer and ``ZeroOrderModule`` (``es.layer``), the
    noise sources and the shared ``NoiseTable`` (``es.noise``), ES across processes
    (``es.distributed``) and the lab's ``ES_grad`` / ``ES_step`` (``es.lab``); plus
    :mod:`gradlab.blackbox` (a black-box regularizer by the score function).
Gradients of expectations (Chapter 4), control variates (Chapter 5), discrete variables
(Chapter 6): one estimator protocol, :mod:`gradlab.estimator` (the base class ``Estimator``, its
hook, the registry ``ESTIMATORS``), called the same way for every estimator by
:func:`gradlab.expectation_grad` and :func:`gradlab.surrogate_loss`.
Divergences and mutual information (Chapter 7): :mod:`gradlab.dv` (loaded on first use).
Explorers: :mod:`gradlab.explore` and :mod:`gradlab.explore_graph` (the computations) and
:mod:`gradlab.widgets` (the widgets), loaded on first use, so ``import gradlab`` loads neither ipywidgets nor matplotlib.
Helpers: :mod:`gradlab.compare`, :mod:`gradlab.params`, :mod:`gradlab.data`,
:mod:`gradlab.training`. Internal modules (not in ``__all__``): ``checks`` (every argument
check), ``rng`` (the one rule for random draws), ``batch`` (evaluate a function on a batch
of points), ``broadcast``, ``frames`` and ``problems`` (the explorers' machinery),
``labcheck`` (for the labs' test cells).

Conventions (the one vocabulary of the package):

* ``theta`` — the parameters a gradient is taken with respect to; ``x`` — a point or samples;
* ``num_samples`` — the number of random draws (not of function evaluations);
* ``num_steps`` — iterations of an optimisation loop; ``num_epochs`` — passes over a dataset;
* ``loss_fn`` — a loss ``loss_fn(outputs, targets)``; ``f`` — a black-box cost;
* ``generator`` — a ``torch.Generator``, the only source of randomness of a function
  (trainers and explorers may take an integer ``seed=`` instead); the same generator state
  gives the same numbers and the global RNG stays untouched;
* random draws follow one rule (:mod:`gradlab.rng`): drawn on the generator's device, then
  moved to the data's device; every result lives on the device of the data;
* bad arguments raise ``TypeError`` (wrong kind) or ``ValueError`` (bad value) with a message
  naming the argument, from the checks of :mod:`gradlab.checks`;
* ``sigma`` — a smoothing scale, ``eps`` — a finite-difference step, ``tau`` — a temperature.

Deprecated aliases, kept because the book or the labs promise them: the lab's ``ES_grad`` /
``ES_step`` (positional ``loss``, ``N``); the module paths ``gradlab.es_point``,
``gradlab.es_population``, ``gradlab.es_fastpath``, ``gradlab.es_autograd``, ``gradlab.es_lab``,
``gradlab.es_distributed`` and ``gradlab.noise`` (now ``gradlab.es.*``); and
``gradlab.nn.ZeroOrderModule`` (now ``gradlab.ZeroOrderModule``).
"""
import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# ----------------------------------------------------------------- exact gradients (Chapter 1)
from . import autograd, backprop, nn
from .autograd import LinearFunction, MyReLU, ReQU, linear, my_relu, requ

_EXACT = ["autograd", "nn", "backprop", "MyReLU", "ReQU", "LinearFunction", "my_relu", "requ", "linear"]

# ----------------------------------------- finite differences and forward gradients (Chapter 2)
from . import finite_diff
from .finite_diff import default_eps, fd_directional, fd_grad, forward_grad

_FINITE_DIFF = ["finite_diff", "fd_grad", "fd_directional", "forward_grad", "default_eps"]

# -------------------------------------------------------------- evolution strategies (Chapter 3)
from . import es
from .es import (
    ES_grad,
    ES_step,
    NoiseTable,
    ZeroOrderModule,
    centered_ranks,
    es_grad,
    es_grad_model,
    get_model_weights,
    set_model_weights,
    zero_order,
)

# The old flat module paths of the family, kept as aliases of the subpackage's modules.
for _old, _new in {
    "es_point": es.point, "es_population": es.population, "es_fastpath": es.fastpath,
    "es_autograd": es.layer, "es_lab": es.lab, "es_distributed": es.distributed, "noise": es.noise,
}.items():
    sys.modules[f"{__name__}.{_old}"] = _new
    globals()[_old] = _new
nn.ZeroOrderModule = ZeroOrderModule  # deprecated alias (Chapter 3's code); nn itself imports no ES
del _old, _new

from . import blackbox
from .blackbox import BlackboxGradientEstimator

_ES = [
    "es", "es_grad", "es_grad_model", "centered_ranks", "zero_order", "ZeroOrderModule", "NoiseTable",
    "get_model_weights", "set_model_weights", "ES_grad", "ES_step", "blackbox", "BlackboxGradientEstimator",
]

# ------------------------------------------------------- gradients of expectations (Chapter 4)
# One protocol (gradlab.estimator), one call (expectation_grad / surrogate_loss).
from . import cards, distributions, estimator, expectation, measure_valued, pathwise, score
from .distributions import per_sample
from .estimator import Estimate, Estimator, UnsupportedDistribution
from .expectation import (
    ESTIMATORS,
    exact_expectation_grad,
    expectation_grad,
    register_estimator,
    surrogate_loss,
)
from .measure_valued import MeasureValued
from .pathwise import Pathwise
from .score import ScoreFunction

# ------------------------------------- randomised quasi-Monte Carlo noise (Chapter 5)
from . import qmc
from .qmc import PathwiseRQMC

_EXPECTATION = [
    "estimator",
    "Estimator",
    "Estimate",
    "UnsupportedDistribution",
    "expectation",
    "distributions",
    "cards",
    "score",
    "pathwise",
    "measure_valued",
    "expectation_grad",
    "surrogate_loss",
    "exact_expectation_grad",
    "register_estimator",
    "ESTIMATORS",
    "per_sample",
    "ScoreFunction",
    "Pathwise",
    "MeasureValued",
]

# --------------------------------------------------------------- control variates (Chapter 5)
from . import control_variates
from .control_variates import (
    Baseline,
    ConstantBaseline,
    DeltaMethod,
    EMABaseline,
    LeaveOneOut,
    OptimalBaseline,
)
from . import control_variates_regression, importance, rao_blackwell
from .control_variates_regression import RegressionControlVariates
from .importance import ImportanceSampledScore, scaled_proposal
from .rao_blackwell import RaoBlackwell

_CONTROL_VARIATES = [
    "control_variates",
    "Baseline",
    "ConstantBaseline",
    "EMABaseline",
    "LeaveOneOut",
    "OptimalBaseline",
    "DeltaMethod",
    "control_variates_regression",
    "RegressionControlVariates",
    "rao_blackwell",
    "RaoBlackwell",
    "importance",
    "ImportanceSampledScore",
    "scaled_proposal",
    "qmc",
    "PathwiseRQMC",
]

# ------------------------------------------------------------- discrete variables (Chapter 6)
from . import arm, discrete, lax, permutations, relax
from .arm import ARM, DisARM
from .lax import LAX
from .permutations import entropic_assignment_objective, from_pieces, random_permutations, to_pieces
from .relax import REBAR, RELAX, GumbelSoftmaxEstimator, StraightThroughEstimator

# Deprecated aliases the labs and older pages use: the estimators under the samplers' module,
# the base class under the plumbing's (set here, so neither lower module imports an upper one).
for _name in getattr(discrete, "_ESTIMATORS_IN_RELAX", ()):
    setattr(discrete, _name, getattr(relax, _name))
distributions.Estimator = Estimator
from .discrete import (
    gumbel_max,
    gumbel_sinkhorn,
    gumbel_softmax,
    hungarian,
    sinkhorn,
    straight_through,
)

_DISCRETE = [
    "discrete",
    "relax",
    "gumbel_max",
    "gumbel_softmax",
    "straight_through",
    "sinkhorn",
    "gumbel_sinkhorn",
    "hungarian",
    "REBAR",
    "RELAX",
    "GumbelSoftmaxEstimator",
    "StraightThroughEstimator",
    "arm",
    "ARM",
    "DisARM",
    "lax",
    "LAX",
    "permutations",
    "entropic_assignment_objective",
    "to_pieces",
    "from_pieces",
    "random_permutations",
]

# ------------------------------------------- divergences and mutual information (Chapter 7)
from .data import correlated_gaussians, product_of_marginals

_DIVERGENCES = ["dv", "DVTrainer", "CorrelatedGaussianSampler", "SeparableCritic", "score_matrix",
                "correlated_gaussians", "product_of_marginals"]

# ------------------- the estimators at work: graphs, variational inference, policies (Chapter 8)
from . import bbvi, envs, policy, scg, scg_nodes
from .bbvi import elbo, elbo_grad, fit_bbvi, logistic_regression_log_joint
from .envs import CartPole, ChainMDP
from .policy import (
    Episodes,
    LinearPolicy,
    discounted_returns,
    gae_advantages,
    policy_loss,
    policy_weights,
    rollout,
    train_policy,
)
from .scg import Graph, dice_objective, exact_graph_expectation, magic_box, scg_surrogate

_APPLICATIONS = [
    "scg", "scg_nodes", "Graph", "scg_surrogate", "dice_objective", "magic_box", "exact_graph_expectation",
    "bbvi", "elbo", "elbo_grad", "fit_bbvi", "logistic_regression_log_joint",
    "policy", "envs", "ChainMDP", "CartPole", "Episodes", "rollout", "discounted_returns", "gae_advantages",
    "policy_weights", "policy_loss", "LinearPolicy", "train_policy",
]

# ----------------------------------------------------------------- explorers (loaded lazily)
_EXPLORERS = ["explore", "explore_graph", "widgets", "GradientExplorer", "VarianceExplorer", "SmoothingExplorer",
              "GraphExplorer"]

# ------------------------------------------------------------------------------ helpers
from . import compare, data, params, training
from .batch import evaluate_batch
from .compare import compare_gradients, cosine_similarity, relative_error, sign_agreement
from .data import load_digits_split, load_iris_tensors
from .params import (
    assign_grads,
    assign_params,
    flatten_grads,
    flatten_params,
    param_shapes,
    unflatten_params,
)
from .training import accuracy, build_mlp, train

_HELPERS = [
    "compare", "params", "data", "training", "evaluate_batch",
    "cosine_similarity", "relative_error", "sign_agreement", "compare_gradients",
    "flatten_params", "unflatten_params", "assign_params", "flatten_grads", "assign_grads", "param_shapes",
    "load_digits_split", "load_iris_tensors", "build_mlp", "accuracy", "train",
]

# ----------------------------------------------------------------- lazy names, and __all__
# name -> (module, attribute or None for the module itself); imported on first access.
_LAZY = {
    "dv": ("gradlab.dv", None),
    "DVTrainer": ("gradlab.dv", "DVTrainer"),
    "CorrelatedGaussianSampler": ("gradlab.dv", "CorrelatedGaussianSampler"),
    "SeparableCritic": ("gradlab.dv", "SeparableCritic"),
    "score_matrix": ("gradlab.dv", "score_matrix"),
    "explore": ("gradlab.explore", None),
    "widgets": ("gradlab.widgets", None),
    "GradientExplorer": ("gradlab.widgets", "GradientExplorer"),
    "VarianceExplorer": ("gradlab.widgets", "VarianceExplorer"),
    "SmoothingExplorer": ("gradlab.widgets", "SmoothingExplorer"),
    "explore_graph": ("gradlab.explore_graph", None),
    "GraphExplorer": ("gradlab.widgets", "GraphExplorer"),
}


def __getattr__(name: str) -> Any:
    """Load the explorers, the widgets and the divergence trainer on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__chapters__ = [
    ("Exact gradients", _EXACT),
    ("Finite differences and forward gradients", _FINITE_DIFF),
    ("Evolution strategies", _ES),
    ("Gradients of expectations", _EXPECTATION),
    ("Control variates", _CONTROL_VARIATES),
    ("Discrete variables", _DISCRETE),
    ("Divergences and mutual information", _DIVERGENCES),
    ("The estimators at work", _APPLICATIONS),
    ("Explorers", _EXPLORERS),
    ("Helpers", _HELPERS),
]

__all__ = ["__version__"] + [name for _, names in __chapters__ for name in names]
