"""gradlab: how gradients are computed and estimated in PyTorch.

The package mirrors the book.

Exact gradients:
    :mod:`gradlab.autograd` (custom autograd Functions), :mod:`gradlab.nn` (modules
    built on them, and ``ZeroOrderModule``), :mod:`gradlab.backprop` (a tiny
    reverse-mode engine).
Zeroth-order estimators (gradients from function values):
    :mod:`gradlab.finite_diff` (finite differences, forward gradients),
    :mod:`gradlab.es` (evolution strategies: the family's theory and every name
    of its modules), :mod:`gradlab.es_point` (the point estimator ``es_grad``),
    :mod:`gradlab.es_population` (``es_grad_model``: ES for all parameters of a
    model, with the Sequential fast path in :mod:`gradlab.es_fastpath`),
    :mod:`gradlab.es_autograd` (TorchOpt-style ``zero_order`` and
    ``ZeroOrderModule``), :mod:`gradlab.es_lab` (the lab's ``ES_grad`` /
    ``ES_step``), :mod:`gradlab.noise` (noise sources) and
    :mod:`gradlab.blackbox` (a black-box regularizer by the score function).
Gradients of expectations (one protocol, :mod:`gradlab.estimator`; one call, :func:`gradlab.expectation_grad`):
    :mod:`gradlab.estimator` (the base class ``Estimator``, ``Estimate``, the registry ``ESTIMATORS``),
    :mod:`gradlab.expectation` (``expectation_grad``, ``surrogate_loss``, ``exact_expectation_grad``), :mod:`gradlab.score` (score function / REINFORCE),
    :mod:`gradlab.pathwise` (reparameterization), :mod:`gradlab.measure_valued`
    (weak derivatives), :mod:`gradlab.control_variates` (baselines) and
    :mod:`gradlab.distributions` (their shared sampling and parameter plumbing).
Divergences and mutual information:
    :mod:`gradlab.dv` (the DV, NWJ and InfoNCE bounds, MINE's gradient, ``DVTrainer``;
    ground truth from ``gradlab.data.correlated_gaussians``).
Shared helpers:
    :mod:`gradlab.checks` (input validation), :mod:`gradlab.batch` (evaluate a
    function on a batch of points), :mod:`gradlab.params` (flatten parameters),
    :mod:`gradlab.compare` (gradient metrics), :mod:`gradlab.data` and
    :mod:`gradlab.training` (datasets and training loops for the examples).
"""
from . import (
    autograd,
    backprop,
    batch,
    blackbox,
    checks,
    compare,
    data,
    es,
    es_autograd,
    es_fastpath,
    es_lab,
    es_point,
    es_population,
    finite_diff,
    nn,
    noise,
    params,
    training,
)
from .autograd import LinearFunction, MyReLU, ReQU, linear, my_relu, requ
from .batch import evaluate_batch
from .blackbox import BlackboxGradientEstimator
from .compare import compare_gradients, cosine_similarity, relative_error, sign_agreement
from .data import load_digits_split, load_iris_tensors
from .es import (
    ES_grad,
    ES_step,
    ZeroOrderModule,
    centered_ranks,
    es_grad,
    es_grad_model,
    get_model_weights,
    set_model_weights,
    zero_order,
)
from .finite_diff import default_eps, fd_directional, fd_grad, forward_grad
from .params import (
    assign_grads,
    assign_params,
    flatten_grads,
    flatten_params,
    param_shapes,
    unflatten_params,
)
from .training import accuracy, build_mlp, train

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # modules
    "autograd",
    "backprop",
    "batch",
    "blackbox",
    "checks",
    "compare",
    "data",
    "es",
    "es_autograd",
    "es_fastpath",
    "es_lab",
    "es_point",
    "es_population",
    "finite_diff",
    "nn",
    "noise",
    "params",
    "training",
    # exact gradients
    "MyReLU",
    "ReQU",
    "LinearFunction",
    "my_relu",
    "requ",
    "linear",
    # zeroth-order estimators
    "fd_grad",
    "fd_directional",
    "forward_grad",
    "default_eps",
    "es_grad",
    "es_grad_model",
    "centered_ranks",
    "zero_order",
    "ZeroOrderModule",
    "BlackboxGradientEstimator",
    "get_model_weights",
    "set_model_weights",
    "ES_grad",
    "ES_step",
    # shared helpers
    "evaluate_batch",
    "cosine_similarity",
    "relative_error",
    "sign_agreement",
    "compare_gradients",
    "flatten_params",
    "unflatten_params",
    "assign_params",
    "flatten_grads",
    "assign_grads",
    "param_shapes",
    "load_digits_split",
    "load_iris_tensors",
    "build_mlp",
    "accuracy",
    "train",
]

# gradients of expectations (issue 6): score function, pathwise, measure-valued, control variates
from . import control_variates, distributions, estimator, expectation, measure_valued, pathwise, score
from .control_variates import (
    Baseline,
    ConstantBaseline,
    DeltaMethod,
    EMABaseline,
    LeaveOneOut,
    OptimalBaseline,
)
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

__all__ += [
    "estimator",
    "Estimator",
    "Estimate",
    "UnsupportedDistribution",
    "expectation",
    "distributions",
    "score",
    "pathwise",
    "measure_valued",
    "control_variates",
    "expectation_grad",
    "surrogate_loss",
    "exact_expectation_grad",
    "register_estimator",
    "ESTIMATORS",
    "per_sample",
    "ScoreFunction",
    "Pathwise",
    "MeasureValued",
    "Baseline",
    "ConstantBaseline",
    "EMABaseline",
    "LeaveOneOut",
    "OptimalBaseline",
    "DeltaMethod",
]

# ES at scale: a shared noise table and distributed ES
from . import es_distributed
from .noise import NoiseTable

__all__ += ["es_distributed", "NoiseTable"]

# divergence and mutual-information estimation (issue 8)
from . import dv
from .data import correlated_gaussians, product_of_marginals
from .dv import DVTrainer

__all__ += ["dv", "DVTrainer", "correlated_gaussians", "product_of_marginals"]


# widgets (issue 9): explorers and the plain computations behind them
from . import explore, frames, widgets
from .widgets import GradientExplorer, SmoothingExplorer, VarianceExplorer

__all__ += ["explore", "frames", "widgets", "GradientExplorer", "VarianceExplorer", "SmoothingExplorer"]


# discrete variables: Gumbel, straight-through, REBAR, RELAX, Sinkhorn (issue 7)
from . import discrete, relax
from .relax import REBAR, RELAX, GumbelSoftmaxEstimator, StraightThroughEstimator
from .discrete import (
    gumbel_max,
    gumbel_sinkhorn,
    gumbel_softmax,
    hungarian,
    sinkhorn,
    straight_through,
)

__all__ += [
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
]
