"""gradlab.checks and gradlab.batch: the shared validation and batch evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlab.batch import evaluate_batch
from gradlab.checks import (
    as_scalar,
    as_scalar_batch,
    check_choice,
    check_count,
    check_finite,
    check_positive,
    check_sigma,
    check_tensor,
)


def test_checks_return_the_normalised_value():
    assert check_positive(2, "lr") == 2.0 and isinstance(check_positive(2, "lr"), float)
    assert check_sigma(torch.tensor(0.5)) == 0.5
    assert check_count(3, "num_samples") == 3
    assert check_choice("a", "method", ("a", "b")) == "a"
    x = torch.ones(2)
    assert check_tensor(x) is x


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: check_positive(True, "lr"), TypeError, "lr must be a positive number"),
        (lambda: check_positive(float("inf"), "lr"), ValueError, "lr must be a positive finite"),
        (lambda: check_sigma(0.0), ValueError, "sigma"),
        (lambda: check_count(0, "num_samples"), ValueError, "num_samples must be >= 1"),
        (lambda: check_count(2.0, "num_samples"), TypeError, "num_samples must be an int"),
        (lambda: check_choice("c", "method", ("a", "b")), ValueError, r"method must be one of \('a', 'b'\)"),
        (lambda: check_tensor(torch.ones(0)), ValueError, "x must not be empty"),
        (lambda: check_tensor(torch.ones(2, dtype=torch.int64), "inputs"), TypeError, "inputs must be a floating"),
        (lambda: check_finite(torch.tensor([1.0, float("nan")]), "f"), ValueError, "1 of 2"),
    ],
)
def test_checks_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_as_scalar_is_the_one_scalar_check():
    assert as_scalar(torch.ones(1, 1), "f").shape == ()
    assert as_scalar(np.float32(2.0), "f", numbers=True).dtype == torch.float64
    with pytest.raises(ValueError, match=r"f must return a scalar \(one element\), got shape \(2,\)"):
        as_scalar(torch.ones(2), "f")
    with pytest.raises(TypeError, match="scalar tensor, got float"):
        as_scalar(1.0, "f")
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar \(one element\), got shape \(3,\)"):
        as_scalar_batch(torch.ones(4, 3), 4, "loss_fn")
    assert as_scalar_batch(torch.ones(4, 1), 4, "loss_fn").shape == (4,)


@pytest.mark.parametrize("vectorized", [True, False, "auto"])
def test_evaluate_batch_gives_one_value_per_point(vectorized):
    points = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = evaluate_batch(lambda p: (p**2).sum(), points, vectorized=vectorized, chunk_size=2)
    torch.testing.assert_close(values, (points**2).sum(1))
    with pytest.raises(ValueError, match="scalar"):
        evaluate_batch(lambda p: p, points, vectorized=vectorized)


def test_evaluate_batch_is_still_importable_from_finite_diff():
    import gradlab
    from gradlab.finite_diff import evaluate_batch as old_home

    assert old_home is evaluate_batch is gradlab.evaluate_batch
