r"""Shared plumbing of the expectation estimators: sampling, parameters, checks.

Every estimator of $\nabla_\theta \mathbb E_{x\sim p_\theta}[f(x)]$ in gradlab works
in two steps. It first differentiates with respect to the distribution's **own
parameters** $\lambda$ (``loc``/``scale`` of a Normal, ``probs`` of a Bernoulli or
Categorical), per sample, and then chains to $\theta$ with the Jacobian
$J = \partial\lambda/\partial\theta$ of ``make_dist``, which does not depend on the
sample:

$$\hat g_\theta^{(n)} = J^\top \hat g_\lambda^{(n)}.$$

This module holds what all estimators share: drawing samples from any
``torch.distributions`` object with an explicit ``torch.Generator``, reading and
rebuilding a distribution's parameters (:func:`distribution_params`,
:func:`rebuild`, :func:`repeat_params`), the Jacobian :func:`parameter_jacobian`,
evaluating a batched cost (:func:`evaluate_costs`, :func:`per_sample`, which uses
:func:`gradlab.batch.evaluate_batch`) and input checks (built on :mod:`gradlab.checks`).
The estimators' base class is :class:`gradlab.estimator.Estimator`.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import distributions as D

from .batch import evaluate_batch
from .checks import check_count, check_finite

__all__ = [
    "check_num_samples",
    "check_distribution",
    "draw",
    "distribution_params",
    "rebuild",
    "repeat_params",
    "flatten_param_dict",
    "per_sample_param_grads",
    "parameter_jacobian",
    "evaluate_costs",
    "per_sample",
    "unwrap_independent",
    "item_count",
    "jacobian_of",
]

Params = Dict[str, torch.Tensor]
_SMALL_JACOBIAN = 8  # below this many parameters, the Jacobian is built row by row


# =========================================================================== checks
def check_num_samples(num_samples: object) -> int:
    """``num_samples`` as an int ``>= 1``; TypeError/ValueError naming it otherwise."""
    return check_count(num_samples, "num_samples")


def check_distribution(dist: object, name: str = "make_dist(theta)") -> D.Distribution:
    if not isinstance(dist, D.Distribution):
        verb = "return" if name.endswith(")") else "be"
        raise TypeError(f"{name} must {verb} a torch.distributions.Distribution, got {type(dist).__name__}")
    return dist


def unwrap_independent(dist: D.Distribution) -> D.Distribution:
    """The base of (nested) ``Independent`` wrappers: the factors of a product distribution."""
    while isinstance(dist, D.Independent):
        dist = dist.base_dist
    return dist


# =========================================================================== sampling
def _uniform(shape: torch.Size, like: torch.Tensor, generator: Optional[torch.Generator]):
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def _draw_native(dist: D.Distribution, shape: torch.Size, generator) -> Optional[torch.Tensor]:
    """Samples drawn directly from ``generator`` for the distributions gradlab knows."""
    if isinstance(dist, D.Independent):
        return _draw_native(dist.base_dist, shape, generator)
    if type(dist) is D.Normal:
        full = shape + dist.batch_shape
        eps = torch.randn(full, generator=generator, dtype=dist.loc.dtype, device=dist.loc.device)
        return dist.loc + dist.scale * eps  # differentiable in loc and scale: rsample
    if type(dist) is D.Bernoulli:
        probs = dist.probs
        return (_uniform(shape + dist.batch_shape, probs, generator) < probs).to(probs.dtype)
    if type(dist) is D.Categorical:
        probs = dist.probs.detach()
        flat = probs.reshape(-1, probs.shape[-1])
        count = int(torch.Size(shape).numel())
        idx = torch.multinomial(flat, count, replacement=True, generator=generator)  # (B, count)
        return idx.T.reshape(*shape, *dist.batch_shape)
    return None


def draw(
    dist: D.Distribution,
    sample_shape: Tuple[int, ...] = (),
    *,
    generator: Optional[torch.Generator] = None,
    reparameterized: bool = False,
) -> torch.Tensor:
    """``dist.sample(sample_shape)`` (or ``rsample``) with randomness from ``generator``.

    Normal, Bernoulli and Categorical (and ``Independent`` products of them) are
    drawn from ``generator`` directly: a Normal as ``loc + scale * randn`` (so
    the noise is the same as :func:`gradlab.es_grad`'s for the same generator state).
    Any other distribution is sampled by torch with the global generator of its
    device temporarily seeded from ``generator`` (``torch.random.fork_rng``), so the
    same generator state still gives the same numbers and the global state is
    left untouched. ``generator=None`` uses torch's global generator.
    """
    shape = torch.Size(sample_shape)
    if generator is not None:
        native = _draw_native(dist, shape, generator)
        if native is not None:
            return native if reparameterized or not native.requires_grad else native.detach()
    if generator is None:
        return dist.rsample(shape) if reparameterized else dist.sample(shape)
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    device = dist.mean.device if _has_mean(dist) else generator.device
    cuda = device.type == "cuda"
    fork = {"devices": [device], "device_type": "cuda"} if cuda else {"devices": []}
    with torch.random.fork_rng(**fork):
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        return dist.rsample(shape) if reparameterized else dist.sample(shape)


def _has_mean(dist: D.Distribution) -> bool:
    try:
        return isinstance(dist.mean, torch.Tensor)
    except NotImplementedError:
        return False


# =========================================================================== parameters
def distribution_params(dist: D.Distribution) -> Params:
    """The tensors that define ``dist``, by name (``Independent`` adds a ``base.`` prefix).

    Normal: ``loc``, ``scale``; Bernoulli, Categorical and OneHotCategorical: ``probs``; any other
    distribution: its ``arg_constraints`` that were given to it. Every tensor is
    broadcast to the distribution's batch shape (plus an event part where the
    parameter has one, e.g. the ``K`` class probabilities of a Categorical).
    """
    if isinstance(dist, D.Independent):
        return {f"base.{k}": v for k, v in distribution_params(dist.base_dist).items()}
    if type(dist) is D.Normal:
        return {"loc": dist.loc, "scale": dist.scale}
    if type(dist) in (D.Bernoulli, D.Categorical, D.OneHotCategorical):
        return {"probs": dist.probs}
    found = {k: dist.__dict__[k] for k in dist.arg_constraints if k in dist.__dict__}
    return {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}


def rebuild(dist: D.Distribution, params: Params) -> D.Distribution:
    """A distribution of ``dist``'s type with the given parameters (see :func:`distribution_params`)."""
    if isinstance(dist, D.Independent):
        base = {k[len("base."):]: v for k, v in params.items()}
        return D.Independent(rebuild(dist.base_dist, base), dist.reinterpreted_batch_ndims)
    return type(dist)(**params, validate_args=False)


