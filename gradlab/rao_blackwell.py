r"""Rao-Blackwellised score-function estimates for product distributions (Chapter 5).

For $p_\lambda(x) = \prod_d p_d(x_d; \lambda_d)$ the score of the parameters $\lambda_d$ of factor
$d$ involves $x_d$ only. Replacing $f(x)\, s_d(x_d)$ by its conditional expectation given part of
the sample keeps the mean (the tower rule $\mathbb E[\mathbb E[Z \mid \mathcal G]] = \mathbb E[Z]$) and
cannot raise the variance (the law of total variance $\operatorname{Var} Z = \mathbb E\operatorname{Var}(Z
\mid \mathcal G) + \operatorname{Var}\mathbb E[Z\mid\mathcal G]$). :class:`RaoBlackwell` does this in
the two cases where the conditional expectation is exact:

* **Discrete factors** (``parts=None``): condition on all coordinates but $x_d$ and sum $x_d$ over
  its support, $\mathbb E[f s_d \mid x_{-d}] = \sum_k f(x_{-d}, k)\, \nabla_{\lambda_d} p_d(k)$ (the
  local expectation gradient). Cost: $\sum_d K_d$ evaluations of $f$ per sample ($K_d$ values of
  coordinate $d$).
* **Separable costs** (``parts`` given, $f(x) = \sum_d f_d(x_d)$): the terms $f_e$, $e \ne d$, do not
  depend on $x_d$, so their product with $s_d$ has mean zero and $\hat g_d = f_d(x_d)\, s_d(x_d)$, the
  "local score" (conditioning on $x_d$). Any product distribution with a score; no extra evaluation.

In the protocol's form $(f_n - b_{nj}) s_{nj} + \text{correction}_{nj}$ (a per-coordinate baseline):
discrete factors $b_{nj} = f_n$ and correction$_{nj} = \sum_k f(x_{n,-d}, k)\,\partial_{\lambda_j} p_d(k)$;
separable costs $b_{nj} = f_n - f_{d(j)}(x_{n})$ and no correction.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import distributions as D

from .checks import check_callable
from .control_variates import Baseline, ScoreBatch
from .distributions import distribution_params, per_sample_param_grads, rebuild, repeat_params, unwrap_independent

__all__ = ["RaoBlackwell", "parameter_coordinates"]


def parameter_coordinates(dist: D.Distribution) -> torch.Tensor:
    """For each entry of the flat parameters (the columns of the scores), the coordinate $d$ of the
    sample it belongs to: (P,). Needs one event dim of size D with every parameter shaped (D, ...)."""
    shape = dist.batch_shape + dist.event_shape
    if len(shape) != 1:
        raise ValueError(
            "baseline=RaoBlackwell needs samples of shape (N, D) (a product over one dim, e.g. "
            f"Independent(..., 1)); got sample shape {tuple(shape)}"
        )
    columns = []
    for name, value in distribution_params(dist).items():
        if value.dim() == 0 or value.shape[0] != shape[0]:
            raise ValueError(f"baseline=RaoBlackwell: parameter {name!r} of shape {tuple(value.shape)} is not one per coordinate")
        per_row = value[0].numel()
        columns.append(torch.arange(shape[0], device=value.device).repeat_interleave(per_row))
    return torch.cat(columns)


class RaoBlackwell(Baseline):
    r"""Rao-Blackwellisation of the score function for product distributions (see the module docstring).

    ``parts=None``: every factor discrete with a finite support (``Bernoulli``, ``Categorical``,
    as an ``Independent`` product over one dim): exact sum over each coordinate in turn.
    ``parts``: a callable ``x -> (N, D)`` with $f(x) = \sum_d$ ``parts(x)[:, d]`` and column $d$ a
    function of $x_d$ only (checked: the sum must reproduce $f$). Unbiased in both cases.
    """

    per_coordinate = True

    def __init__(self, parts: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.parts = None if parts is None else check_callable(parts, "parts")

    def terms(self, batch: ScoreBatch):
        """``(b, correction)`` from one fit per batch (what the score-function estimator calls)."""
        return self.fit(batch)

    def fit(self, batch: ScoreBatch) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
        if batch.scores is None:
            raise ValueError("baseline=RaoBlackwell needs per-sample scores; use gradlab.expectation_grad")
        coords = parameter_coordinates(batch.dist)
        if self.parts is not None:
            return self.separable(batch, coords), 0.0
        return self.enumerated(batch)

    def separable(self, batch: ScoreBatch, coords: torch.Tensor) -> torch.Tensor:
        values, x = batch.values.detach(), batch.samples.detach()
        parts = self.parts(x)
        if not isinstance(parts, torch.Tensor) or parts.shape != x.shape:
            got = tuple(parts.shape) if isinstance(parts, torch.Tensor) else type(parts).__name__
            raise ValueError(f"parts must map samples of shape {tuple(x.shape)} to one term per coordinate, got {got}")
        parts = parts.detach().to(values.dtype)
        scale = values.abs().max().clamp_min(1.0)
        if not torch.allclose(parts.sum(1), values, rtol=1e-5, atol=1e-6 * float(scale)):
            raise ValueError("parts must sum to f over the coordinates: parts(x).sum(1) != f(x)")
        return values.unsqueeze(1) - parts[:, coords]

    def enumerated(self, batch: ScoreBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        dist, x, values = batch.dist, batch.samples.detach(), batch.values.detach()
        base = unwrap_independent(dist)
        if type(base) not in (D.Bernoulli, D.Categorical):
            raise ValueError(
                "baseline=RaoBlackwell() needs discrete factors (Bernoulli or Categorical) to sum over; "
                f"got {type(base).__name__} (pass parts= for a separable f)"
            )
        support = base.enumerate_support(expand=False).reshape(-1).to(x.dtype)  # (K,)
        count, dim, size = x.shape[0], x.shape[1], support.numel()
        # Every sample with coordinate d replaced by each value k: (N, D, K, D), then one batched call of f.
        swapped = x.reshape(count, 1, 1, dim).repeat(1, dim, size, 1)
        eye = torch.eye(dim, dtype=torch.bool, device=x.device).reshape(1, dim, 1, dim)
        swapped = torch.where(eye, support.reshape(1, 1, size, 1).expand_as(swapped), swapped)
        with torch.no_grad():
            table = batch.f(swapped.reshape(-1, dim))
        if not isinstance(table, torch.Tensor) or table.shape != (count * dim * size,):
            raise ValueError(f"f must map {count * dim * size} samples to costs of shape ({count * dim * size},)")
        table = table.detach().reshape(count, dim, size)
        # correction_n = grad of sum_{d,k} F[n,d,k] p_d(k) w.r.t. sample n's copy of the parameters.
        copies = repeat_params(distribution_params(dist), count)
        with torch.enable_grad():
            factors = unwrap_independent(rebuild(dist, copies))
            probs = factors.log_prob(support.reshape(size, 1, 1).expand(size, count, dim)).exp()  # (K, N, D)
            total = (table.permute(2, 0, 1).to(probs.dtype) * probs).sum()
            correction = per_sample_param_grads(total, copies)
        return values.unsqueeze(1).expand_as(batch.scores).to(correction.dtype), correction

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return self.fit(batch)[0]

    def correction(self, batch: ScoreBatch) -> Union[torch.Tensor, float]:
        return self.fit(batch)[1]
