"""The lab's ES helpers, in the names of the lab's seed notebook: flat weights, ``ES_grad``, ``ES_step``.

Thin wrappers: the weights as one flat vector (:mod:`gradlab.params`) and the
population estimator :func:`gradlab.es.population.es_grad_model`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..checks import check_positive
from .population import es_grad_model
from ..params import assign_params, flatten_params

__all__ = ["get_model_weights", "set_model_weights", "ES_grad", "ES_step"]


def get_model_weights(model: nn.Module) -> torch.Tensor:
    """All parameters as one flat tensor (a copy, ``named_parameters`` order)."""
    return flatten_params(model)


def set_model_weights(model: nn.Module, w: torch.Tensor) -> None:
    """Copy a flat weight vector (as returned by :func:`get_model_weights`) into the model."""
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    reference = next(model.parameters(), None)
    if reference is not None and w.is_floating_point():
        w = w.to(dtype=reference.dtype, device=reference.device)
    assign_params(model, w)


def ES_grad(  # noqa: N802 (the lab's name)
    model: nn.Module,
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    x_tr: torch.Tensor,
    y_tr: Any,
    sigma: float = 1e-2,
    N: int = 100,  # noqa: N803
    generator: Optional[torch.Generator] = None,
    method: str = "antithetic",
) -> torch.Tensor:
    r"""ES estimate of the gradient of the smoothed loss $\mathbb E_z[L(w + \sigma z)]$ on ``(x_tr, y_tr)``.

    The lab's estimator: with ``method="naive"`` it is
    $\frac{1}{N\sigma}\sum_n L(w + \sigma z_n) z_n$ (equivalently
    $\frac{1}{N\sigma^2}\sum_n L(w + v_n) v_n$ with $v_n = \sigma z_n$); the default
    ``"antithetic"`` has far lower variance. Returns a flat tensor in
    :func:`get_model_weights` order; the model is left unchanged. Vectorized
    through :func:`es_grad_model`.
    """
    return es_grad_model(
        model, loss, x_tr, y_tr, sigma=sigma, num_samples=N, method=method, generator=generator
    )


def ES_step(  # noqa: N802 (the lab's name)
    model: nn.Module,
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    x_tr: torch.Tensor,
    y_tr: Any,
    lr: float,
    sigma: float = 1e-2,
    N: int = 100,  # noqa: N803
    generator: Optional[torch.Generator] = None,
    method: str = "antithetic",
) -> float:
    r"""One ES descent step $w \leftarrow w - \text{lr}\cdot\widehat{\nabla}$ (:func:`ES_grad`); returns the loss before the step."""
    lr = check_positive(lr, "lr")
    with torch.no_grad():
        before = float(loss(model(x_tr), y_tr))
    grad = ES_grad(model, loss, x_tr, y_tr, sigma=sigma, N=N, generator=generator, method=method)
    set_model_weights(model, get_model_weights(model) - lr * grad)
    return before
