r"""The pathwise estimator (reparameterization trick).

If $x = g(\lambda, \varepsilon)$ with noise $\varepsilon$ independent of the parameters
$\lambda$ (``rsample``), then

$$\nabla_\lambda \mathbb E[f(x)] = \mathbb E_\varepsilon\big[\nabla_\lambda f(g(\lambda,\varepsilon))\big],
\qquad \hat g_n = J^\top \nabla_\lambda f\big(g(\lambda, \varepsilon_n)\big).$$

Assumptions: $f$ differentiable (a.e., and its derivative integrable); $p$
reparameterizable (``dist.has_rsample``). Unbiased. Cost per sample: one
evaluation of $f$ and a share of one batched backward pass through $f$ and the
sampler. Per-sample gradients come from ONE backward pass: the parameters are
repeated once per sample, so ``f`` must treat the samples of a batch independently
(no batch normalisation across samples).
"""
from __future__ import annotations

import torch
from torch import distributions as D

from .distributions import draw, evaluate_costs, item_count, per_sample_param_grads, rebuild, repeat_params
from .estimator import Estimate, Estimator, register_estimator

__all__ = ["Pathwise", "check_rsample", "check_differentiable"]


def check_rsample(dist: D.Distribution) -> None:
    """Deprecated: :meth:`Pathwise.check` raises :class:`~gradlab.estimator.UnsupportedDistribution`."""
    Pathwise().check(dist)


def check_differentiable(values: torch.Tensor, x: torch.Tensor) -> None:
    if x.requires_grad and not values.requires_grad:
        raise ValueError(
            "estimator='pathwise' needs f to be differentiable: f(x) does not depend on x "
            "through autograd (detached, NumPy or .item() inside f?)"
        )


class Pathwise(Estimator):
    """The pathwise estimator; registered as ``"pathwise"``."""

    name = "pathwise"
    needs_f = "differentiable"
    cost = "1 evaluation of f per sample and one batched backward pass through f and the sampler"

    def check(self, dist: D.Distribution) -> None:
        if not dist.has_rsample:
            raise self.unsupported(
                dist, "a reparameterizable distribution (has_rsample): use estimator='score' or 'measure_valued'"
            )

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        copies = repeat_params(lam, num_samples)
        with torch.enable_grad():
            x = draw(rebuild(dist, copies), (), generator=generator, reparameterized=True)
            values = evaluate_costs(f, x, num_samples, items=item_count(dist))
            check_differentiable(values, x)
            grads = per_sample_param_grads(values.sum(), copies)
        return Estimate(values.detach(), grads)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        """Deprecated: the hook of the protocol before :mod:`gradlab.estimator` (the labs list it); (N, D)."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, baseline=baseline, generator=generator
        ).grads.reshape(num_samples, -1)

    def surrogate(self, f, dist, *, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\frac1N \sum_n f(x_n)$ with $x_n$ from ``rsample``: its gradient is the pathwise estimate."""
        x = draw(dist, (num_samples,), generator=generator, reparameterized=True)
        values = evaluate_costs(f, x, num_samples, items=item_count(dist))
        check_differentiable(values, x)
        return (values.sum(1) if values.dim() == 2 else values).mean()


register_estimator("pathwise", Pathwise())
