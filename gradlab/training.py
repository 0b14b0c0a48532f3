"""A small MLP builder and the standard training loop (model, loss, optimizer).

Every step of :func:`train` is the loop the book dissects::

    optimizer.zero_grad()            # forget the previous gradient
    loss = loss_fn(model(xb), yb)    # forward pass builds the graph
    loss.backward()                  # reverse pass fills p.grad
    optimizer.step()                 # theta <- theta - lr * grad (for SGD)
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from . import rng
from .checks import check_count, check_int, check_module

__all__ = ["build_mlp", "accuracy", "train"]


def _make_nonlinearity(nonlinearity_module: Callable[[], nn.Module]) -> nn.Module:
    """Instantiate the nonlinearity, refusing autograd Functions with an explanation."""
    if inspect.isclass(nonlinearity_module) and issubclass(
        nonlinearity_module, torch.autograd.Function
    ):
        raise TypeError(
            f"{nonlinearity_module.__name__} is not a Module subclass: it is a "
            "torch.autograd.Function (call it with .apply). Pass an nn.Module class that "
            "wraps it instead, e.g. gradlab.nn.ReLU or gradlab.nn.ReQU."
        )
    module = nonlinearity_module()
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"nonlinearity_module() must return an nn.Module, got {type(module).__name__}"
        )
    return module


def build_mlp(
    input_dim: int,
    hidden_dims: Union[int, Sequence[int]],
    output_dim: int,
    nonlinearity_module: Callable[[], nn.Module] = nn.ReLU,
    weight_module: Callable[..., nn.Module] = nn.Linear,
    bias: bool = True,
) -> nn.Sequential:
    """``weight_module(d_in, d_out, bias=bias)`` layers with ``nonlinearity_module()`` between them.

    ``build_mlp(64, [32, 32], 10)`` is Linear(64, 32), ReLU, Linear(32, 32), ReLU,
    Linear(32, 10); the output is logits (no final nonlinearity). Pass
    ``gradlab.nn.ReQU`` / ``gradlab.nn.Linear`` to use gradlab's custom Functions.
    """
    if isinstance(hidden_dims, int):
        hidden_dims = [hidden_dims]
    if not isinstance(hidden_dims, (list, tuple)):
        raise TypeError(f"hidden_dims must be an int or a list of ints, got {type(hidden_dims).__name__}")
    dims = [input_dim, *hidden_dims, output_dim]
    names = ["input_dim", *[f"hidden_dims[{i}]" for i in range(len(hidden_dims))], "output_dim"]
    for name, dim in zip(names, dims):
        check_count(dim, name)
    layers: List[nn.Module] = []
    for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(weight_module(d_in, d_out, bias=bias))
        if index < len(dims) - 2:
            layers.append(_make_nonlinearity(nonlinearity_module))
    return nn.Sequential(*layers)


def _check_xy(x: object, y: object, x_name: str, y_name: str) -> None:
    for name, value in ((x_name, x), (y_name, y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of rows, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows where ``model(x).argmax(-1) == y`` (evaluated in eval mode, no grad)."""
    _check_xy(x, y, "x", "y")
    if y.dim() != 1:
        raise ValueError(f"y must hold class indices of shape (n,), got shape {tuple(y.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        model.train(was_training)
    if logits.shape[0] != y.shape[0] or logits.dim() != 2:
        raise ValueError(
            f"model(x) must return logits of shape (n, classes) with n = {y.shape[0]}, "
            f"got {tuple(logits.shape)}"
        )
    return float((logits.argmax(dim=-1) == y).double().mean())


def train(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    num_epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    x_val: Optional[torch.Tensor] = None,
    y_val: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> Dict[str, List[float]]:
    """Minibatch training for ``num_epochs`` epochs; returns the history.

    Each epoch draws a fresh permutation of the rows from a ``torch.Generator``
    seeded with ``seed`` and walks through it in chunks of ``batch_size``, so every
    sample is used once per epoch and the run is reproducible.

    History: ``"loss"`` (mean training loss of each epoch, weighted by batch size)
    and ``"val_accuracy"`` (after each epoch; empty without ``x_val``/``y_val``).
    """
    check_module(model)
    _check_xy(x, y, "x", "y")
    if x.shape[0] == 0:
        raise ValueError("x must contain at least one row")
    check_int(num_epochs, "num_epochs", minimum=0)
    check_count(batch_size, "batch_size")
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    if x_val is not None:
        _check_xy(x_val, y_val, "x_val", "y_val")

    generator = torch.Generator().manual_seed(seed)
    num_samples = x.shape[0]
    history: Dict[str, List[float]] = {"loss": [], "val_accuracy": []}
    from tqdm import tqdm  # imported on first use: ``import gradlab`` does not load tqdm

    bar = tqdm(range(num_epochs), desc="epochs", disable=not progress)
    for _ in bar:
        model.train()
        order = rng.randperm(num_samples, generator=generator, device=x.device)
        total = 0.0
        for start in range(0, num_samples, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        history["loss"].append(total / num_samples)
        postfix = {"loss": f"{history['loss'][-1]:.4f}"}
        if x_val is not None:
            history["val_accuracy"].append(accuracy(model, x_val, y_val))
            postfix["val_acc"] = f"{history['val_accuracy'][-1]:.3f}"
        bar.set_postfix(postfix)
    bar.close()
    return history
