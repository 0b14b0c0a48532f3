r"""Gradient estimators for discrete distributions, in the one protocol (:mod:`gradlab.estimator`).

Each is a :class:`DiscreteEstimator`: an :class:`~gradlab.estimator.Estimator` whose
parameters $\lambda$ are the **logits** of ``make_dist(theta)`` (a ``Bernoulli``,
``Categorical`` or ``OneHotCategorical``, optionally wrapped in ``Independent``), and an
``nn.Module`` for the learnable parts of REBAR and RELAX. The hook :meth:`~DiscreteEstimator.lambda_grads`
estimates $\nabla_\lambda$ per sample; the base class applies the chain rule
$\nabla_\theta = (\partial\lambda/\partial\theta)^\top\nabla_\lambda$ to every sample at once.
Registered: ``"concrete"`` (Gumbel-softmax, $\tau = 0.5$), ``"st"`` (straight-through,
identity), ``"rebar"`` ($\eta = 1$, $\tau = 0.5$) and ``"relax"`` (a fixed per-coordinate
network $r_\phi$); ``"gumbel_softmax"`` and ``"straight_through"`` are deprecated aliases.

**REBAR / RELAX** (Tucker et al. 2017; Grathwohl et al. 2018). With $z = \lambda + \text{noise}$
the continuous variable behind the sample, $b = H(z)$ (a threshold or an argmax), and
$\tilde z \sim p(z \mid b)$ drawn by reparameterisation, for any differentiable control
variate $c$

.. math::

    \hat g = \big[f(b) - c(\tilde z)\big]\,\nabla_\theta \log p_\theta(b)
             + \nabla_\theta c(z) - \nabla_\theta c(\tilde z)

is unbiased: $\mathbb E[\nabla c(z)] = \nabla\mathbb E[c(z)]$ (reparameterisation), and
$\mathbb E[c(\tilde z)\nabla\log p(b)] + \mathbb E[\nabla c(\tilde z)] = \nabla\,\mathbb E_b\,\mathbb E_{\tilde z\mid b}[c(\tilde z)]
= \nabla\mathbb E[c(z)]$ (score function for $b$, reparameterisation for $\tilde z$ given $b$),
so the two correction terms cancel in expectation *whatever* $c$ is. REBAR takes
$c(z) = \eta\, f(\sigma_\tau(z))$ with the relaxation $\sigma_\tau$; RELAX adds a learned
$r_\phi(z)$. Their parameters are then tuned to minimise $\mathbb E\|\hat g\|^2$, which
equals the variance plus the (fixed) squared gradient.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, OneHotCategorical

from .checks import check_count
from .discrete import (
    BernoulliStraightThrough,
    CategoricalStraightThrough,
    check_tau,
    hard_with_soft_grad,
    perturb,
    sample_z_b_ztilde,
    uniform,
)
from .distributions import check_distribution, evaluate_costs, item_count, unwrap_independent
from .estimator import Estimate, Estimator, UnsupportedDistribution, describe, register_estimator

__all__ = [
    "REBAR",
    "RELAX",
    "DiscreteEstimator",
    "ControlVariateEstimator",
    "GumbelSoftmaxEstimator",
    "StraightThroughEstimator",
    "CoordinateSurrogate",
    "discrete_logits",
    "sample_z_b_ztilde",
]

DISCRETE = "a Bernoulli, Categorical or OneHotCategorical distribution (optionally Independent)"


# --------------------------------------------------------------------------- the distribution's logits
def discrete_kind(dist: Distribution) -> Optional[str]:
    """``"bernoulli"``, ``"onehot"``, ``"categorical"`` (samples are indices) or None."""
    base = unwrap_independent(dist)
    if isinstance(base, Bernoulli):
        return "bernoulli"
    if isinstance(base, OneHotCategorical):
        return "onehot"
    if isinstance(base, Categorical):
        return "categorical"
    return None


def discrete_logits(dist: Distribution) -> Tuple[str, torch.Tensor]:
    """``(kind, logits)`` of a Bernoulli / Categorical / OneHotCategorical (``Independent`` is unwrapped).

    Categorical logits come normalised (log-probabilities), as torch stores them.
    Raises :class:`~gradlab.estimator.UnsupportedDistribution` for any other distribution.
    """
    kind = discrete_kind(check_distribution(dist))
    if kind is None:
        raise UnsupportedDistribution(f"make_dist(theta) must be {DISCRETE}; got {describe(dist)}")
    return kind, unwrap_independent(dist).logits


def costs(f: Callable, x: torch.Tensor, num_samples: int, items: Optional[int] = None) -> torch.Tensor:
    """``f(x)``, checked to be finite with one cost per sample (N,) or per sample and item (N, B)."""
    return evaluate_costs(f, x, num_samples, items=items)


def total(values: torch.Tensor) -> torch.Tensor:
    """Per-item costs (N, B) summed to one per sample (N,): the joint objective, estimated unbiasedly."""
    return values.sum(1) if values.dim() == 2 else values


class DiscreteEstimator(Estimator, nn.Module):
    """Estimators over the logits of a discrete distribution (hook: :meth:`lambda_grads`)."""

    relaxes = True  # evaluates f on relaxed inputs (so Categorical index samples are unsupported)
    needs_f = "differentiable on relaxed inputs"

    def __init__(self):
        nn.Module.__init__(self)

    def check(self, dist: Distribution) -> None:
        kind = discrete_kind(dist)
        if kind is None:
            raise self.unsupported(dist, DISCRETE)
        if kind == "categorical" and self.relaxes:
            raise self.unsupported(
                dist, "f on relaxed samples, which a Categorical's index samples cannot express: use "
                "OneHotCategorical (f then receives one-hot vectors and simplex points)"
            )

    def params(self, dist: Distribution) -> dict:
        """``{"logits": ...}`` (``"base.logits"`` under each ``Independent``, as :func:`~gradlab.distributions.rebuild` reads)."""
        prefix = ""
        while isinstance(dist, Independent):
            dist, prefix = dist.base_dist, prefix + "base."
        return {prefix + "logits": dist.logits}

    def lambda_grads(self, f, kind, lam, *, generator, create_graph, items=None) -> Estimate:  # pragma: no cover
        """``Estimate(costs, grads shaped like lam)`` for per-sample logits ``lam`` (N, *logits.shape), a leaf."""
        raise NotImplementedError

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        kind = discrete_kind(dist)
        (logits,) = lam.values()
        with torch.enable_grad():
            lam_rep = logits.expand(num_samples, *logits.shape).clone().requires_grad_(True)
            est = self.lambda_grads(f, kind, lam_rep, generator=generator, create_graph=create_graph,
                                    items=item_count(dist))
        return Estimate(est.costs.detach(), est.grads.reshape(num_samples, -1))

    def estimate(self, f, make_dist, theta, *, num_samples, generator=None, create_graph=False) -> torch.Tensor:
        """Per-sample estimates ``(N, *theta.shape)``; with ``create_graph`` differentiable in this module's parameters."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, generator=generator, create_graph=create_graph
        ).grads


