r"""The one protocol of every estimator of $\nabla_\theta\,\mathbb E_{x\sim p_\theta}[f(x)]$.

An estimator is a subclass of :class:`Estimator` registered once with
:func:`register_estimator` into :data:`ESTIMATORS`; every one is called the same way
(:func:`gradlab.expectation_grad`, :func:`gradlab.surrogate_loss`, or its own
:meth:`Estimator.per_sample_grads` / :meth:`Estimator.surrogate_loss`) and raises the
same error for the same bad input.

**The hook.** A subclass estimates per sample with respect to the distribution's **own
parameters** $\lambda$ (those :meth:`Estimator.params` reads: ``loc``/``scale`` of a
Normal, ``probs`` of a Bernoulli, the logits for the discrete relaxations)::

    class MyEstimator(Estimator):
        name = "my_estimator"; uses_baseline = False
        unbiased = True; needs_f = "black box"; cost = "1 evaluation of f per sample"
        def check(self, dist): ...   # raise self.unsupported(dist, "what it needs")
        def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False):
            ...
            return Estimate(costs, grads)   # costs (N,) or (N, B); grads (N, P)

``dist`` is built from a detached $\theta$ (no graph to it), ``lam`` is
``params(dist)`` detached (a dict; its flattening order is the order of the columns of
``grads``). The base class does everything else once: the input checks, the chain
rule $\hat g_\theta^{(n)} = J^\top \hat g_\lambda^{(n)}$ with
$J = \partial\lambda/\partial\theta$ (:mod:`gradlab.chain`: nothing when $\lambda$ *is* $\theta$, a
product with $\operatorname{diag}J$ when ``make_dist`` is elementwise, else one batched
vector-Jacobian product per sample or one per parameter, whichever is fewer), the reshape
to ``(num_samples, *theta.shape)``, and a generic :meth:`Estimator.surrogate`
(value: the mean cost; gradient: the mean estimate), which an estimator may override
for speed.

**Costs.** ``f`` maps a batch of samples ``(N, *sample_shape)`` to costs ``(N,)``, or
to ``(N, B)`` when the distribution is batched over ``B`` independent items
(``dist.batch_shape[0] == B``): one cost per sample and item (an image of a
minibatch). The objective is then the sum over items; estimators that can (the score
function) weight each item's score by its own cost only.

**Point estimators** (:func:`gradlab.fd_grad`, :func:`gradlab.forward_grad`,
:func:`gradlab.es_grad`) estimate $\nabla F(x)$ of a deterministic $F$ (ES: of its
Gaussian smoothing) at one point. Their protocol: ``estimator(F, x, ..., generator=None)``
returns **one estimate shaped like** ``x`` (the mean over their directions / samples,
never per-sample), raise the same ``TypeError``/``ValueError`` as here for a bad
``num_samples``/``generator``, and draw all randomness from ``generator``. ES's
``"forward"`` method with $N$ directions equals the mean of :func:`gradlab.expectation_grad`'s
score-function estimates for $\mathcal N(x, \sigma^2 I)$ with the constant baseline
$F(x)$ (tested), which is where the two protocols meet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import distributions as D

from .chain import chain_rule, theta_chain
from .checks import check_callable, check_count, check_generator, check_tensor
from .distributions import Params, check_distribution, distribution_params, flatten_param_dict, rebuild

__all__ = [
    "Estimate",
    "Estimator",
    "UnsupportedDistribution",
    "ESTIMATORS",
    "ALIASES",
    "register_estimator",
    "get_estimator",
    "check_theta",
    "chain_rule",
    "dependence_mask",
]


class UnsupportedDistribution(ValueError):
    """Raised when an estimator cannot handle the distribution it is given."""


@dataclass(frozen=True)
class Estimate:
    """What a hook returns: ``costs`` (N,) or (N, B) and per-sample ``grads`` (N, P) w.r.t. the flat lambda."""

    costs: torch.Tensor
    grads: torch.Tensor


def check_theta(theta: object) -> torch.Tensor:
    """A non-empty floating tensor (TypeError / ValueError naming ``theta`` otherwise)."""
    return check_tensor(theta, "theta")


def describe(dist: D.Distribution) -> str:
    """``Independent(Normal)``-style name of a distribution, for messages."""
    if isinstance(dist, D.Independent):
        return f"Independent({describe(dist.base_dist)})"
    return type(dist).__name__


# =========================================================================== the base class
class Estimator:
    """Base of every estimator of the gradient of an expectation (see the module docstring).

    Class attributes: ``name`` (its registry key), ``uses_baseline``, and the card
    ``unbiased`` / ``needs_f`` / ``cost``. Hooks: :meth:`check`, :meth:`params`,
    :meth:`param_grads` (required), :meth:`surrogate` (optional override) and
    :meth:`unreadable_grads` (optional: distributions whose parameters gradlab cannot read).
    """

    name: str = ""
    uses_baseline: bool = False
    unbiased: bool = True
    needs_f: str = "black box"
    cost: str = "1 evaluation of f per sample"
    # True: param_grads also receives ``needed`` (bool (P,)), False where theta does not move lambda
    skips_constant_params: bool = False

    # ------------------------------------------------------------------ hooks
    def check(self, dist: D.Distribution) -> None:
        """Raise :class:`UnsupportedDistribution` (via :meth:`unsupported`) if ``dist`` cannot be handled."""

    def params(self, dist: D.Distribution) -> Params:
        """The parametrisation $\\lambda$ the hook differentiates (default: :func:`distribution_params`)."""
        return distribution_params(dist)

    def param_grads(
        self,
        f: Callable,
        dist: D.Distribution,
        lam: Params,
        *,
        num_samples: int,
        baseline: object,
        generator: Optional[torch.Generator],
        create_graph: bool = False,
    ) -> Estimate:
        """Per-sample estimates w.r.t. the flat ``lam``: ``Estimate(costs, grads (N, P))``."""
        raise NotImplementedError(f"{type(self).__name__} must implement param_grads")

    def unreadable_grads(self, f, make_dist, theta, dist, *, num_samples, baseline, generator) -> Estimate:
        """Estimates w.r.t. ``theta`` (N, D) when :meth:`params` reads nothing; default: unsupported."""
        raise self.unsupported(dist, "a distribution whose parameters gradlab can read")

    def unsupported(self, dist: object, needs: str) -> UnsupportedDistribution:
        """The one message form: ``estimator='name' needs <needs>; got <distribution>``."""
        got = describe(dist) if isinstance(dist, D.Distribution) else type(dist).__name__
        return UnsupportedDistribution(f"estimator={self.name or type(self).__name__!r} needs {needs}; got {got}")

    # ------------------------------------------------------------------ shared checks
    def check_options(self, num_samples: object, baseline: object, generator: object) -> None:
        check_count(num_samples, "num_samples")
        if baseline is not None and not self.uses_baseline:
            users = sorted(n for n, e in ESTIMATORS.items() if e.uses_baseline)
            raise ValueError(
                f"baseline is not used by estimator={self.name or type(self).__name__!r}; "
                f"only by {users}, got baseline={baseline!r}"
            )
        check_generator(generator)

    def check_estimate(self, estimate: object, num_samples: int, num_params: Optional[int]) -> Estimate:
        who = f"estimator {self.name or type(self).__name__!r}"
        if not isinstance(estimate, Estimate):
            raise TypeError(f"{who}: param_grads must return an Estimate, got {type(estimate).__name__}")
        costs, grads = estimate.costs, estimate.grads
        if not isinstance(costs, torch.Tensor) or costs.dim() not in (1, 2) or costs.shape[0] != num_samples:
            got = tuple(costs.shape) if isinstance(costs, torch.Tensor) else type(costs).__name__
            raise ValueError(f"{who}: costs of shape {got}, expected ({num_samples},) or ({num_samples}, B)")
        expected = (num_samples, num_params) if num_params is not None else None
        if not isinstance(grads, torch.Tensor) or grads.dim() != 2 or (expected and tuple(grads.shape) != expected):
            got = tuple(grads.shape) if isinstance(grads, torch.Tensor) else type(grads).__name__
            raise ValueError(f"{who}: grads of shape {got}, expected shape {expected or (num_samples, 'D')}")
        return estimate

    # ------------------------------------------------------------------ public calls
    def theta_estimate(
        self,
        f: Callable,
        make_dist: Callable[[torch.Tensor], D.Distribution],
        theta: torch.Tensor,
        *,
        num_samples: int,
        baseline: object = None,
        generator: Optional[torch.Generator] = None,
        create_graph: bool = False,
    ) -> Estimate:
        """Checks, the hook and the chain rule: ``Estimate(costs, grads (N, *theta.shape))``."""
        check_callable(f, "f")
        check_callable(make_dist, "make_dist")
        theta = check_theta(theta)
        self.check_options(num_samples, baseline, generator)
        dist = check_distribution(make_dist(theta.detach()))
        self.check(dist)
        lam = {k: v.detach() if v.requires_grad else v for k, v in self.params(dist).items()}
        if not lam:
            estimate = self.unreadable_grads(
                f, make_dist, theta, dist, num_samples=num_samples, baseline=baseline, generator=generator
            )
            self.check_estimate(estimate, num_samples, theta.numel())
            return Estimate(estimate.costs, estimate.grads.reshape(num_samples, *theta.shape))
        chain = theta_chain(make_dist, theta, self.params, dist, names=list(lam), create_graph=create_graph)
        options = {"needed": chain.needed} if self.skips_constant_params else {}
        estimate = self.param_grads(
            f, dist, lam, num_samples=num_samples, baseline=baseline, generator=generator,
            create_graph=create_graph, **options,
        )
        self.check_estimate(estimate, num_samples, sum(v.numel() for v in lam.values()))
        grads = chain(estimate.grads)
        return Estimate(estimate.costs, grads.reshape(num_samples, *theta.shape))

    def per_sample_grads(
        self,
        f: Callable,
        make_dist: Callable[[torch.Tensor], D.Distribution],
        theta: torch.Tensor,
        *,
        num_samples: int,
        baseline: object = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Per-sample estimates of $\\nabla_\\theta \\mathbb E[f]$, shape ``(num_samples, *theta.shape)`` (detached)."""
        grads = self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
        ).grads
        return grads.detach() if grads.requires_grad else grads

    def surrogate_loss(
        self,
        f: Callable,
        dist: D.Distribution,
        *,
        num_samples: int,
        baseline: object = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """A scalar: value the mean cost, gradient (w.r.t. what ``dist`` was built from) the mean estimate."""
        check_callable(f, "f")
        check_distribution(dist, "dist")
        self.check_options(num_samples, baseline, generator)
        self.check(dist)
        return self.surrogate(f, dist, num_samples=num_samples, baseline=baseline, generator=generator)

    def surrogate(
        self, f: Callable, dist: D.Distribution, *, num_samples: int, baseline: object, generator
    ) -> torch.Tensor:
        r"""Generic: $\bar f + \lambda\cdot\operatorname{stop}(\bar g_\lambda) - \operatorname{stop}(\lambda\cdot\bar g_\lambda)$."""
        lam = self.params(dist)
        if not lam:
            raise self.unsupported(dist, "a distribution whose parameters gradlab can read")
        detached = {k: v.detach() for k, v in lam.items()}
        try:
            plain = rebuild(dist, detached)
        except (TypeError, ValueError):
            plain = dist
        options = {"needed": dependence_mask(lam)} if self.skips_constant_params else {}
        estimate = self.param_grads(
            f, plain, detached, num_samples=num_samples, baseline=baseline, generator=generator, **options
        )
        estimate = self.check_estimate(estimate, num_samples, sum(v.numel() for v in lam.values()))
        flat = flatten_param_dict(lam)
        term = (flat * estimate.grads.detach().mean(0).to(flat.dtype)).sum()
        return mean_cost(estimate.costs).to(term.dtype) + term - term.detach()

    def extra_repr(self) -> str:  # nn.Module subclasses print their name
        return f"name={self.name!r}"


def dependence_mask(lam: Params) -> torch.Tensor:
    """Bool (P,): which flat parameters are computed from theta (per tensor: ``requires_grad``)."""
    return torch.cat([torch.full((v.numel(),), bool(v.requires_grad)) for v in lam.values()])


def mean_cost(costs: torch.Tensor) -> torch.Tensor:
    """The Monte Carlo estimate of the objective: the mean over samples of the (item-summed) costs."""
    costs = costs.detach()
    return (costs.sum(1) if costs.dim() == 2 else costs).mean()


# =========================================================================== the registry
ESTIMATORS: Dict[str, Estimator] = {}
ALIASES: Dict[str, str] = {
    # deprecated keys equal to the sampler functions' names (gradlab.discrete.gumbel_softmax, ...)
    "gumbel_softmax": "concrete",
    "straight_through": "st",
}


def register_estimator(name: str, estimator: Estimator) -> Estimator:
    """Make ``estimator`` (an :class:`Estimator` instance) available as ``estimator=name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name in ALIASES:
        raise ValueError(f"name {name!r} is a deprecated alias of {ALIASES[name]!r}; choose another")
    if not isinstance(estimator, Estimator):
        raise TypeError(
            f"estimator must be an instance of gradlab.estimator.Estimator (subclass it and implement "
            f"param_grads), got {type(estimator).__name__}"
        )
    ESTIMATORS[name] = estimator
    return estimator


def get_estimator(estimator: Any) -> Any:
    """A registered name (or deprecated alias) or an :class:`Estimator` → the estimator object.

    Objects that only have a ``per_sample_grads`` method of the same signature are
    accepted too (the protocol before :class:`Estimator`), by :func:`gradlab.expectation_grad` only.
    """
    if isinstance(estimator, str):
        key = ALIASES.get(estimator, estimator)
        if key not in ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {sorted(ESTIMATORS)} (or a deprecated alias {sorted(ALIASES)}) "
                f"or an Estimator, got {estimator!r}"
            )
        return ESTIMATORS[key]
    if isinstance(estimator, Estimator) or callable(getattr(estimator, "per_sample_grads", None)):
        return estimator
    raise TypeError(
        f"estimator must be a registered name {sorted(ESTIMATORS)} or an Estimator, got {type(estimator).__name__}"
    )

