r"""Randomised quasi-Monte Carlo for the pathwise estimator.

Plain Monte Carlo draws the standard noise $\varepsilon_1, \dots, \varepsilon_N$ independently; the
error of an average then falls as $N^{-1/2}$. A **scrambled Sobol sequence** (Owen scrambling)
spreads $N$ points $u_n \in (0, 1)^d$ far more evenly than independent draws, and each point is
still uniform on the cube: with $\varepsilon_n = \Phi^{-1}(u_n)$ (the inverse normal CDF) every
per-sample estimate keeps its law, so the average stays **unbiased**, while for a smooth integrand
its variance falls much faster than $1/N$ (up to $N^{-3}(\log N)^{d-1}$ for smooth functions,
Owen 1997). The gain fades when $f\circ(\mu + \sigma\Phi^{-1})$ is not smooth (a kink, a jump) or
when its variation is spread over many dimensions. In one dimension, $N = 2^m$ scrambled Sobol
points put exactly one point in each of the $N$ strata $[k/N, (k+1)/N)$: stratified sampling.

Note that the per-sample estimates of one call are *not* independent: their mean is the
estimate, but their sample variance divided by $N$ overstates its variance. Compare RQMC with
Monte Carlo through repeated calls (different generator states give independent scrambles).

Registered as ``"pathwise_rqmc"``: Normal distributions and ``Independent`` products of them.
"""
from __future__ import annotations

import torch
from torch import distributions as D
from torch.quasirandom import SobolEngine

from .distributions import evaluate_costs, item_count, per_sample_param_grads, repeat_params, unwrap_independent
from .estimator import Estimate, register_estimator
from .pathwise import Pathwise, check_differentiable

__all__ = ["PathwiseRQMC", "sobol_normal"]

_TINY = 1e-12  # keeps the inverse CDF finite at a point exactly on the cube's boundary


def sobol_normal(num_samples: int, shape: torch.Size, *, like: torch.Tensor, generator=None) -> torch.Tensor:
    r"""$\Phi^{-1}(u_n)$ for $N$ scrambled Sobol points, shaped ``(num_samples, *shape)``, on ``like``'s device and dtype.

    The scramble's seed is drawn from ``generator`` (one integer), so the same generator state
    gives the same points and the global random state is left alone.
    """
    dim = max(1, int(torch.Size(shape).numel()))
    if dim > SobolEngine.MAXDIM:
        raise ValueError(f"pathwise_rqmc supports up to {SobolEngine.MAXDIM} dimensions, got {dim}")
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    u = SobolEngine(dim, scramble=True, seed=seed).draw(num_samples, dtype=torch.float64)
    eps = torch.special.ndtri(u.clamp(_TINY, 1 - _TINY))
    return eps.to(device=like.device, dtype=like.dtype).reshape(num_samples, *shape)


class PathwiseRQMC(Pathwise):
    """The pathwise estimator with scrambled-Sobol noise; registered as ``"pathwise_rqmc"``."""

    name = "pathwise_rqmc"
    cost = "as pathwise (1 evaluation of f and a share of one backward pass per sample), plus the Sobol points"

    def check(self, dist: D.Distribution) -> None:
        if type(unwrap_independent(dist)) is not D.Normal:
            raise self.unsupported(dist, "a Normal distribution (or an Independent product of them)")

    def _noise(self, dist, num_samples, generator, like):
        return sobol_normal(num_samples, unwrap_independent(dist).batch_shape, like=like, generator=generator)

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        copies = repeat_params(lam, num_samples)
        loc, scale = (copies[k] for k in copies)  # loc then scale, as distribution_params orders them
        with torch.enable_grad():
            x = loc + scale * self._noise(dist, num_samples, generator, loc)
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
            check_differentiable(values, x)
            grads = per_sample_param_grads(values.sum(), copies)
        return Estimate(values.detach(), grads)

    def surrogate(self, f, dist, *, num_samples, baseline, generator) -> torch.Tensor:
        base = unwrap_independent(dist)
        x = base.loc + base.scale * self._noise(dist, num_samples, generator, base.loc)
        values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        check_differentiable(values, x)
        return (values.sum(1) if values.dim() == 2 else values).mean()


register_estimator("pathwise_rqmc", PathwiseRQMC())
