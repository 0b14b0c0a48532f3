r"""Gradient estimators for discrete distributions in the one estimator signature.

Each estimator is an object with

``per_sample_grads(f, make_dist, theta, *, num_samples, baseline=None, generator=None)``

returning ``num_samples`` estimates of $\nabla_\theta\,\mathbb E_{b\sim p_\theta}[f(b)]$ stacked on
dim 0, for ``make_dist(theta)`` a ``Bernoulli``, ``Categorical`` or ``OneHotCategorical``
(optionally wrapped in ``Independent``). All of them work on the distribution's logits
$\lambda(\theta)$: they estimate $\nabla_\lambda$ per sample, then apply the chain rule
$\nabla_\theta = (\partial\lambda/\partial\theta)^\top\nabla_\lambda$ to every sample at once.

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
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

from .checks import check_callable, check_count, check_tensor
from .discrete import (
    BernoulliStraightThrough,
    CategoricalStraightThrough,
    check_generator,
    check_tau,
    hard_with_soft_grad,
    perturb,
    uniform,
)
from .distributions import check_distribution, evaluate_costs, unwrap_independent
from .expectation import register_estimator

__all__ = [
    "REBAR",
    "RELAX",
    "ControlVariateEstimator",
    "GumbelSoftmaxEstimator",
    "StraightThroughEstimator",
    "discrete_logits",
]


# --------------------------------------------------------------------------- the distribution's logits
def discrete_logits(dist: Distribution) -> Tuple[str, torch.Tensor]:
    """``(kind, logits)`` of a Bernoulli / Categorical / OneHotCategorical (``Independent`` is unwrapped).

    ``kind`` is ``"bernoulli"``, ``"categorical"`` (samples are indices) or ``"onehot"``.
    Categorical logits come normalised (log-probabilities), as torch stores them.
    """
    base = unwrap_independent(check_distribution(dist))
    if isinstance(base, Bernoulli):
        return "bernoulli", base.logits
    if isinstance(base, OneHotCategorical):
        return "onehot", base.logits
    if isinstance(base, Categorical):
        return "categorical", base.logits
    raise TypeError(
        "make_dist(theta) must return a Bernoulli, Categorical or OneHotCategorical distribution "
        f"(optionally Independent), got {type(dist).__name__}"
    )


def check_call(f: object, make_dist: object, theta: object, num_samples: object) -> torch.Tensor:
    check_callable(f, "f")
    check_callable(make_dist, "make_dist")
    check_count(num_samples, "num_samples")
    return check_tensor(theta, "theta")


def costs(f: Callable, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``f(x)``, checked to be finite with one cost per sample, shape ``(num_samples,)``."""
    return evaluate_costs(f, x, num_samples)


def chain_to_theta(lam: torch.Tensor, theta: torch.Tensor, g_lam: torch.Tensor, create_graph: bool) -> torch.Tensor:
    r"""Per-sample $(\partial\lambda/\partial\theta)^\top g_i$ for a batch of $g_i$ (one vmapped backward pass)."""
    if lam is theta:
        return g_lam
    (g,) = torch.autograd.grad(
        lam, theta, grad_outputs=g_lam, is_grads_batched=True, create_graph=create_graph, allow_unused=True
    )
    return torch.zeros_like(g_lam[:1]).expand(g_lam.shape[0], *theta.shape) if g is None else g


