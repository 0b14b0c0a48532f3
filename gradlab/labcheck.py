r"""Helpers for the test cells of the labs (not for the book).

Lab test cells import what they use from here *inside the cell*, so that an answer cell cannot change
what a test does by redefining a helper (``def check_close(*args): pass``): the import in the test cell
rebinds the name just before it is used, and the helpers themselves resolve builtins and torch in this
module, where no answer cell can reach them.

* :func:`check_close` prints the expected and the obtained tensor, then asserts that they agree;
* :data:`TASK_REFERENCES` is the documented, public list of what each task must not call, by public
  names (``"gradlab.surrogate_loss"``, ``"gradlab.ScoreFunction"``); :func:`disabled_for` and
  :func:`reference_disabled` make those names raise while an answer runs, so that an answer which merely
  calls them scores no points for that task;
* :func:`without_reference` wraps a student's function for a visible test: it runs with its task's list
  disabled, as in the hidden tests;
* :class:`substituted` runs a task that uses an earlier one with a reference in place of the earlier
  answer (missing or broken), so that one mistake costs one task;
* :func:`check_unbiased`, :func:`check_mean_bound`, :func:`check_variance_ratio`, :func:`check_variance_below`,
  :func:`check_same_law` and
  :func:`check_frequencies` grade a stochastic answer by what its task states (unbiased, a variance
  within a factor of the reference's, equal in distribution to a law), not by equality with one
  random-number convention (see :mod:`gradlab.labcheck_stats`).
"""
from __future__ import annotations

import builtins as _b
import contextlib
import importlib
import sys
import types
from typing import Any, Iterator, Union

import torch

from .labcheck_stats import (check_frequencies, check_mean_bound, check_same_law, check_unbiased, check_variance_below,
                             check_variance_ratio)

__all__ = [
    "ReferenceDisabledError",
    "TASK_REFERENCES",
    "check_close",
    "check_frequencies",
    "check_mean_bound",
    "check_same_law",
    "check_unbiased",
    "check_variance_below",
    "check_variance_ratio",
    "disabled_for",
    "reference_disabled",
    "substituted",
    "without_reference",
]

# What each task must not call, by public name: `lab/grade_id of the answer cell` -> names. A function is
# blocked however it is reached (gradlab.X, gradlab.module.X, a from-import taken before); a class has every
# method it defines or inherits from gradlab classes blocked (dunder methods excepted, so instances can still
# be built and printed); "module.Class.method" blocks one method. Names from gradlab.labcheck_reference are the
# references the tests substitute for earlier answers: a task may not call its own.
_ESTIMATORS = ("gradlab.expectation_grad", "gradlab.surrogate_loss", "gradlab.per_sample",
               "gradlab.score.per_sample_scores", "gradlab.ScoreFunction", "gradlab.Pathwise",
               "gradlab.MeasureValued")