def relax_sample(x: torch.Tensor, kind: str, tau) -> torch.Tensor:
    r"""$\sigma(z/\tau)$ for Bernoulli variables, $\mathrm{softmax}(z/\tau)$ over the last dim otherwise."""
    if kind == "bernoulli":
        return torch.sigmoid(x / tau)
    return torch.softmax(x / tau, dim=-1)


# --------------------------------------------------------------------------- the relaxations' estimators
class GumbelSoftmaxEstimator(DiscreteEstimator):
    r"""Pathwise gradient of the *relaxed* objective $\mathbb E[f(\sigma_\tau(\lambda + \text{noise}))]$ (biased for the discrete one).

    Registered as ``"concrete"`` with $\tau = 0.5$ (deprecated alias ``"gumbel_softmax"``).
    """

    name = "concrete"
    unbiased = False
    cost = "1 evaluation of f (at a relaxed sample) per sample and one batched backward pass"

    def __init__(self, tau: float = 0.5):
        super().__init__()
        self.tau = check_tau(tau)

    def lambda_grads(self, f, kind, lam, *, generator, create_graph, items=None) -> Estimate:
        relaxed = relax_sample(perturb(lam, kind, generator), kind, self.tau)
        values = costs(f, relaxed, lam.shape[0], items)
        (g,) = torch.autograd.grad(values.sum(), lam, create_graph=create_graph)
        return Estimate(values, g)


class StraightThroughEstimator(DiscreteEstimator):
    r"""Straight-through: $f$ at an exact sample $b$, backward as if $b$ were $p$ (``"identity"``) or the relaxation (``"gumbel"``).

    Registered as ``"st"`` with ``method="identity"`` (deprecated alias ``"straight_through"``).
    """

    name = "st"
    unbiased = False
    needs_f = "differentiable (on [0, 1] / the simplex)"
    cost = "1 evaluation of f per sample and one batched backward pass"

    def __init__(self, method: str = "identity", tau: float = 1.0):
        super().__init__()
        if method not in ("identity", "gumbel"):
            raise ValueError(f"method must be 'identity' or 'gumbel', got {method!r}")
        self.method = method
        self.tau = check_tau(tau)

    def lambda_grads(self, f, kind, lam, *, generator, create_graph, items=None) -> Estimate:
        if self.method == "gumbel":
            b = hard_with_soft_grad(relax_sample(perturb(lam, kind, generator), kind, self.tau), kind)
        elif kind == "bernoulli":
            b = BernoulliStraightThrough.apply(torch.sigmoid(lam), uniform(lam.shape, like=lam, generator=generator))
        else:
            index = perturb(lam.detach(), kind, generator).argmax(dim=-1)
            b = CategoricalStraightThrough.apply(torch.softmax(lam, dim=-1), index)
        values = costs(f, b, lam.shape[0], items)
        (g,) = torch.autograd.grad(values.sum(), lam, create_graph=create_graph)
        return Estimate(values, g)