class DiscreteEstimator(nn.Module):
    """Common frame: logits once, per-sample logits as a leaf, an estimate of grad wrt them, chain rule to theta."""

    def lambda_grads(self, f, kind, lam, *, generator, create_graph) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def estimate(self, f, make_dist, theta, *, num_samples, generator=None, create_graph=False) -> torch.Tensor:
        theta = check_call(f, make_dist, theta, num_samples)
        generator = check_generator(generator)
        with torch.enable_grad():
            theta_leaf = theta.detach().requires_grad_(True)
            kind, lam = discrete_logits(make_dist(theta_leaf))
            lam_rep = lam.detach().expand(num_samples, *lam.shape).clone().requires_grad_(True)
            g_lam = self.lambda_grads(f, kind, lam_rep, generator=generator, create_graph=create_graph)
            g = chain_to_theta(lam, theta_leaf, g_lam, create_graph)
        return g.reshape(num_samples, *theta.shape)

    def per_sample_grads(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        make_dist: Callable[[torch.Tensor], Distribution],
        theta: torch.Tensor,
        *,
        num_samples: int,
        baseline: Optional[object] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """``num_samples`` estimates of the gradient of ``E f(b)``, shape ``(num_samples, *theta.shape)``."""
        if baseline is not None:
            raise ValueError(f"baseline must be None for {type(self).__name__}, got {baseline!r}")
        return self.estimate(f, make_dist, theta, num_samples=num_samples, generator=generator).detach()


def relax_sample(x: torch.Tensor, kind: str, tau) -> torch.Tensor:
    r"""$\sigma(z/\tau)$ for Bernoulli variables, $\mathrm{softmax}(z/\tau)$ over the last dim otherwise."""
    if kind == "bernoulli":
        return torch.sigmoid(x / tau)
    return torch.softmax(x / tau, dim=-1)


def check_relaxable(kind: str, who: str) -> None:
    if kind == "categorical":
        raise ValueError(
            f"{who} evaluates f on relaxed samples, which a Categorical's index samples cannot express: "
            "use make_dist returning OneHotCategorical (f then receives one-hot vectors and simplex points)"
        )


# --------------------------------------------------------------------------- the relaxations' estimators
class GumbelSoftmaxEstimator(DiscreteEstimator):
    r"""Pathwise gradient of the *relaxed* objective $\mathbb E[f(\sigma_\tau(\lambda + \text{noise}))]$ (biased for the discrete one)."""

    def __init__(self, tau: float = 0.5):
        super().__init__()
        self.tau = check_tau(tau)

    def lambda_grads(self, f, kind, lam, *, generator, create_graph):
        check_relaxable(kind, "GumbelSoftmaxEstimator")
        relaxed = relax_sample(perturb(lam, kind, generator), kind, self.tau)
        (g,) = torch.autograd.grad(costs(f, relaxed, lam.shape[0]).sum(), lam, create_graph=create_graph)
        return g


class StraightThroughEstimator(DiscreteEstimator):
    r"""Straight-through: $f$ at an exact sample $b$, backward as if $b$ were $p$ (``"identity"``) or the relaxation (``"gumbel"``)."""

    def __init__(self, method: str = "identity", tau: float = 1.0):
        super().__init__()
        if method not in ("identity", "gumbel"):
            raise ValueError(f"method must be 'identity' or 'gumbel', got {method!r}")
        self.method = method
        self.tau = check_tau(tau)

    def lambda_grads(self, f, kind, lam, *, generator, create_graph):
        check_relaxable(kind, "StraightThroughEstimator")
        if self.method == "gumbel":
            b = hard_with_soft_grad(relax_sample(perturb(lam, kind, generator), kind, self.tau), kind)
        elif kind == "bernoulli":
            b = BernoulliStraightThrough.apply(torch.sigmoid(lam), uniform(lam.shape, like=lam, generator=generator))
        else:
            index = perturb(lam.detach(), kind, generator).argmax(dim=-1)
            b = CategoricalStraightThrough.apply(torch.softmax(lam, dim=-1), index)
        (g,) = torch.autograd.grad(costs(f, b, lam.shape[0]).sum(), lam, create_graph=create_graph)
        return g


# --------------------------------------------------------------------------- REBAR and RELAX
def sample_z_b_ztilde(kind: str, lam: torch.Tensor, generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""$z$, the hard sample $b$ as $f$ takes it, the score $\nabla_\lambda\log p(b)$, and $\tilde z \sim p(z\mid b)$.

    Bernoulli ($z = \lambda + \operatorname{logit} u$, $b = \mathbb 1[z>0]$): given $b = 1$, $u$ is uniform on
    $(1-p, 1)$, which gives $\tilde z = \operatorname{softplus}(\lambda + \log v) - \log(1 - v)$;
    given $b = 0$ the mirror image, $\tilde z = -[\operatorname{softplus}(-\lambda + \log v) - \log(1 - v)]$.

    Categorical ($z_k = \lambda_k + g_k$, $\lambda$ normalised, $b = \arg\max z$): given $b$, the maximum
    $\tilde z_b = -\log(-\log v_b)$ is standard Gumbel and $\tilde z_k = -\log(-\log v_k\, e^{-\lambda_k} - \log v_b)$
    for $k \ne b$ (Tucker et al. 2017, appendix), computed with ``logaddexp``.
    """
    if kind == "bernoulli":
        z = perturb(lam, kind, generator)
        v = uniform(lam.shape, like=lam, generator=generator)
        b = (z.detach() > 0).to(lam.dtype)
        s = 2.0 * b - 1.0
        z_tilde = s * (F.softplus(s * lam + torch.log(v)) - torch.log1p(-v))
        score = b - torch.sigmoid(lam.detach())
        return z, b, score, z_tilde
    lam = torch.log_softmax(lam, dim=-1)
    z = perturb(lam, kind, generator)
    v = uniform(lam.shape, like=lam, generator=generator)
    index = z.detach().argmax(dim=-1, keepdim=True)
    onehot = torch.zeros_like(lam).scatter_(-1, index, 1.0)
    log_e = torch.log(-torch.log(v))  # log of the standard exponential -log v
    log_e_b = log_e.gather(-1, index)
    z_others = -torch.logaddexp(log_e - lam, log_e_b)
    z_tilde = torch.where(onehot.bool(), -log_e_b, z_others)
    score = onehot - torch.softmax(lam.detach(), dim=-1)
    b = onehot if kind == "onehot" else index.squeeze(-1)
    return z, b, score, z_tilde


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
    parameters; with the surrogate's, they are adapted by :meth:`adapt_step` / :meth:`grads_and_variance`.
    The estimate is unbiased for every value of them.
    """

    def __init__(self, surrogate: Optional[Callable], *, rebar_term: bool, eta: float, tau: float):
        super().__init__()
        check_tau(tau)
        if surrogate is not None and not callable(surrogate):
            raise TypeError(f"surrogate must be an nn.Module or callable, got {type(surrogate).__name__}")
        if surrogate is None and not rebar_term:
            raise ValueError("a control variate needs the REBAR term, a surrogate, or both")
        self.surrogate = surrogate
        self.rebar_term = bool(rebar_term)
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.log_tau = nn.Parameter(torch.tensor(float(tau)).log())

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def control_variate(self, f: Callable, kind: str, z: torch.Tensor) -> torch.Tensor:
        """$c(z)$ for a batch of $z$, shape ``(num_samples,)``."""
        n = z.shape[0]
        out = torch.zeros(n, dtype=z.dtype, device=z.device)
        if self.rebar_term:
            out = out + self.eta.to(z.dtype) * costs(f, relax_sample(z, kind, self.tau.to(z.dtype)), n)
        if self.surrogate is not None:
            r = self.surrogate(z.to(module_dtype(self.surrogate, z.dtype)))
            out = out + r.to(z.dtype).reshape(n)
        return out

    def lambda_grads(self, f, kind, lam, *, generator, create_graph):
        if self.rebar_term:
            check_relaxable(kind, type(self).__name__)
        n = lam.shape[0]
        z, b, score, z_tilde = sample_z_b_ztilde(kind, lam, generator)
        f_b = costs(f, b, n).detach()
        c_z = self.control_variate(f, kind, z)
        c_tilde = self.control_variate(f, kind, z_tilde)
        (g_c,) = torch.autograd.grad((c_z - c_tilde).sum(), lam, create_graph=create_graph)
        weight = (f_b - c_tilde).reshape(n, *([1] * (lam.dim() - 1)))
        g = weight * score + g_c
        return g if create_graph else g.detach()

    def grads_and_variance(
        self, f, make_dist, theta, *, num_samples: int, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Per-sample estimates (detached) and $\frac1N\sum_i\|\hat g_i\|^2$, differentiable in the CV parameters.

        Because $\hat g$ is unbiased for every parameter value, $\nabla_\phi\,\mathbb E\|\hat g\|^2
        = \nabla_\phi \operatorname{Var}\hat g$: backpropagating this loss and stepping an optimizer
        over ``self.parameters()`` is the variance adaptation of Tucker et al. and Grathwohl et al.
        """
        g = self.estimate(f, make_dist, theta, num_samples=num_samples, generator=generator, create_graph=True)
        loss = g.reshape(num_samples, -1).pow(2).sum(dim=1).mean()
        return g.detach(), loss

    def adapt_step(self, optimizer: torch.optim.Optimizer, f, make_dist, theta, *, num_samples: int, generator=None):
        """One variance-minimising step of ``optimizer`` (over this estimator's parameters); returns the estimates."""
        g, loss = self.grads_and_variance(f, make_dist, theta, num_samples=num_samples, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return g


class REBAR(ControlVariateEstimator):
    r"""REBAR (Tucker et al. 2017): $c(z) = \eta\, f(\sigma_\tau(z))$ with learnable $\eta$ and $\log\tau$."""

    def __init__(self, eta: float = 1.0, tau: float = 0.5):
        super().__init__(None, rebar_term=True, eta=eta, tau=tau)


class RELAX(ControlVariateEstimator):
    r"""RELAX (Grathwohl et al. 2018): $c(z) = \eta\, f(\sigma_\tau(z)) + r_\phi(z)$ with a learned $r_\phi$.

    ``surrogate`` is $r_\phi$: a module (or callable) mapping $z$ of shape ``(num_samples, *event)`` to
    ``(num_samples,)`` or ``(num_samples, 1)``. ``None`` builds a one-hidden-layer network with
    ``hidden`` ELU units on the flattened $z$ (``num_inputs`` features; ``None`` infers them at the
    first call, so call the estimator once before creating an optimizer over its parameters); its
    output layer starts at zero, so RELAX starts as REBAR. ``rebar_term=False`` drops
    $\eta f(\sigma_\tau(z))$, and $f$ then need not accept relaxed inputs (a black-box $f$ is fine).
    """

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


register_estimator("gumbel_softmax", GumbelSoftmaxEstimator(0.5))
register_estimator("straight_through", StraightThroughEstimator("identity"))