# Lab 4's REBAR tasks build on the student's (substituted) reinforce_grad_samples and relax_grad_samples only.
_REBAR = ("gradlab.RELAX", "gradlab.REBAR", "gradlab.relax.sample_z_b_ztilde") + _ESTIMATORS
TASK_REFERENCES: dict[str, tuple[str, ...]] = {
    "lab1/requ_forward": ("gradlab.requ", "gradlab.ReQU", "gradlab.nn.ReQU"),
    "lab1/requ_backward": ("gradlab.requ", "gradlab.ReQU", "gradlab.nn.ReQU"),
    "lab1/linear_forward": ("gradlab.linear", "gradlab.LinearFunction"),
    "lab1/linear_backward": ("gradlab.linear", "gradlab.LinearFunction"),
    "lab1/topological_order": ("gradlab.backprop.topological_order", "gradlab.backprop.backward",
                               "gradlab.backprop.Node.backward"),
    "lab1/backward": ("gradlab.backprop.topological_order", "gradlab.backprop.backward",
                      "gradlab.backprop.Node.backward"),
    "lab2/fd_central_grad": ("gradlab.fd_grad", "gradlab.fd_directional", "gradlab.forward_grad"),
    "lab2/es_grad_antithetic": ("gradlab.es_grad", "gradlab.es_grad_model", "gradlab.ES_grad"),
    "lab2/es_grad_model": ("gradlab.es_grad", "gradlab.es_grad_model", "gradlab.ES_grad",
                           "gradlab.labcheck_reference.es_grad_model"),
    "lab2/es_step": ("gradlab.ES_step", "gradlab.labcheck_reference.es_step"),
    "lab2/train_es": ("gradlab.ES_step", "gradlab.train"),
    "lab3/score_grad_rloo": _ESTIMATORS,
    "lab3/pathwise_grad": _ESTIMATORS,
    "lab3/reinforce_loss": _ESTIMATORS + ("gradlab.labcheck_reference.reinforce_loss",),
    "lab3/train_bandit": _ESTIMATORS,
    "lab3/poisson_mvd_grad": _ESTIMATORS + ("gradlab.weak_derivatives.weak_derivative",),
    "lab3/optimal_baseline": _ESTIMATORS + ("gradlab.control_variates.OptimalBaseline",
                                            "gradlab.control_variates.leave_one_out_sums",
                                            "gradlab.control_variates.leave_one_out_means",
                                            "gradlab.RegressionControlVariates"),
    "lab4/gumbel_softmax": ("gradlab.gumbel_softmax", "gradlab.gumbel_max", "gradlab.discrete.sample_gumbel",
                            "gradlab.discrete.perturb", "gradlab.GumbelSoftmaxEstimator"),
    "lab4/st_bernoulli": ("gradlab.straight_through", "gradlab.discrete.BernoulliStraightThrough",
                          "gradlab.StraightThroughEstimator", "gradlab.labcheck_reference.st_bernoulli"),
    "lab4/exact_bernoulli_grad": ("gradlab.exact_expectation_grad",),
    "lab4/st_grad_samples": ("gradlab.StraightThroughEstimator", "gradlab.expectation_grad",
                             "gradlab.surrogate_loss"),
    "lab4/reinforce": _ESTIMATORS + ("gradlab.labcheck_reference.reinforce_grad_samples",),
    "lab4/relax": ("gradlab.RELAX", "gradlab.REBAR", "gradlab.relax.sample_z_b_ztilde",
                   "gradlab.labcheck_reference.relax_grad_samples") + _ESTIMATORS,
    "lab4/adapt_surrogate": ("gradlab.RELAX", "gradlab.REBAR"),
    "lab4/equal_cost_ratio": _REBAR + ("gradlab.labcheck_reference.equal_cost_variance_ratio",),
    "lab4/tune_rebar": _REBAR,
    "lab5/dv_bound": ("gradlab.dv.DV", "gradlab.dv.log_mean_exp"),
    "lab5/train_step": ("gradlab.DVTrainer", "gradlab.labcheck_reference.train_step"),
    "lab5/train_dv": ("gradlab.DVTrainer",),
    "lab5/ground_truth": ("gradlab.correlated_gaussians",),
    "lab5/estimate_mi": ("gradlab.labcheck_reference.estimate_mi",),
    "lab5/infonce_bound": ("gradlab.dv.infonce", "gradlab.dv.InfoNCE", "gradlab.dv.interpolated",
                           "gradlab.dv.objective", "gradlab.labcheck_reference.infonce_bound"),
    "lab5/infonce_mi": ("gradlab.DVTrainer", "gradlab.dv.infonce", "gradlab.dv.InfoNCE",
                        "gradlab.dv.objective", "gradlab.labcheck_reference.infonce_batch_values"),
    "lab6/reward_to_go": ("gradlab.discounted_returns", "gradlab.policy_weights", "gradlab.policy_loss",
                          "gradlab.gae_advantages"),
    "lab6/reinforce_loss": ("gradlab.policy_weights", "gradlab.policy_loss", "gradlab.gae_advantages"),
    "lab6/fit_value": ("gradlab.policy.fit_linear_value",),
    "lab6/baseline_loss": ("gradlab.policy_weights", "gradlab.policy_loss", "gradlab.gae_advantages"),
    "lab6/score_elbo_grad": ("gradlab.elbo_grad", "gradlab.elbo", "gradlab.fit_bbvi", "gradlab.expectation_grad",
                             "gradlab.surrogate_loss", "gradlab.per_sample"),
    "lab6/reparam_elbo_grad": ("gradlab.elbo_grad", "gradlab.elbo", "gradlab.fit_bbvi", "gradlab.expectation_grad",
                               "gradlab.surrogate_loss", "gradlab.per_sample"),
}


