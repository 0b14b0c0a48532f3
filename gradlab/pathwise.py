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

from .distributions import (
    Estimator,
    distribution_params,
    draw,
    evaluate_costs,
    parameter_jacobian,
    per_sample_param_grads,
    rebuild,
    repeat_params,
)

__all__ = ["Pathwise", "check_rsample", "check_differentiable"]


def check_rsample(dist: D.Distribution) -> None:
    if not dist.has_rsample:
        raise ValueError(
            f"estimator='pathwise' needs make_dist(theta) to be reparameterizable (has_rsample); "
            f"{type(dist).__name__} is not: use estimator='score' or 'measure_valued'"
        )


def check_differentiable(values: torch.Tensor, x: torch.Tensor) -> None:
    if x.requires_grad and not values.requires_grad:
        raise ValueError(
            "estimator='pathwise' needs f to be differentiable: f(x) does not depend on x "
            "through autograd (detached, NumPy or .item() inside f?)"
        )


class Pathwise(Estimator):
    """The pathwise estimator; registered as ``"pathwise"``."""

    name = "pathwise"

    def check(self, dist: D.Distribution) -> None:
        check_rsample(dist)

    def grads(self, f, make_dist, dist, theta, num_samples, baseline, generator) -> torch.Tensor:
        copies = repeat_params(distribution_params(dist), num_samples)
        with torch.enable_grad():
            x = draw(rebuild(dist, copies), (), generator=generator, reparameterized=True)
            values = evaluate_costs(f, x, num_samples)
            check_differentiable(values, x)
            per_param = per_sample_param_grads(values.sum(), copies)
        return per_param @ parameter_jacobian(make_dist, theta)

    def surrogate(self, f, dist, num_samples, baseline, generator) -> torch.Tensor:
        r"""$\frac1N \sum_n f(x_n)$ with $x_n$ from ``rsample``: its gradient is the pathwise estimate."""
        x = draw(dist, (num_samples,), generator=generator, reparameterized=True)
        values = evaluate_costs(f, x, num_samples)
        check_differentiable(values, x)
        return values.mean()
