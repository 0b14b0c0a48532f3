"""Small datasets: scikit-learn's bundled ones as torch tensors (no downloads), and
correlated Gaussians with a known mutual information.

The raw numpy arrays are loaded once per process (``functools.lru_cache``);
every call returns fresh tensors, so callers may modify them freely.
scikit-learn is imported lazily, only when a loader is called.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Tuple

import numpy as np
import torch

from . import rng
from .checks import check_count, check_float_dtype, check_int, check_number_in, check_seed

__all__ = ["load_digits_split", "load_binarized_digits", "load_iris_tensors", "correlated_gaussians", "product_of_marginals"]


@functools.lru_cache(maxsize=None)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """8x8 digit images flattened to 64 features (values 0..16), labels 0..9; read-only."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _read_only(bunch.data.astype(np.float64)), _read_only(bunch.target.astype(np.int64))


@functools.lru_cache(maxsize=None)
def _iris_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """150 iris flowers, 4 features (cm), labels 0..2; read-only."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return _read_only(bunch.data.astype(np.float64)), _read_only(bunch.target.astype(np.int64))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def load_digits_split(
    test_size: float = 0.25,
    seed: int = 0,
    device: Optional[Any] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""scikit-learn's digits (1797 images, 10 classes) split into train and test.

    The split is stratified by class and fully determined by ``seed``. Features
    are standardized with the *training* mean and standard deviation,
    $x \mapsto (x - \mu_{\text{train}}) / \sigma_{\text{train}}$ (pixels that are
    constant on the training set keep $\sigma = 1$).

    Returns ``(x_train, y_train, x_test, y_test)``: features of ``dtype`` with
    shape ``(n, 64)``, labels ``int64`` with shape ``(n,)``, all on ``device``.
    """
    from sklearn.model_selection import train_test_split

    check_number_in(test_size, "test_size", 0, 1)
    check_seed(seed)
    check_float_dtype(dtype)
    x, y = _digits_arrays()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return (
        torch.tensor((x_train - mean) / std, dtype=dtype, device=device),
        torch.tensor(y_train, dtype=torch.int64, device=device),
        torch.tensor((x_test - mean) / std, dtype=dtype, device=device),
        torch.tensor(y_test, dtype=torch.int64, device=device),
    )


def load_binarized_digits(
    test_size: float = 0.25,
    seed: int = 0,
    threshold: float = 0.5,
    device: Optional[Any] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The digits as binary images: pixel $= \mathbb 1[\text{intensity}/16 > \text{threshold}]$, split at random.

    For latent-variable models with a Bernoulli likelihood. Returns ``(x_train, x_test)`` of
    ``dtype`` with values in $\{0, 1\}$ and shape ``(n, 64)``; the split is fixed by ``seed``.
    """
    check_number_in(test_size, "test_size", 0, 1)
    check_number_in(threshold, "threshold", 0, 1, closed_low=True)
    check_float_dtype(dtype)
    x = torch.tensor(_digits_arrays()[0] / 16.0 > threshold, dtype=dtype, device=device)
    order = rng.randperm(len(x), generator=torch.Generator().manual_seed(seed), device=x.device)
    num_test = int(round(test_size * len(x)))
    return x[order[num_test:]], x[order[:num_test]]


def load_iris_tensors(
    device: Optional[Any] = None, dtype: torch.dtype = torch.float32
) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's iris: features ``(150, 4)`` of ``dtype`` (raw, in cm) and labels ``(150,)`` int64."""
    check_float_dtype(dtype)
    x, y = _iris_arrays()
    return (
        torch.tensor(x, dtype=dtype, device=device),
        torch.tensor(y, dtype=torch.int64, device=device),
    )


def product_of_marginals(Z: torch.Tensor, x_dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Samples of $P_X \otimes P_Y$ from samples of $P_{XY}$: the rows' $Y$ parts (features ``x_dim:``)
    are shuffled by a random permutation (from ``generator``), breaking the pairing with $X$."""
    if not isinstance(Z, torch.Tensor) or Z.dim() != 2:
        raise ValueError(f"Z must be a tensor of shape (n, d), got {getattr(Z, 'shape', type(Z).__name__)}")
    if isinstance(x_dim, bool) or not isinstance(x_dim, int) or not 0 < x_dim < Z.shape[1]:
        raise ValueError(f"x_dim must be an int in [1, {Z.shape[1] - 1}], got {x_dim!r}")
    order = rng.randperm(Z.shape[0], generator=generator, device=Z.device)
    return torch.cat((Z[:, :x_dim], Z[order, x_dim:]), dim=1)


def correlated_gaussians(
    n: int,
    rho: float,
    dim: int = 1,
    seed: int = 0,
    device: Optional[Any] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor, float]:
    r"""``n`` samples of $(X, Y)$, standard Gaussians in $\mathbb R^{dim}$ with $\operatorname{corr}(X_k, Y_k) = \rho$.

    $Y = \rho X + \sqrt{1-\rho^2}\,N$ with $N$ independent of $X$, coordinate by coordinate, so the pairs
    $(X_k, Y_k)$ are independent and $I(X;Y) = \sum_k -\tfrac12\log(1-\rho^2) = -\tfrac{dim}{2}\log(1-\rho^2)$.

    Returns ``(Z, Z_ref, mi)``: ``Z`` of shape ``(n, 2 * dim)`` (columns ``[X, Y]``), ``Z_ref`` the same rows
    with $Y$ shuffled by an independent permutation (samples of $P_X\otimes P_Y$, see
    :func:`product_of_marginals`), and the true mutual information ``mi`` in nats (a float).
    Everything is determined by ``seed``.
    """
    check_int(n, "n", minimum=2)
    check_number_in(rho, "rho", -1, 1)
    check_count(dim, "dim")
    check_seed(seed)
    check_float_dtype(dtype)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * noise
    Z = torch.cat((x, y), dim=1)
    Z_ref = product_of_marginals(Z, dim, generator)
    mi = -0.5 * dim * math.log1p(-rho * rho)
    return Z.to(device=device, dtype=dtype), Z_ref.to(device=device, dtype=dtype), mi
