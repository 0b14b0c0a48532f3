"""Finite differences and forward gradients against autograd (float64 references)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradlab.finite_diff import default_eps, evaluate_batch, fd_directional, fd_grad, forward_grad

EPS64 = torch.finfo(torch.float64).eps


def smooth(x: torch.Tensor) -> torch.Tensor:
    """A smooth test function with all derivatives of order one near the origin."""
    return (torch.sin(x) * x**2).sum() + torch.log1p(x**2).sum() + 0.3 * x.sum() ** 2


def autograd_grad(f, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    return g


@pytest.fixture
def x64() -> torch.Tensor:
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_default_eps_follows_the_error_trade_off():
    # central: cbrt(eps), one-sided: sqrt(eps), per dtype
    assert default_eps(torch.float64, "central") == pytest.approx(EPS64 ** (1 / 3))
    assert default_eps(torch.float64, "forward") == pytest.approx(EPS64**0.5)
    assert default_eps(torch.float32, "backward") == pytest.approx(torch.finfo(torch.float32).eps ** 0.5)


def test_central_fd_matches_autograd_to_float64_precision(x64):
    # Expected error ~ eps^(2/3) ~ 4e-11 times derivative sizes of order 10 here.
    est = fd_grad(smooth, x64)
    ref = autograd_grad(smooth, x64)
    assert est.shape == x64.shape and est.dtype == torch.float64
    torch.testing.assert_close(est, ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("scheme", ["forward", "backward"])
def test_one_sided_fd_matches_autograd_to_sqrt_eps(x64, scheme):
    # Expected error ~ sqrt(eps) ~ 1.5e-8 times |f''| (order 10 here).
    est = fd_grad(smooth, x64, scheme=scheme)
    ref = autograd_grad(smooth, x64)
    torch.testing.assert_close(est, ref, rtol=0, atol=1e-6)


def test_central_beats_forward_at_default_steps(x64):
    ref = autograd_grad(smooth, x64)
    central = (fd_grad(smooth, x64) - ref).abs().max()
    forward = (fd_grad(smooth, x64, scheme="forward") - ref).abs().max()
    assert central < forward / 10


def test_float32_default_step_is_accurate_and_tiny_step_is_refused():
    x = torch.linspace(-1.0, 1.5, 6)
    ref = autograd_grad(smooth, x.double()).float()
    # float32 central error ~ eps32^(2/3) ~ 2.4e-5 times derivative sizes
    torch.testing.assert_close(fd_grad(smooth, x), ref, rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="eps is too small"):
        fd_grad(smooth, x, eps=1e-12)


def test_relative_step_handles_large_coordinates():
    # A step of cbrt(eps) ~ 6e-6 would not even move 1e10 (its spacing is 2e-6) by a
    # resolvable amount; the relative step eps * |x_i| does.
    x = torch.tensor([1e10, 3.0], dtype=torch.float64)
    torch.testing.assert_close(fd_grad(lambda t: torch.log(t).sum(), x), 1 / x, rtol=1e-7, atol=0)


def test_black_box_in_numpy_falls_back_to_a_loop(x64):
    f = lambda t: float(np.sum(np.sin(t.numpy()) ** 2))  # noqa: E731
    ref = autograd_grad(lambda t: (torch.sin(t) ** 2).sum(), x64)
    torch.testing.assert_close(fd_grad(f, x64), ref, rtol=0, atol=1e-8)
    with pytest.raises(Exception):
        fd_grad(f, x64, vectorized=True)


def test_chunking_does_not_change_the_result(x64):
    torch.testing.assert_close(fd_grad(smooth, x64, chunk_size=5), fd_grad(smooth, x64), rtol=0, atol=0)


@pytest.mark.parametrize("scheme", ["central", "forward", "backward"])
def test_directional_derivative_is_grad_dot_v(x64, scheme):
    v = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = (autograd_grad(smooth, x64) * v).sum()
    tol = 1e-7 if scheme == "central" else 1e-5
    assert abs(float(fd_directional(smooth, x64, v, scheme=scheme) - ref)) < tol * (1 + abs(float(ref)))


def test_forward_gradient_is_unbiased_within_standard_errors():
    # Mean of M independent estimates; tolerance 4 standard errors from their sample std.
    x = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=torch.float64)
    ref = autograd_grad(smooth, x)
    gen = torch.Generator().manual_seed(2)
    estimates = torch.stack([forward_grad(smooth, x, num_samples=8, generator=gen) for _ in range(200)])
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    assert ((mean - ref).abs() < 4 * se).all(), (mean, ref, se)
    # ... and the spread is what theory says: Var[(g.v) v_i] = |g|^2 + g_i^2 per draw.
    predicted = torch.sqrt((ref.pow(2).sum() + ref.pow(2)) / 8)
    assert torch.allclose(estimates.std(0), predicted, rtol=0.25)


def test_forward_gradient_loop_and_vmap_agree():
    x = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64)
    a = forward_grad(smooth, x, 5, generator=torch.Generator().manual_seed(3), vectorized=True)
    b = forward_grad(smooth, x, 5, generator=torch.Generator().manual_seed(3), vectorized=False)
    torch.testing.assert_close(a, b)


def test_bad_inputs_get_clear_errors(x64):
    with pytest.raises(ValueError, match="scalar"):
        fd_grad(lambda t: t * 2, x64)
    with pytest.raises(ValueError, match="non-finite"):
        fd_grad(lambda t: (t.sum() > 0) * torch.tensor(float("nan")) + t.sum(), x64)
    with pytest.raises(ValueError, match="scheme"):
        fd_grad(smooth, x64, scheme="upwind")
    with pytest.raises(ValueError, match="eps"):
        fd_grad(smooth, x64, eps=-1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fd_grad(smooth, [1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        fd_grad(smooth, torch.arange(3))
    with pytest.raises(ValueError, match="shape of x"):
        fd_directional(smooth, x64, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="zero vector"):
        fd_directional(smooth, x64, torch.zeros_like(x64))
    with pytest.raises(ValueError, match="num_samples"):
        forward_grad(smooth, x64, num_samples=0)
    with pytest.raises(ValueError, match="scalar"):
        forward_grad(lambda t: t * 2, x64)


def test_evaluate_batch_reports_every_failure_mode():
    points = torch.randn(4, 2)
    assert evaluate_batch(lambda p: p.sum(), points).shape == (4,)
    assert evaluate_batch(lambda p: p.sum().item(), points).shape == (4,)  # loop fallback
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_batch(lambda p: p.sum() / 0.0, points)
    with pytest.raises(ValueError, match="vectorized"):
        evaluate_batch(lambda p: p.sum(), points, vectorized="yes")


# ---------------------------------------------------------------- every coordinate, every step size
@pytest.mark.parametrize("scheme", ["central", "forward", "backward"])
@pytest.mark.parametrize(
    "shape, chunk_size",
    [((5,), 2), ((5,), 4), ((7,), 3), ((1,), None), ((1,), 1), ((3, 3), 4)],
    ids=["last-chunk-of-1", "last-chunk-of-1b", "last-chunk-of-1c", "one-element", "one-element-chunk-1", "2d"],
)
def test_every_coordinate_is_differenced_including_a_last_chunk_of_one(scheme, shape, chunk_size):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tol = 1e-8 if scheme == "central" else 1e-5  # O(h^2) vs O(h) truncation at the default steps
    got = fd_grad(smooth, x, scheme=scheme, chunk_size=chunk_size)
    torch.testing.assert_close(got, autograd_grad(smooth, x), rtol=0, atol=tol)


@pytest.mark.parametrize("scheme", ["central", "forward", "backward"])
@pytest.mark.parametrize("v_scale", [1e-3, 1.0, 1e3])
def test_directional_step_moves_no_coordinate_more_than_the_default_step(x64, scheme, v_scale):
    x = 3 * x64  # max |x_i| > 1, so the relative step matters too
    v = v_scale * torch.randn(3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    points = []

    def recording(t: torch.Tensor) -> torch.Tensor:
        points.append(t.detach().clone())
        return smooth(t)

    fd_directional(recording, x, v, scheme=scheme)
    moved = max(float((p - x).abs().max()) for p in points)
    h = default_eps(torch.float64, scheme) * max(1.0, float(x.abs().max()))
    # the largest move is the default per-coordinate step (up to rounding), whatever |v| is
    assert h * (1 - 1e-6) <= moved <= h * (1 + 1e-6), (moved, h)
