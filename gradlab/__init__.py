"""gradlab: how gradients are computed and estimated in PyTorch.

The package mirrors the book: :mod:`gradlab.autograd` (custom autograd Functions),
:mod:`gradlab.nn` (modules built on them), :mod:`gradlab.backprop` (a tiny
reverse-mode engine), shared helpers :mod:`gradlab.params` (flatten parameters)
and :mod:`gradlab.compare` (gradient metrics), plus :mod:`gradlab.data` and
:mod:`gradlab.training` for the examples.
"""
from . import autograd, backprop, compare, data, nn, params, training
from .autograd import LinearFunction, MyReLU, ReQU, linear, my_relu, requ
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

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "autograd",
    "backprop",
    "compare",
    "data",
    "nn",
    "params",
    "training",
    "MyReLU",
    "ReQU",
    "LinearFunction",
    "my_relu",
    "requ",
    "linear",
    "cosine_similarity",
    "relative_error",
    "sign_agreement",
    "compare_gradients",
    "load_digits_split",
    "load_iris_tensors",
    "flatten_params",
    "unflatten_params",
    "assign_params",
    "flatten_grads",
    "assign_grads",
    "param_shapes",
    "build_mlp",
    "accuracy",
    "train",
]

# ----------------------------------------------------------------------------
# ES engineer: zeroth-order estimators (issue 3). Append the import block for
# finite_diff / es / blackbox below this line, and extend __all__ with their names
# (e.g. `__all__ += ["fd_grad", ...]`).
# ----------------------------------------------------------------------------
from . import blackbox, es, finite_diff
from .blackbox import BlackboxGradientEstimator
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

__all__ += [
    "finite_diff",
    "es",
    "blackbox",
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
]

# divergence and mutual-information estimation (issue 8)
from . import dv
from .data import correlated_gaussians, product_of_marginals
from .dv import DVTrainer

__all__ += ["dv", "DVTrainer", "correlated_gaussians", "product_of_marginals"]