# --------------------------------------------------------------------------- REBAR and RELAX
def module_dtype(module: object, default: torch.dtype) -> torch.dtype:
    """The dtype of a module's first initialised floating parameter (``default`` for plain callables)."""
    if isinstance(module, nn.Module):
        for param in module.parameters():
            if not isinstance(param, nn.parameter.UninitializedParameter) and param.is_floating_point():
                return param.dtype
    return default


class ControlVariateEstimator(DiscreteEstimator):
    r"""The REBAR/RELAX estimator for the control variate $c(z) = \eta\, f(\sigma_\tau(z)) + r_\phi(z)$.

    Either term may be absent (``rebar_term=False``; ``surrogate=None``). $\eta$ and $\log\tau$ are
    parameters; with the network's ($r_\phi$, the attribute ``r_phi``), they are adapted by
    :meth:`adapt_step` / :meth:`grads_and_variance`. The estimate is unbiased for every value of them.
    """

    unbiased = True
    cost = "3 evaluations of f per sample (at b, sigma(z), sigma(z~)) and one batched backward pass"

    def __init__(self, surrogate: Optional[Callable], *, rebar_term: bool, eta: float, tau: float):
        super().__init__()
        check_tau(tau)
        if surrogate is not None and not callable(surrogate):
            raise TypeError(f"surrogate must be an nn.Module or callable, got {type(surrogate).__name__}")
        if surrogate is None and not rebar_term:
            raise ValueError("a control variate needs the REBAR term, a surrogate, or both")
        self.r_phi = surrogate
        self.rebar_term = bool(rebar_term)
        self.relaxes = self.rebar_term
        if not self.rebar_term:
            self.needs_f = "black box"
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.log_tau = nn.Parameter(torch.tensor(float(tau)).log())

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def control_variate(self, f: Callable, kind: str, z: torch.Tensor, items: Optional[int] = None) -> torch.Tensor:
        """$c(z)$ for a batch of $z$, shape ``(num_samples,)``."""
        n = z.shape[0]
        out = torch.zeros(n, dtype=z.dtype, device=z.device)
        if self.rebar_term:
            relaxed = relax_sample(z, kind, self.tau.to(device=z.device, dtype=z.dtype))
            out = out + self.eta.to(device=z.device, dtype=z.dtype) * total(costs(f, relaxed, n, items))
        if self.r_phi is not None:
            r = self.r_phi(z.to(module_dtype(self.r_phi, z.dtype)))
            out = out + r.to(z.dtype).reshape(n)
        return out

    def shared_forward(self, f: Callable, kind: str, b: torch.Tensor, z: torch.Tensor, z_tilde: torch.Tensor,
                       items: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""$f(b)$ (detached), $c(z)$ and $c(\tilde z)$ from ONE call of ``f`` on the $3N$ points
        $b, \sigma_\tau(z), \sigma_\tau(\tilde z)$ and one call of $r_\phi$ on $z, \tilde z$ (the same numbers as
        :meth:`control_variate` at $z$ and at $\tilde z$)."""
        n = z.shape[0]
        both = torch.cat([z, z_tilde])
        out = torch.zeros(2 * n, dtype=z.dtype, device=z.device)
        if self.rebar_term:
            relaxed = relax_sample(both, kind, self.tau.to(device=z.device, dtype=z.dtype))
            every = costs(f, torch.cat([b.to(relaxed.dtype), relaxed]), 3 * n, items)
            values = every[:n].detach()
            out = out + self.eta.to(device=z.device, dtype=z.dtype) * total(every[n:])
        else:
            values = costs(f, b, n, items).detach()
        if self.r_phi is not None:
            r = self.r_phi(both.to(module_dtype(self.r_phi, z.dtype)))
            out = out + r.to(z.dtype).reshape(2 * n)
        return values, out[:n], out[n:]

    def lambda_grads(self, f, kind, lam, *, generator, create_graph, items=None) -> Estimate:
        n = lam.shape[0]
        z, b, score, z_tilde = sample_z_b_ztilde(kind, lam, generator)
        values, c_z, c_tilde = self.shared_forward(f, kind, b, z, z_tilde, items)
        (g_c,) = torch.autograd.grad((c_z - c_tilde).sum(), lam, create_graph=create_graph)
        weight = (total(values) - c_tilde).reshape(n, *([1] * (lam.dim() - 1)))
        g = weight * score + g_c
        return Estimate(values, g if create_graph else g.detach())

    def grads_and_variance(
        self, f, make_dist, theta, *, num_samples: int, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Per-sample estimates (detached) and $\frac1N\sum_i\|\hat g_i\|^2$, differentiable in the CV parameters.

        Because $\hat g$ is unbiased for every parameter value, $\nabla_\phi\,\mathbb E\|\hat g\|^2
        = \nabla_\phi \operatorname{Var}\hat g$: backpropagating this loss and stepping an optimizer
        over ``self.parameters()`` is the variance adaptation of Tucker et al. and Grathwohl et al.
        The estimate returned is the one the loss was computed from (one forward pass for both).
        """
        g = self.estimate(f, make_dist, theta, num_samples=num_samples, generator=generator, create_graph=True)
        loss = g.reshape(num_samples, -1).pow(2).sum(dim=1).mean()
        return g.detach(), loss

    def adapt_step(self, optimizer: torch.optim.Optimizer, f, make_dist, theta, *, num_samples: int, generator=None):
        """One variance-minimising step of ``optimizer`` (over this estimator's parameters); returns the estimates.

        The estimates returned are those of the step (computed before it): use them as the
        gradient estimate of this iteration, instead of a second call of :meth:`per_sample_grads`.
        """
        g, loss = self.grads_and_variance(f, make_dist, theta, num_samples=num_samples, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return g


class REBAR(ControlVariateEstimator):
    r"""REBAR (Tucker et al. 2017): $c(z) = \eta\, f(\sigma_\tau(z))$ with learnable $\eta$ and $\log\tau$.

    Registered as ``"rebar"`` ($\eta = 1$, $\tau = 0.5$, never adapted).
    """

    name = "rebar"

    def __init__(self, eta: float = 1.0, tau: float = 0.5):
        super().__init__(None, rebar_term=True, eta=eta, tau=tau)


class CoordinateSurrogate(nn.Module):
    r"""$r_\phi(z) = \sum_i \mathrm{MLP}(z_i)$: one small network applied to every coordinate of $z$, any shape.

    Initialised from ``seed`` (the global random state is left untouched); ``zero_output=True``
    starts the output layer at zero (then RELAX starts as REBAR).
    """

    def __init__(self, hidden: int = 8, *, seed: int = 0, zero_output: bool = False):
        super().__init__()
        check_count(hidden, "hidden")
        with torch.random.fork_rng(devices=[]):  # nn.Linear's default init draws globally: keep that state
            self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                bound = 1.0 / layer.in_features**0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            if zero_output:
                self.net[2].weight.zero_()
                self.net[2].bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1)).sum((1, 2))


