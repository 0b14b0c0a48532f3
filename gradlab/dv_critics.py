r"""Critics and their scores: the sample-form bounds ``DV``, ``NWJ``, ``InfoNCE`` and the score matrix.

A *joint* (concat) critic is a network $t(z)$ of a whole pair $z = (x, y)$: the $K\times K$ score matrix
of a batch needs all $K^2$ rows $(x_i, y_j)$ (:func:`joint_scores`). A *separable* critic
$f(x, y) = g(x)^\top h(y)$ needs only $K$ passes of $g$ and $K$ of $h$ and one matrix product
(:class:`SeparableCritic`). :func:`score_matrix` dispatches on the critic. The sample forms
``DV(Z, Z_ref, net)`` and ``NWJ(Z, Z_ref, net)`` bound $D(P\|Q)$ from samples of two distributions;
``InfoNCE(Z, net, x_dim)`` is the course's form of :func:`gradlab.dv_bounds.infonce`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from . import dv_bounds
from .checks import check_tensor

__all__ = ["log_mean_exp", "DV", "NWJ", "InfoNCE", "split_pairs", "joint_scores", "separable_scores",
           "score_matrix", "SeparableCritic", "GaussianConditionalCritic", "gaussian_log_ratio"]


def check_samples(Z: Any, name: str) -> None:
    """``Z`` must be a non-empty floating tensor of shape ``(n, d)``."""
    check_tensor(Z, name)
    if Z.dim() != 2:
        raise ValueError(f"{name} must have shape (num_samples, num_features), got {tuple(Z.shape)}")


def check_pair(Z: Any, Z_ref: Any) -> None:
    """Samples of P and Q: same feature dimension, same device."""
    check_samples(Z, "Z")
    check_samples(Z_ref, "Z_ref")
    if Z.shape[1] != Z_ref.shape[1]:
        raise ValueError(
            f"Z and Z_ref must have the same number of features, got {Z.shape[1]} and {Z_ref.shape[1]}"
        )
    if Z.device != Z_ref.device:
        raise ValueError(f"Z and Z_ref must be on the same device, got {Z.device} and {Z_ref.device}")


def check_x_dim(x_dim: Any, num_features: int) -> int:
    if isinstance(x_dim, bool) or not isinstance(x_dim, int) or not 0 < x_dim < num_features:
        raise ValueError(f"x_dim must be an int in [1, {num_features - 1}], got {x_dim!r}")
    return x_dim


def net_outputs(net: Callable[[Tensor], Tensor], Z: Tensor, name: str = "Z") -> Tensor:
    """``net(Z)`` as a vector of ``n`` finite values (an ``(n, 1)`` output is flattened)."""
    t = net(Z)
    if not isinstance(t, Tensor) or t.shape not in ((Z.shape[0],), (Z.shape[0], 1)):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"net({name}) must return one value per sample, shape ({Z.shape[0]}, 1), got {shape}")
    t = t.reshape(-1)
    if not torch.isfinite(t).all():
        raise ValueError(
            f"net({name}) returned non-finite values (inf or nan): the network has diverged; "
            "lower the learning rate or check the inputs"
        )
    return t


def log_mean_exp(t: Tensor) -> Tensor:
    r"""$\log\frac1n\sum_i e^{t_i}$ by ``logsumexp`` (no overflow for large $t$)."""
    return torch.logsumexp(t, dim=0) - math.log(t.shape[0])


def DV(Z: Tensor, Z_ref: Tensor, net: Callable[[Tensor], Tensor]) -> Tensor:
    r"""Donsker–Varadhan bound $\overline{t(Z)} - \log\overline{e^{t(Z')}}$, a scalar tensor with a graph."""
    check_pair(Z, Z_ref)
    return net_outputs(net, Z).mean() - log_mean_exp(net_outputs(net, Z_ref, "Z_ref"))


def NWJ(Z: Tensor, Z_ref: Tensor, net: Callable[[Tensor], Tensor]) -> Tensor:
    r"""Nguyen–Wainwright–Jordan bound $\overline{t(Z)} - \overline{e^{t(Z') - 1}}$ (unbiased on minibatches)."""
    check_pair(Z, Z_ref)
    return net_outputs(net, Z).mean() - torch.exp(net_outputs(net, Z_ref, "Z_ref") - 1).mean()


def split_pairs(Z: Tensor, x_dim: int) -> Tuple[Tensor, Tensor]:
    """``(x, y)``: the first ``x_dim`` features of the joint samples ``Z`` and the rest."""
    check_samples(Z, "Z")
    check_x_dim(x_dim, Z.shape[1])
    return Z[:, :x_dim], Z[:, x_dim:]


def joint_scores(net: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    r"""``S[i, j]`` $= t(x_i, y_j)$ from a joint critic: one batched pass over the $K^2$ rows $(x_i, y_j)$."""
    K = x.shape[0]
    if y.shape[0] != K:
        raise ValueError(f"x and y must have the same number of rows, got {K} and {y.shape[0]}")
    pairs = torch.cat((x.repeat_interleave(K, dim=0), y.repeat(K, 1)), dim=1)  # row i*K + j is (x_i, y_j)
    return net_outputs(net, pairs, "pairs").reshape(K, K)


def separable_scores(g: Callable[[Tensor], Tensor], h: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    r"""``S[i, j]`` $= g(x_i)^\top h(y_j)$: $K$ passes of each network and one ``(K, m) @ (m, K)`` product."""
    gx, hy = g(x), h(y)
    if gx.dim() != 2 or hy.dim() != 2 or gx.shape[1] != hy.shape[1]:
        raise ValueError(f"g(x) and h(y) must be (K, m) embeddings of one size, got {tuple(gx.shape)}, {tuple(hy.shape)}")
    return gx @ hy.T


class SeparableCritic(nn.Module):
    r"""$f(x, y) = g(x)^\top h(y)$; ``forward(z)`` scores the paired rows of ``z = [x, y]``."""

    def __init__(self, g: nn.Module, h: nn.Module, x_dim: int) -> None:
        super().__init__()
        if isinstance(x_dim, bool) or not isinstance(x_dim, int) or x_dim < 1:
            raise ValueError(f"x_dim must be a positive int, got {x_dim!r}")
        self.g, self.h, self.x_dim = g, h, x_dim

    def scores(self, x: Tensor, y: Tensor) -> Tensor:
        return separable_scores(self.g, self.h, x, y)

    def forward(self, z: Tensor) -> Tensor:
        x, y = z[:, : self.x_dim], z[:, self.x_dim:]
        return (self.g(x) * self.h(y)).sum(dim=1, keepdim=True)


class GaussianConditionalCritic(nn.Module):
    r"""Scores of a Gaussian conditional for Barber–Agakov: $f(x_i, y_j) = \log q(x_i\mid y_j) - \log p(x_i)$.

    $q(x\mid y) = \mathcal N(\mu(y), \sigma^2 I)$ with ``mean_net`` $=\mu$ and a learned $\log\sigma$ (or
    fixed ``sigma``); $p(x)$ is the known marginal ``log_marginal`` (default: standard normal).
    """

    def __init__(self, mean_net: Callable[[Tensor], Tensor], x_dim: int, sigma: Optional[float] = None,
                 log_marginal: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        super().__init__()
        self.mean_net, self.x_dim = mean_net, x_dim
        if sigma is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))
        else:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
                raise ValueError(f"sigma must be a positive number or None (learned), got {sigma!r}")
            self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))
        self.log_marginal = log_marginal

    def marginal(self, x: Tensor) -> Tensor:
        if self.log_marginal is not None:
            return self.log_marginal(x).reshape(-1)
        return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)

    def scores(self, x: Tensor, y: Tensor) -> Tensor:
        mu = self.mean_net(y)  # (K, x_dim), mu[j] = mean of q(x | y_j)
        log_sigma = self.log_sigma.to(x.dtype)
        sq = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)  # [i, j] = |x_i - mu(y_j)|^2
        d = x.shape[1]
        log_q = -0.5 * sq * torch.exp(-2 * log_sigma) - d * log_sigma - 0.5 * d * math.log(2 * math.pi)
        return log_q - self.marginal(x)[:, None]

    def forward(self, z: Tensor) -> Tensor:
        x, y = z[:, : self.x_dim], z[:, self.x_dim:]
        return self.scores(x, y).diagonal()[:, None]  # K^2 work: for small batches only