def repeat_params(params: Params, num_samples: int) -> Params:
    """Each parameter repeated ``num_samples`` times along a new dim 0, as fresh leaves that require grad.

    A distribution rebuilt from them has one copy of the parameters per sample, so the
    gradient of a sum of per-sample terms w.r.t. the copies is the per-sample gradient.
    """
    return {
        k: v.detach().unsqueeze(0).repeat(num_samples, *([1] * v.dim())).requires_grad_(True)
        for k, v in params.items()
    }


def per_sample_param_grads(total: torch.Tensor, copies: Params) -> torch.Tensor:
    """Gradient of a sum of per-sample terms w.r.t. the per-sample copies (:func:`repeat_params`): (N, P)."""
    grads = torch.autograd.grad(total, list(copies.values()), allow_unused=True)
    grads = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(copies.items(), grads)}
    return flatten_param_dict(grads, batch_dims=1)


def flatten_param_dict(params: Params, batch_dims: int = 0) -> torch.Tensor:
    """Concatenate parameters into one vector (per row when ``batch_dims == 1``)."""
    if batch_dims:
        return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], dim=1)
    return torch.cat([v.reshape(-1) for v in params.values()])


def jacobian_of(flat: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """The (P, leaf.numel()) Jacobian of a flat tensor w.r.t. a leaf (rows of zeros where it does not depend on it)."""
    jac = torch.zeros(flat.numel(), leaf.numel(), dtype=flat.dtype, device=flat.device)
    if not flat.requires_grad:
        return jac
    if flat.numel() <= _SMALL_JACOBIAN:
        # A few plain backward passes cost less than setting up a vmapped one.
        for row in range(flat.numel()):
            (grad,) = torch.autograd.grad(flat[row], leaf, retain_graph=True, allow_unused=True)
            if grad is not None:
                jac[row] = grad.reshape(-1)
        return jac
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    (grad,) = torch.autograd.grad(flat, leaf, eye, is_grads_batched=True, allow_unused=True)
    return jac if grad is None else grad.reshape(flat.numel(), -1)


def parameter_jacobian(
    make_dist: Callable[[torch.Tensor], D.Distribution], theta: torch.Tensor
) -> torch.Tensor:
    r"""$J = \partial\lambda/\partial\theta$ of shape ``(P, theta.numel())``, $\lambda$ the flat parameters.

    One call of ``make_dist`` and $P$ vector-Jacobian products (batched with vmap when
    $P$ is large); parameters that do not depend on ``theta`` give rows of zeros.
    """
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        flat = flatten_param_dict(distribution_params(make_dist(leaf)))
        return jacobian_of(flat, leaf)


# =========================================================================== costs
def item_count(dist: D.Distribution) -> Optional[int]:
    """``B = dist.batch_shape[0]``, the number of independent items ``f`` may return a cost for (None if scalar)."""
    return dist.batch_shape[0] if len(dist.batch_shape) else None


def evaluate_costs(
    f: Callable, x: torch.Tensor, num_samples: int, name: str = "f", items: Optional[int] = None
) -> torch.Tensor:
    """``f(x)`` checked to be a finite tensor of shape ``(num_samples,)`` (or ``(num_samples, items)``)."""
    values = f(x)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of shape ({num_samples},), got {type(values).__name__}")
    if values.shape != (num_samples,) and (items is None or values.shape != (num_samples, items)):
        per_item = f" or ({num_samples}, {items}) (one per item)" if items is not None else ""
        raise ValueError(
            f"{name} must map a batch of {num_samples} samples (shape {tuple(x.shape)}) to costs of "
            f"shape ({num_samples},){per_item}, got shape {tuple(values.shape)}; wrap a function of one "
            "sample with gradlab.per_sample(f)"
        )
    check_finite(values.detach(), name, where="samples")
    return values


def per_sample(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Lift a cost of ONE sample to the batched form the estimators call.

    When the batch needs gradients (the pathwise estimator) the lifted function is
    ``torch.func.vmap(f)``; otherwise it is gradlab's batch evaluator
    (:func:`gradlab.batch.evaluate_batch`: vmap, or a loop for black boxes
    vmap cannot trace).
    """

    def batched(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return torch.func.vmap(lambda xi: f(xi).reshape(()))(x)
        return evaluate_batch(f, x)

    return batched