class ReferenceDisabledError(RuntimeError):
    """Raised when an answer calls gradlab's implementation of the task it was asked to write."""


def check_close(what: str, got: Any, expected: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Print ``expected`` and ``got``, then assert that ``got`` is a tensor of the same shape, close to it."""
    _b.print(f"{what}\n  expected: {expected}\n  got:      {got}")
    assert _b.isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {_b.type(got).__name__}"
    assert got.shape == expected.shape, f"{what}: expected shape {_b.tuple(expected.shape)}, got {_b.tuple(got.shape)}"
    got, expected = got.detach(), expected.detach()
    gap = (got - expected).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got, expected, atol=atol, rtol=rtol), f"{what}: largest difference {gap:.3g}"


def _disabled(*args: Any, **kwargs: Any) -> Any:
    # Runs with the globals of the function whose code it replaces: only builtins are safe here.
    raise __import__("gradlab.labcheck").labcheck.ReferenceDisabledError(
        "this test runs your answer with gradlab's own implementation of the task disabled: "
        "write the computation yourself instead of calling gradlab"
    )


def resolve(name: str) -> tuple[Any, Any]:
    """``(owner, object)`` for a public dotted name: the longest importable module prefix, then attributes."""
    if not _b.isinstance(name, str) or not name.startswith("gradlab"):
        raise TypeError(f"targets: expected a public name starting with 'gradlab', got {name!r}")
    parts = name.split(".")
    for cut in _b.range(_b.len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        obj = owner
        try:
            for part in parts[cut:]:
                owner, obj = obj, _b.getattr(obj, part)
        except AttributeError:
            raise TypeError(f"targets: {name!r} is not a public name of gradlab") from None
        return owner, obj
    raise TypeError(f"targets: no module for {name!r}")


def _kind_of(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in _b.vars(klass):
            return _b.vars(klass)[name]
    return None


def _replacement(original: Any) -> Any:
    if _b.isinstance(original, _b.staticmethod):
        return _b.staticmethod(_disabled)
    if _b.isinstance(original, _b.classmethod):
        return _b.classmethod(_disabled)
    return _disabled


def _estimating_methods(cls: type) -> list[str]:
    """Every callable attribute ``cls`` defines or inherits from a gradlab class, dunders excepted."""
    names = []
    for klass in cls.__mro__:
        if not _b.getattr(klass, "__module__", "").startswith("gradlab") or klass.__module__.startswith("gradlab.labcheck"):
            continue
        for name, value in _b.vars(klass).items():
            if name.startswith("__") and name.endswith("__") or name in names:
                continue
            if _b.isinstance(value, (types.FunctionType, _b.staticmethod, _b.classmethod)):
                names.append(name)
    return names


def _block_method(cls: type, name: str, undo: list) -> None:
    had, original = name in _b.vars(cls), _b.vars(cls).get(name)
    _b.setattr(cls, name, _replacement(_kind_of(cls, name)))
    undo.append(lambda: _b.setattr(cls, name, original) if had else _b.delattr(cls, name))


def _block_function(fn: types.FunctionType, undo: list) -> None:
    original = fn.__code__
    fn.__code__ = _disabled.__code__.replace(co_freevars=original.co_freevars)
    undo.append(lambda: _b.setattr(fn, "__code__", original))


Target = Union[str, types.FunctionType, type]


@contextlib.contextmanager
def reference_disabled(*targets: Target) -> Iterator[None]:
    r"""Make each target raise :class:`ReferenceDisabledError` inside the ``with`` block.

    A target is a public name (``"gradlab.es_grad"``, ``"gradlab.ScoreFunction"``,
    ``"gradlab.backprop.Node.backward"``) or the object itself:

    * a function has its code object swapped, so every reference to it is caught, including
      ``from gradlab.es import es_grad as mine`` taken before the test;
    * a class has every method it defines or inherits from gradlab classes replaced on the class
      (dunders excepted), so the block survives a refactor that renames its private hooks; other
      classes that share its base are untouched;
    * ``Class.method`` replaces that one method.

    Everything is restored on exit, even when the block raises.

    >>> import gradlab
    >>> with reference_disabled("gradlab.requ"):
    ...     gradlab.autograd.requ(torch.ones(1))
    Traceback (most recent call last):
    ...
    gradlab.labcheck.ReferenceDisabledError: this test runs your answer ...
    """
    undo: list = []
    try:
        for target in targets:
            owner, obj = resolve(target) if _b.isinstance(target, str) else (None, target)
            if _b.isinstance(obj, type):
                for name in _estimating_methods(obj):
                    _block_method(obj, name, undo)
            elif _b.isinstance(owner, type) and _b.isinstance(obj, types.FunctionType):
                _block_method(owner, target.rsplit(".", 1)[1], undo)
            elif _b.isinstance(obj, types.FunctionType):
                _block_function(obj, undo)
            else:
                raise TypeError(f"targets: expected a public gradlab function or class, got {target!r}")
        yield
    finally:
        for restore in _b.reversed(undo):
            restore()


def disabled_for(task: str) -> contextlib.AbstractContextManager:
    """``reference_disabled`` with the public list of ``task`` (``"lab3/score_grad_rloo"``)."""
    if task not in TASK_REFERENCES:
        raise KeyError(f"task: unknown task {task!r}; known: {_b.sorted(TASK_REFERENCES)}")
    return reference_disabled(*TASK_REFERENCES[task])


def without_reference(task: str, fn: Any) -> Any:
    """``fn`` wrapped to run inside ``disabled_for(task)``: visible tests call the student's answer this way,
    so that an answer that delegates to gradlab fails visibly, with the message the hidden tests give."""
    if task not in TASK_REFERENCES:
        raise KeyError(f"task: unknown task {task!r}; known: {_b.sorted(TASK_REFERENCES)}")

    def run(*args: Any, **kwargs: Any) -> Any:
        with disabled_for(task):
            return fn(*args, **kwargs)

    return run


class substituted:
    """Bind names in the notebook's namespace for the ``with`` block, then restore them (or remove them).

    ``with substituted(st_bernoulli=reference):`` makes the student's ``st_grad_samples`` call the reference
    sampler while its test runs, whether the student's own ``st_bernoulli`` is right, wrong or missing.
    The namespace is the caller's globals (the notebook), or ``namespace=`` if given.
    """

    _missing = object()

    def __init__(self, namespace: dict | None = None, **replacements: Any) -> None:
        self.namespace = sys._getframe(1).f_globals if namespace is None else namespace
        self.replacements = replacements

    def __enter__(self) -> "substituted":
        self.saved = {k: self.namespace.get(k, self._missing) for k in self.replacements}
        self.namespace.update(self.replacements)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, value in self.saved.items():
            if value is self._missing:
                self.namespace.pop(name, None)
            else:
                self.namespace[name] = value
