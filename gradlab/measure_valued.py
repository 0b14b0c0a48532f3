r"""The measure-valued estimator (weak derivatives), with common random numbers.

A weak derivative writes the derivative of a density with respect to one parameter
$\lambda_i$ as a scaled difference of two densities,
$\partial_{\lambda_i} p = c_i\,(p^+_i - p^-_i)$, so

$$\partial_{\lambda_i}\mathbb E_p[f] = c_i\big(\mathbb E_{p^+_i}[f] - \mathbb E_{p^-_i}[f]\big),
\qquad \hat g_{n,i} = c_i\big(f(x^+_{n,i}) - f(x^-_{n,i})\big).$$

For a product distribution only coordinate $i$ of the sample changes; the others
are shared by $x^+$ and $x^-$, and the changed coordinate of the pair is drawn from
one coupling (common random numbers), which keeps the difference small.

| parameter | $c_i$ | $x^+_i$ | $x^-_i$ |
|---|---|---|---|
| Normal ``loc`` $\mu$ | $1/(\sigma\sqrt{2\pi})$ | $\mu + \sigma W$ | $\mu - \sigma W$, $W\sim$ Weibull(scale $\sqrt2$, shape 2) |
| Normal ``scale`` $\sigma$ | $1/\sigma$ | $\mu + \sigma M$ | $\mu + \sigma M U$, $M\sim$ double-sided Maxwell, $U\sim U(0,1)$ |
| Bernoulli ``probs`` $p$ | 1 | 1 | 0 |
| Categorical ``probs`` $p_k$ | 1 | $k$ | (none: $\partial_{p_k}\sum_j p_j f(j) = f(k)$) |

$W = \sqrt{-2\log V}$ has density $w e^{-w^2/2}$ (the positive part of
$\partial_\mu$ of the Gaussian, normalised); $M = \pm\sqrt{\chi^2_3}$ has density
$m^2\varphi(m)$, and $MU \sim \mathcal N(0, 1)$, so $x^-$ is an exact Gaussian sample
coupled to $x^+$. For a Categorical the rows of $J$ sum to zero over the classes
(probabilities sum to one), so $f(k)$ alone gives the weak-derivative differences
after the chain rule. Unbiased; $f$ need not be differentiable. **Cost**: per
sample, 2 evaluations of $f$ per Gaussian or Bernoulli parameter coordinate and
$K$ per Categorical coordinate, i.e. $O(\dim\lambda)$ evaluations (only
coordinates that $\theta$ moves are computed).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import distributions as D

from .distributions import draw, evaluate_costs, item_count, unwrap_independent
from .estimator import Estimate, Estimator, register_estimator

__all__ = ["MeasureValued", "SUPPORTED", "weibull", "double_sided_maxwell"]

SUPPORTED = (D.Normal, D.Bernoulli, D.Categorical)
_CHUNK_ELEMENTS = 2**22  # entries of perturbed samples evaluated per call of f


def weibull(shape, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Weibull(scale $\\sqrt 2$, concentration 2) draws, $\\sqrt{-2\\log V}$ with $V\\sim U(0,1]$."""
    uniform = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.sqrt(-2.0 * torch.log1p(-uniform))


