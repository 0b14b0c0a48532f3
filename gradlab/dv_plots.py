"""Display helpers for :mod:`gradlab.dv`: the course's heat map of a critic, and TensorBoard set-up.

Nothing here is imported by the estimators at import time; matplotlib and tensorboard are imported
only when a function that needs them is called.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .dv_critics import net_outputs

__all__ = ["plot_net_2", "make_summary_writer"]


def make_summary_writer(writer_params: Optional[Dict[str, Any]]) -> Any:
    """A TensorBoard ``SummaryWriter(**writer_params)``, or ``None`` (no params, or tensorboard missing)."""
    if writer_params is None:
        return None
    if not isinstance(writer_params, dict):
        raise TypeError(f"writer_params must be a dict or None, got {type(writer_params).__name__}")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: DVTrainer logs to its history only", stacklevel=3)
        return None
    return SummaryWriter(**writer_params)


def plot_net_2(net: Callable[[Tensor], Tensor], xlim: Tuple[float, float] = (-5, 5),
               ylim: Tuple[float, float] = (-5, 5), grid: int = 50, ax: Any = None, **pcolormesh_kwargs: Any) -> Any:
    """Heat map of a network $t(x, y)$ of two inputs over ``xlim`` x ``ylim``; returns the matplotlib axes.

    The network is evaluated once on the ``grid`` x ``grid`` points (on the device and dtype of its
    first parameter, if it has one).
    """
    import matplotlib.pyplot as plt

    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    kwargs = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    x = torch.linspace(*xlim, grid, **kwargs)
    y = torch.linspace(*ylim, grid, **kwargs)
    xx, yy = torch.meshgrid(x, y, indexing="xy")
    with torch.no_grad():
        t = net_outputs(net, torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1), "grid")
    ax = plt.gca() if ax is None else ax
    options = {"cmap": "RdBu_r", "shading": "auto", **pcolormesh_kwargs}
    mesh = ax.pcolormesh(xx.cpu().numpy(), yy.cpu().numpy(), t.reshape(grid, grid).cpu().numpy(), **options)
    ax.figure.colorbar(mesh, ax=ax, label="$t(x, y)$")
    ax.set(xlabel="$x$", ylabel="$y$", title="Heat map of $t(x, y)$")
    return ax