def score_matrix(critic: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    """The ``(K, K)`` scores of ``critic``: its own ``scores(x, y)`` if it has one, else a joint critic's."""
    scores = getattr(critic, "scores", None)
    S = scores(x, y) if callable(scores) else joint_scores(critic, x, y)
    return dv_bounds.check_scores(S, "critic scores")


def InfoNCE(Z: Tensor, net: Callable[[Tensor], Tensor], x_dim: int) -> Tensor:
    r"""The course's InfoNCE form: the $K$ pairs $Z_i = (x_i, y_i)$, $x_i$ = the first ``x_dim`` features.

    Each $x_i$ is scored against the $K$ $y$'s of the batch: ``infonce(joint_scores(net, x, y).T)``, the
    bound of :func:`gradlab.dv_bounds.infonce` with the roles of $X$ and $Y$ exchanged. At most $\log K$.
    """
    x, y = split_pairs(Z, x_dim)
    return dv_bounds.infonce(joint_scores(net, x, y).T)


def gaussian_log_ratio(x: Tensor, y: Tensor, rho: float, paired: bool = False) -> Tensor:
    r"""``S[i, j]`` $= \log\frac{p(x_i, y_j)}{p(x_i)p(y_j)}$ for standard Gaussians with $\operatorname{corr}(X_k, Y_k) = \rho$.

    The optimal critic of DV, InfoNCE and $I_\alpha$, summed over the independent coordinate pairs (the
    last dimension). ``paired=True``: only the values at the paired rows, $f(x_i, y_i)$, for any leading shape.
    """
    r2 = rho * rho
    const = -0.5 * x.shape[-1] * math.log1p(-r2)
    if paired:
        quad = (r2 * x**2 - 2 * rho * x * y + r2 * y**2).sum(-1)
    else:
        quad = r2 * (x**2).sum(1)[:, None] - 2 * rho * (x @ y.T) + r2 * (y**2).sum(1)[None, :]
    return const - quad / (2 * (1 - r2))
