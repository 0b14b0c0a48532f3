r"""Weak derivatives: $\partial_{\lambda} p = c\,(p^+ - p^-)$ for one parameter of one factor.

Each rule returns the constant $c$ and the coupled pair $(x^+, x^-)$ that replaces one
coordinate of a shared sample $x$; the measure-valued estimator
(:mod:`gradlab.measure_valued`) evaluates $f$ at both and takes $c\,(f(x^+) - f(x^-))$.

| factor | parameter | $c$ | $x^+$ | $x^-$ |
|---|---|---|---|---|
| Normal | ``loc`` $\mu$ | $1/(\sigma\sqrt{2\pi})$ | $\mu + \sigma W$ | $\mu - \sigma W$, $W\sim$ Weibull($\sqrt2$, 2) |
| Normal | ``scale`` $\sigma$ | $1/\sigma$ | $\mu + \sigma M$ | $\mu + \sigma M U$, $M\sim$ double-sided Maxwell |
| Bernoulli | ``probs`` $p$ | $1$ | $1$ | $0$ |
| Poisson | ``rate`` $\lambda$ | $1$ | $x_j + 1$ | $x_j$ |
| Exponential | ``rate`` $\lambda$ | $1/\lambda$ | $x_j$ | $x_j + E$, $E\sim\mathrm{Exp}(\lambda)$ |
| Gamma | ``rate`` $\beta$ (shape $\alpha$ fixed) | $\alpha/\beta$ | $x_j$ | $x_j + E$, $E\sim\mathrm{Exp}(\beta)$ |

Derivations. *Poisson*: $\partial_\lambda\, e^{-\lambda}\lambda^k/k! = p(k-1) - p(k)$, so
$p^+$ is the Poisson law shifted by one; coupled through the same draw. *Gamma (rate)*:
$\partial_\beta p(x;\alpha,\beta) = (\alpha/\beta - x)\,p(x;\alpha,\beta)$ and
$x\,p(x;\alpha,\beta) = (\alpha/\beta)\,p(x;\alpha+1,\beta)$, so
$\partial_\beta p = (\alpha/\beta)\,[\mathrm{Gamma}(\alpha,\beta) - \mathrm{Gamma}(\alpha+1,\beta)]$;
a $\mathrm{Gamma}(\alpha+1,\beta)$ draw is a $\mathrm{Gamma}(\alpha,\beta)$ draw plus an
independent $\mathrm{Exp}(\beta)$ one, which couples the pair. *Exponential* is the case
$\alpha = 1$. The Normal and Bernoulli rows are derived in Chapter 4.

In the rules below $x^+$ or $x^-$ reuses the shared sample's own coordinate $x_j$ where it
has the right law (Poisson, Exponential, Gamma), so no second draw of that law is needed.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import distributions as D

__all__ = ["weibull", "double_sided_maxwell", "RULES", "weak_derivative", "supported_parameters"]

Rule = Callable[..., Tuple[torch.Tensor, torch.Tensor]]


def weibull(shape, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    r"""Weibull(scale $\sqrt 2$, concentration 2) draws, $\sqrt{-2\log V}$ with $V\sim U(0,1]$."""
    uniform = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.sqrt(-2.0 * torch.log1p(-uniform))


def double_sided_maxwell(shape, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    r"""Double-sided Maxwell draws (density $m^2\varphi(m)$): $\pm$ the norm of 3 standard normals."""
    normals = torch.randn((*shape, 3), generator=generator, dtype=like.dtype, device=like.device)
    sign = torch.where(normals[..., 0] < 0, -1.0, 1.0).to(like.dtype)
    return sign * normals.norm(dim=-1)


def _exponential(shape, rate: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    uniform = torch.rand(shape, generator=generator, dtype=rate.dtype, device=rate.device)
    return -torch.log1p(-uniform) / rate


# Every rule: (params of the factor at the chosen coordinates, the shared sample's coordinates
# x_j of shape (N, c), generator) -> (c of shape (c,), states of shape (N, c, 2)).
def _normal_loc(params, x_j, generator):
    mu, sigma = params["loc"], params["scale"]
    w = weibull(x_j.shape, mu, generator)
    return 1.0 / (sigma * math.sqrt(2 * math.pi)), torch.stack([mu + sigma * w, mu - sigma * w], dim=-1)


def _normal_scale(params, x_j, generator):
    mu, sigma = params["loc"], params["scale"]
    m = double_sided_maxwell(x_j.shape, mu, generator)
    u = torch.rand(m.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return 1.0 / sigma, torch.stack([mu + sigma * m, mu + sigma * m * u], dim=-1)


def _bernoulli_probs(params, x_j, generator):
    p = params["probs"]
    one, zero = torch.ones_like(x_j), torch.zeros_like(x_j)
    return torch.ones_like(p), torch.stack([one, zero], dim=-1)


def _poisson_rate(params, x_j, generator):
    return torch.ones_like(params["rate"]), torch.stack([x_j + 1.0, x_j], dim=-1)


def _exponential_rate(params, x_j, generator):
    rate = params["rate"]
    extra = _exponential(x_j.shape, rate.expand(x_j.shape), generator)
    return 1.0 / rate, torch.stack([x_j, x_j + extra], dim=-1)


def _gamma_rate(params, x_j, generator):
    alpha, beta = params["concentration"], params["rate"]
    extra = _exponential(x_j.shape, beta.expand(x_j.shape), generator)
    return alpha / beta, torch.stack([x_j, x_j + extra], dim=-1)


RULES: Dict[Tuple[type, str], Rule] = {
    (D.Normal, "loc"): _normal_loc,
    (D.Normal, "scale"): _normal_scale,
    (D.Bernoulli, "probs"): _bernoulli_probs,
    (D.Poisson, "rate"): _poisson_rate,
    (D.Exponential, "rate"): _exponential_rate,
    (D.Gamma, "rate"): _gamma_rate,
}


def supported_parameters(kind: type) -> Tuple[str, ...]:
    """The parameter names of ``kind`` that have a weak-derivative rule."""
    return tuple(name for (k, name) in RULES if k is kind)


def weak_derivative(
    kind: type, name: str, params: Dict[str, torch.Tensor], x_j: torch.Tensor, generator: Optional[torch.Generator]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(c, states)`` of the rule for parameter ``name`` of a factor of type ``kind``."""
    return RULES[(kind, name)](params, x_j, generator)
