r"""Training with a black-box objective of the weights, by the score-function estimator.

A network with parameters $\theta$ is trained on a differentiable loss
$L_{wb}(\theta)$ plus $\lambda L_{bb}(\theta)$, where $L_{bb}$ is a black box (no
gradient). Treat the weights as random, $\theta \sim p(\theta;\mu) = \mathcal N(\mu, \sigma^2 I)$,
and minimise $\lambda\,\mathbb E_{\theta\sim p}[L_{bb}(\theta)]$ over the mean $\mu$ (the
network's current weights). The score function (REINFORCE) identity gives

$$\nabla_\mu \mathbb E_{\theta\sim p(\cdot;\mu)}[L_{bb}(\theta)]
  = \mathbb E\big[L_{bb}(\theta)\,\nabla_\mu \log p(\theta;\mu)\big]
  = \mathbb E\Big[L_{bb}(\theta)\,\frac{\theta-\mu}{\sigma^2}\Big]
  \approx \frac1n\sum_{k=1}^n L_{bb}(\theta_k)\,\frac{z_k}{\sigma},\quad \theta_k = \mu + \sigma z_k,$$

which is exactly the ``"naive"`` ES estimator of :mod:`gradlab.es`. A baseline
$b$ subtracted from $L_{bb}(\theta_k)$ keeps the estimate unbiased when $b$ does not
depend on $z_k$ (here the mean of the *other* samples, "leave-one-out") and
can reduce its variance a lot when $L_{bb}$ is far from zero.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from .batch import evaluate_batch
from .checks import check_callable, check_count, check_module, check_positive, check_sigma
from .control_variates import leave_one_out_means
from .noise import sample_noise
from .params import assign_grads, flatten_params

__all__ = ["BlackboxGradientEstimator"]


class BlackboxGradientEstimator:
    r"""Adds $\lambda\,\widehat{\nabla}_\mu \mathbb E_{\theta\sim\mathcal N(\mu,\sigma^2 I)}[L_{bb}(\theta)]$ to a network's ``.grad``.

    Args:
        black_box_function: $L_{bb}$, a function of the flat parameter vector
            (``named_parameters`` order) returning a scalar; it is never
            differentiated and may use NumPy or ``torch.no_grad``. Evaluations are
            vmapped when the function allows it, else looped.
        baseline: subtract the leave-one-out mean of the other samples' values
            from each value (variance reduction, still unbiased; needs
            ``num_samples >= 2``). Off by default, as in the source notebook.
        generator: ``torch.Generator`` for the perturbations (default: global RNG).
    """

    def __init__(
        self,
        black_box_function: Callable[[torch.Tensor], Any],
        *,
        baseline: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        check_callable(black_box_function, "black_box_function")
        if not isinstance(baseline, bool):
            raise TypeError(f"baseline must be a bool, got {type(baseline).__name__}")
        self.black_box_function = black_box_function
        self.baseline = baseline
        self.generator = generator

    def estimate(self, mu: torch.Tensor, num_samples: int, sigma: float) -> torch.Tensor:
        r"""$\frac1n\sum_k (L_{bb}(\mu + \sigma z_k) - b_k)\, z_k/\sigma$, unclipped and unscaled."""
        check_count(num_samples, "num_samples")
        sigma = check_sigma(sigma)
        if self.baseline and num_samples < 2:
            raise ValueError("baseline=True needs num_samples >= 2 (leave-one-out mean)")
        mu = mu.detach()
        z = sample_noise(
            (num_samples, *mu.shape), generator=self.generator, dtype=mu.dtype, device=mu.device
        )
        values = evaluate_batch(self.black_box_function, mu + sigma * z, name="black_box_function")
        values = values.to(mu.dtype)
        if self.baseline:
            values = values - self.leave_one_out_baseline(values)
        return torch.tensordot(values, z, dims=1) / (num_samples * sigma)

    @staticmethod
    def leave_one_out_baseline(values: torch.Tensor) -> torch.Tensor:
        r"""$b_k = \frac{1}{n-1}\sum_{j\ne k} v_j$, exact when one value dominates
        (:func:`gradlab.control_variates.leave_one_out_means`; ``sum - v_k`` would lose the small ones)."""
        return leave_one_out_means(values)

    def add_estimated_grad_to_network(
        self,
        network: nn.Module,
        num_samples: int,
        sigma: float,
        bb_objective_coef: float = 1.0,
        clip_norm: Optional[float] = None,
    ) -> torch.Tensor:
        r"""Estimate the black-box gradient at the network's weights and add it to ``.grad``.

        The estimate $\hat g$ (see :meth:`estimate`) is clipped to norm
        ``clip_norm`` ($\hat g \leftarrow \hat g \min(1, c/\|\hat g\|)$; ``None`` = no
        clipping), multiplied by ``bb_objective_coef`` $\lambda$ and accumulated into
        every parameter's ``.grad`` (created if missing), so call it after
        ``loss.backward()`` and before ``optimizer.step()``. Returns the added vector.
        """
        check_module(network, "network")
        if isinstance(bb_objective_coef, bool) or not isinstance(bb_objective_coef, (int, float)):
            raise TypeError(
                f"bb_objective_coef must be a number, got {type(bb_objective_coef).__name__}"
            )
        if clip_norm is not None:
            clip_norm = check_positive(clip_norm, "clip_norm")
        mu = flatten_params(network)
        if mu.numel() == 0:
            raise ValueError("network has no parameters")
        grad = self.estimate(mu, num_samples, sigma)
        if clip_norm is not None:
            norm = float(grad.norm())
            if norm > clip_norm:
                grad = grad * (clip_norm / norm)
        grad = grad * float(bb_objective_coef)
        assign_grads(network, grad, accumulate=True)
        return grad
