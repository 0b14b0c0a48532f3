r"""Neural estimation of KL divergence and mutual information: the variational bounds as one family.

For a batch of $K$ joint pairs and a critic $f$, every bound of :mod:`gradlab.dv_bounds` takes the
$K\times K$ score matrix ``scores[i, j]`` $= f(x_i, y_j)$ (diagonal: joint pairs; off-diagonal: pairs of
the product of the marginals): Barber–Agakov, TUBA, NWJ, DV, MINE's moving average, InfoNCE,
$I_\alpha$, a JS-trained critic, SMILE. :mod:`gradlab.dv_critics` builds the matrix from a joint
(concat) critic ($K^2$ rows) or a separable critic $g(x)^\top h(y)$ ($2K$ passes) and keeps the
course's sample forms

* ``DV(Z, Z_ref, net)``: $\frac1n\sum_i t(Z_i) - \log\frac1{n'}\sum_j e^{t(Z'_j)}$, tight at
  $t = \log\frac{dP}{dQ} + c$;
* ``NWJ(Z, Z_ref, net)``: $\frac1n\sum_i t(Z_i) - \frac1{n'}\sum_j e^{t(Z'_j) - 1}$;
* ``InfoNCE(Z, net, x_dim)``: the course's InfoNCE on $K$ pairs, at most $\log K$ (an alias of
  ``infonce(joint_scores(net, x, y).T)``).

:class:`DVTrainer` (:mod:`gradlab.dv_trainer`) trains a critic on any of them, from fixed data or a
sampler of fresh pairs, and reports held-out estimates. Plotting and TensorBoard live in
:mod:`gradlab.dv_plots` (``plot_net_2`` is still importable from here, loaded on first use).
"""
from __future__ import annotations

from typing import Any

from . import dv_bounds, dv_critics, dv_trainer
from .dv_bounds import (MINE, barber_agakov, dv, infonce, interpolated, js, log_mean_exp_off_diagonal, nwj,
                        objective, smile, tuba)
from .dv_critics import (DV, NWJ, GaussianConditionalCritic, InfoNCE, SeparableCritic, gaussian_log_ratio,
                         joint_scores, log_mean_exp, score_matrix, separable_scores, split_pairs)
from .dv_trainer import BOUNDS, CorrelatedGaussianSampler, DVTrainer

__all__ = ["DV", "NWJ", "InfoNCE", "MINE", "log_mean_exp", "DVTrainer", "BOUNDS", "CorrelatedGaussianSampler",
           "dv", "nwj", "tuba", "infonce", "interpolated", "js", "smile", "barber_agakov", "objective",
           "log_mean_exp_off_diagonal", "joint_scores", "separable_scores", "score_matrix", "split_pairs",
           "SeparableCritic", "GaussianConditionalCritic", "gaussian_log_ratio", "plot_net_2"]


def __getattr__(name: str) -> Any:
    """``plot_net_2`` is loaded from :mod:`gradlab.dv_plots` when first asked for (the course imports it here)."""
    if name == "plot_net_2":
        from .dv_plots import plot_net_2

        return plot_net_2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