class RELAX(ControlVariateEstimator):
    r"""RELAX (Grathwohl et al. 2018): $c(z) = \eta\, f(\sigma_\tau(z)) + r_\phi(z)$ with a learned $r_\phi$.

    ``surrogate`` is $r_\phi$ (kept as the attribute ``r_phi``): a module (or callable) mapping $z$ of
    shape ``(num_samples, *event)`` to ``(num_samples,)`` or ``(num_samples, 1)``. ``None`` builds a
    one-hidden-layer network with ``hidden`` ELU units on the flattened $z$ (``num_inputs`` features;
    ``None`` infers them at the first call, so call the estimator once before creating an optimizer
    over its parameters); its output layer starts at zero, so RELAX starts as REBAR.
    ``rebar_term=False`` drops $\eta f(\sigma_\tau(z))$, and $f$ then need not accept relaxed inputs
    (a black-box $f$ is fine). Registered as ``"relax"`` with a fixed :class:`CoordinateSurrogate`.
    """

    name = "relax"

    def __init__(
        self,
        surrogate: Optional[Callable] = None,
        *,
        num_inputs: Optional[int] = None,
        hidden: int = 16,
        rebar_term: bool = True,
        eta: float = 1.0,
        tau: float = 0.5,
    ):
        if surrogate is None:
            check_count(hidden, "hidden")
            first = nn.Linear(check_count(num_inputs, "num_inputs"), hidden) if num_inputs is not None else nn.LazyLinear(hidden)
            last = nn.Linear(hidden, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            surrogate = nn.Sequential(nn.Flatten(), first, nn.ELU(), last)
        super().__init__(surrogate, rebar_term=rebar_term, eta=eta, tau=tau)


register_estimator("concrete", GumbelSoftmaxEstimator(0.5))
register_estimator("st", StraightThroughEstimator("identity"))
register_estimator("rebar", REBAR())
register_estimator("relax", RELAX(CoordinateSurrogate(8, seed=0)))