def double_sided_maxwell(shape, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Double-sided Maxwell draws (density $m^2\\varphi(m)$): $\\pm$ the norm of 3 standard normals."""
    normals = torch.randn((*shape, 3), generator=generator, dtype=like.dtype, device=like.device)
    sign = torch.where(normals[..., 0] < 0, -1.0, 1.0).to(like.dtype)
    return sign * normals.norm(dim=-1)


def check_supported(dist: D.Distribution) -> D.Distribution:
    """Deprecated: :meth:`MeasureValued.check` raises :class:`~gradlab.estimator.UnsupportedDistribution`."""
    MeasureValued().check(dist)
    return unwrap_independent(dist)


def _replaced(f: Callable, x: torch.Tensor, coords: torch.Tensor, states: torch.Tensor, shape, items) -> torch.Tensor:
    """f at ``x`` (N, d) with coordinate ``coords[j]`` set to ``states[:, j, s]`` (costs summed over items): (N, c, S)."""
    count, dim = x.shape
    _, num_coords, num_states = states.shape
    points = x[:, None, None, :].expand(count, num_coords, num_states, dim).clone()
    index = coords.view(1, -1, 1, 1).expand(count, num_coords, num_states, 1)
    points.scatter_(3, index, states.unsqueeze(-1).to(points.dtype))
    total = count * num_coords * num_states
    values = evaluate_costs(f, points.reshape(total, *shape), total, items=items)
    values = values.sum(1) if values.dim() == 2 else values
    return values.reshape(count, num_coords, num_states)


def _chunks(coords: torch.Tensor, per_coord: int):
    size = max(1, _CHUNK_ELEMENTS // max(per_coord, 1))
    return coords.split(size) if coords.numel() else ()


class MeasureValued(Estimator):
    """The measure-valued estimator; registered as ``"measure_valued"``."""

    name = "measure_valued"
    needs_f = "black box"
    skips_constant_params = True
    cost = "1 + 2 evaluations of f per Normal/Bernoulli parameter and K per Categorical coordinate, per sample"

    def check(self, dist: D.Distribution) -> None:
        if type(unwrap_independent(dist)) not in SUPPORTED:
            names = ", ".join(t.__name__ for t in SUPPORTED)
            raise self.unsupported(dist, f"{names} (or Independent products of them)")

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        """Deprecated: the hook of the protocol before :mod:`gradlab.estimator` (the labs list it); (N, D)."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
        ).grads.reshape(num_samples, -1)

    def surrogate(self, f, dist, *, num_samples, baseline, generator) -> torch.Tensor:
        r"""The generic surrogate: value the mean cost, gradient $\sum_i \lambda_i\,\operatorname{stop}(\bar g_i)$."""
        return super().surrogate(f, dist, num_samples=num_samples, baseline=baseline, generator=generator)

    @torch.no_grad()
    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False, needed=None):
        """Per-sample weak-derivative estimates w.r.t. the flat parameters of ``dist``: (N, P).

        ``needed`` (bool, (P,)) skips the parameters it marks False (their columns stay 0).
        """
        base = unwrap_independent(dist)
        params = lam
        x = draw(dist, (num_samples,), generator=generator)
        items = item_count(dist)
        costs = evaluate_costs(f, x, num_samples, items=items)
        shape = tuple(x.shape[1:])
        flat_x = x.reshape(num_samples, -1)
        dim = flat_x.shape[1]
        total = sum(v.numel() for v in params.values())
        needed = torch.ones(total, dtype=torch.bool) if needed is None else needed.cpu()
        dtype = next(iter(params.values())).dtype
        grads = torch.zeros(num_samples, total, dtype=dtype, device=x.device)
        if type(base) is D.Normal:
            loc, scale = base.loc.detach().reshape(-1), base.scale.detach().reshape(-1)
            for offset, kind in ((0, "loc"), (dim, "scale")):
                coords = torch.nonzero(needed[offset:offset + dim]).flatten().to(x.device)
                for chunk in _chunks(coords, 2 * num_samples * dim):
                    mu, sigma = loc[chunk], scale[chunk]
                    if kind == "loc":
                        w = weibull((num_samples, chunk.numel()), loc, generator)
                        states = torch.stack([mu + sigma * w, mu - sigma * w], dim=-1)
                        const = 1.0 / (sigma * math.sqrt(2 * math.pi))
                    else:
                        m = double_sided_maxwell((num_samples, chunk.numel()), loc, generator)
                        u = torch.rand(m.shape, generator=generator, dtype=loc.dtype, device=loc.device)
                        states = torch.stack([mu + sigma * m, mu + sigma * m * u], dim=-1)
                        const = 1.0 / sigma
                    values = _replaced(f, flat_x, chunk, states, shape, items)
                    grads[:, offset + chunk] = const * (values[..., 0] - values[..., 1])
            return Estimate(costs, grads)
        probs = base.probs.detach()
        if type(base) is D.Bernoulli:
            probs = probs.reshape(-1)
            coords = torch.nonzero(needed).flatten().to(x.device)
            for chunk in _chunks(coords, 2 * num_samples * dim):
                states = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device).expand(num_samples, chunk.numel(), 2)
                values = _replaced(f, flat_x, chunk, states, shape, items)
                grads[:, chunk] = values[..., 0] - values[..., 1]
            return Estimate(costs, grads)
        classes = probs.shape[-1]  # Categorical: the parameter block of coordinate i is i*K ... i*K + K - 1
        coords = torch.nonzero(needed.reshape(dim, classes).any(1)).flatten().to(x.device)
        for chunk in _chunks(coords, classes * num_samples * dim):
            states = torch.arange(classes, device=x.device).expand(num_samples, chunk.numel(), classes)
            values = _replaced(f, flat_x, chunk, states, shape, items)
            cols = (chunk.unsqueeze(1) * classes + torch.arange(classes, device=x.device)).flatten()
            grads[:, cols] = values.reshape(num_samples, -1).to(grads.dtype)
        return Estimate(costs, grads)


register_estimator("measure_valued", MeasureValued())
