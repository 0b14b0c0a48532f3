"""gradlab.data: bundled scikit-learn datasets as tensors, split deterministically."""
import math

import pytest
import torch

from gradlab import data
from gradlab.data import load_digits_split, load_iris_tensors


def test_digits_split_shapes_and_dtypes():
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert set(y_train.tolist()) == set(range(10)) and set(y_test.tolist()) <= set(range(10))


def test_digits_split_is_stratified_and_complete():
    _, y_train, _, y_test = load_digits_split(test_size=0.3, seed=5)
    counts = torch.bincount(torch.cat([y_train, y_test]), minlength=10)
    raw_counts = torch.bincount(torch.as_tensor(data._digits_arrays()[1].copy()), minlength=10)
    assert torch.equal(counts, raw_counts)  # nothing lost or duplicated
    share = torch.bincount(y_test, minlength=10).double() / raw_counts.double()
    assert torch.all((share - 0.3).abs() < 0.02)  # every class split ~ 70/30


def test_digits_standardized_with_train_statistics():
    x_train, _, x_test, _ = load_digits_split(dtype=torch.float64)
    std = x_train.std(dim=0, unbiased=False)
    varying = std > 0
    assert torch.allclose(x_train.mean(dim=0), torch.zeros(64, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64), atol=1e-12)
    assert varying.sum() < 64  # some border pixels are constant on the training set ...
    assert x_train[:, ~varying].eq(0).all()
    assert x_test[:, ~varying].abs().max() <= 16  # ... and are only centred (sigma = 1): raw pixels are 0..16
    assert torch.isfinite(x_train).all() and torch.isfinite(x_test).all()
    assert x_test.mean(dim=0).abs().max() > 1e-6  # the test set is not re-standardized on itself


def test_digits_split_deterministic_by_seed():
    first, second, other = load_digits_split(seed=1), load_digits_split(seed=1), load_digits_split(seed=2)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[1], other[1])


def test_digits_cache_and_fresh_tensors():
    data._digits_arrays.cache_clear()
    x_train, *_ = load_digits_split()
    x_train.zero_()
    x_again, *_ = load_digits_split()
    assert x_again.abs().sum() > 0  # mutating a returned tensor does not corrupt the cache
    info = data._digits_arrays.cache_info()
    assert info.misses == 1 and info.hits == 1
    assert not data._digits_arrays()[0].flags.writeable


def test_iris():
    x, y = load_iris_tensors()
    assert x.shape == (150, 4) and x.dtype == torch.float32
    assert torch.equal(torch.bincount(y), torch.tensor([50, 50, 50]))
    x64, _ = load_iris_tensors(dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.allclose(x64[0], torch.tensor([5.1, 3.5, 1.4, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.1, "0.2", True])
def test_bad_test_size(test_size):
    # gradlab.checks' one rule: a bad value is a ValueError, a wrong kind (str, bool) a TypeError
    error = TypeError if isinstance(test_size, (str, bool)) else ValueError
    with pytest.raises(error, match=r"test_size must be a number in \(0, 1\)"):
        load_digits_split(test_size=test_size)


def test_bad_dtype_and_seed():
    with pytest.raises(TypeError, match=r"dtype must be a floating torch.dtype, got torch.int64"):
        load_digits_split(dtype=torch.int64)
    with pytest.raises(TypeError, match=r"dtype must be a floating torch.dtype"):
        load_iris_tensors(dtype="float32")
    with pytest.raises(TypeError, match=r"seed must be an int, got float"):
        load_digits_split(seed=0.5)


# ------------------------------------------------ correlated Gaussians (gradlab.dv's ground truth)


def test_correlated_gaussians_shapes_truth_and_seed():
    from gradlab.data import correlated_gaussians

    Z, Z_ref, mi = correlated_gaussians(5000, 0.8, dim=3, seed=1)
    assert Z.shape == Z_ref.shape == (5000, 6) and Z.dtype == torch.float32
    assert mi == pytest.approx(-1.5 * math.log(1 - 0.64))  # -(dim/2) log(1 - rho^2), positive
    # corr(X_k, Y_k) = 0.8 and 0 across coordinates; the standard error of a correlation is ~(1-r^2)/sqrt(n).
    corr = torch.corrcoef(Z.double().T)
    assert torch.allclose(torch.diagonal(corr[:3, 3:]), torch.full((3,), 0.8, dtype=torch.float64), atol=4 * 0.36 / 70)
    assert corr[0, 4].abs() < 4 / 70 and corr[0, 1].abs() < 4 / 70
    # Z_ref: the same X, the same Y values in another order, no correlation left.
    assert torch.equal(Z_ref[:, :3], Z[:, :3])
    assert torch.equal(Z_ref[:, 3].sort().values, Z[:, 3].sort().values)
    assert torch.corrcoef(Z_ref.double().T)[0, 3].abs() < 4 / 70
    again = correlated_gaussians(5000, 0.8, dim=3, seed=1)
    assert torch.equal(again[0], Z) and torch.equal(again[1], Z_ref)
    assert not torch.equal(correlated_gaussians(5000, 0.8, dim=3, seed=2)[0], Z)


def test_correlated_gaussians_bad_inputs():
    from gradlab.data import correlated_gaussians, product_of_marginals

    for kwargs, match in [({"n": 1, "rho": 0.5}, "n must"), ({"n": 10, "rho": 1.0}, "rho must"),
                          ({"n": 10, "rho": 0.5, "dim": 0}, "dim must")]:
        with pytest.raises(ValueError, match=match):
            correlated_gaussians(**kwargs)
    with pytest.raises(ValueError, match="x_dim"):
        product_of_marginals(torch.zeros(5, 2), 2)


def test_binarized_digits_are_binary_disjoint_and_seeded():
    from gradlab.data import load_binarized_digits

    x_train, x_test = load_binarized_digits(test_size=0.2, seed=3)
    assert x_train.shape[1] == 64 and len(x_train) + len(x_test) == 1797 and len(x_test) == 359
    assert set(torch.cat([x_train, x_test]).unique().tolist()) == {0.0, 1.0}
    again, _ = load_binarized_digits(test_size=0.2, seed=3)
    assert torch.equal(x_train, again)
    assert not torch.equal(x_train, load_binarized_digits(test_size=0.2, seed=4)[0])
    with pytest.raises(ValueError, match="threshold"):
        load_binarized_digits(threshold=1.5)
