"""BlackboxGradientEstimator: the score-function estimate, its options, and the iris regularizer loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab import BlackboxGradientEstimator  # the notebook's import line, pointed at gradlab
from gradlab.data import load_iris_tensors
from gradlab.params import flatten_grads, flatten_params

F64 = torch.float64
TARGET = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)


def quadratic(theta: torch.Tensor) -> torch.Tensor:
    r"""$\|\theta - t\|^2$: the smoothed gradient is the plain one, $2(\mu - t)$."""
    return ((theta - TARGET) ** 2).sum()


def offset_quadratic(theta: torch.Tensor) -> torch.Tensor:
    """The same plus 50: a large constant a baseline removes."""
    return quadratic(theta) + 50.0


def repeated(estimator, count: int = 300) -> torch.Tensor:
    return torch.stack([estimator() for _ in range(count)])


def within_standard_errors(estimates: torch.Tensor, target: torch.Tensor, k: float = 4.0) -> bool:
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(estimates.shape[0])
    return bool(((mean - target).abs() < k * se).all())


MU = torch.zeros(4, dtype=F64)


@pytest.mark.parametrize("baseline", [False, True])
def test_score_function_estimate_is_unbiased(baseline):
    est = BlackboxGradientEstimator(quadratic, baseline=baseline, generator=torch.Generator().manual_seed(0))
    samples = repeated(lambda: est.estimate(MU, num_samples=20, sigma=0.5))
    assert within_standard_errors(samples, 2 * (MU - TARGET))
    assert not within_standard_errors(samples, 3 * (MU - TARGET))  # the test sees a 50% scale error


def test_baseline_reduces_variance():
    plain = BlackboxGradientEstimator(offset_quadratic, generator=torch.Generator().manual_seed(1))
    based = BlackboxGradientEstimator(offset_quadratic, baseline=True, generator=torch.Generator().manual_seed(1))
    var_plain = repeated(lambda: plain.estimate(MU, 20, 0.5), 200).var(0).sum()
    var_based = repeated(lambda: based.estimate(MU, 20, 0.5), 200).var(0).sum()
    assert var_based < 0.2 * var_plain  # the offset 50 dominates the plain estimator's variance


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_gradient_is_clipped_scaled_and_accumulated():
    net = small_net()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    est = BlackboxGradientEstimator(lambda theta: (theta**2).sum() * 100, generator=torch.Generator().manual_seed(2))
    added = est.add_estimated_grad_to_network(net, num_samples=10, sigma=0.1, bb_objective_coef=0.5, clip_norm=2.0)
    assert added.norm() == pytest.approx(1.0)  # clipped to 2, then times 0.5
    torch.testing.assert_close(flatten_grads(net), 1 + added)
    fresh = small_net()
    added = est.add_estimated_grad_to_network(fresh, num_samples=10, sigma=0.1, bb_objective_coef=2.0, clip_norm=None)
    assert added.norm() > 2.0
    torch.testing.assert_close(flatten_grads(fresh), added)  # .grad created where it was None


def test_numpy_black_box_is_looped_and_matches_the_torch_one():
    net = small_net()
    torch_est = BlackboxGradientEstimator(lambda t: (t**2).sum(), generator=torch.Generator().manual_seed(3))
    numpy_est = BlackboxGradientEstimator(lambda t: float(np.sum(t.numpy() ** 2)), generator=torch.Generator().manual_seed(3))
    a = torch_est.estimate(flatten_params(net), 8, 0.3)
    b = numpy_est.estimate(flatten_params(net), 8, 0.3)
    torch.testing.assert_close(a, b)


def test_bad_inputs_get_clear_errors():
    net = small_net()
    with pytest.raises(TypeError, match="black_box_function"):
        BlackboxGradientEstimator(3.0)
    est = BlackboxGradientEstimator(lambda t: t.sum())
    with pytest.raises(ValueError, match="num_samples"):
        est.add_estimated_grad_to_network(net, num_samples=0, sigma=1.0, bb_objective_coef=1, clip_norm=1.0)
    with pytest.raises(ValueError, match="sigma"):
        est.add_estimated_grad_to_network(net, num_samples=5, sigma=0.0, bb_objective_coef=1, clip_norm=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        est.add_estimated_grad_to_network(net, num_samples=5, sigma=1.0, bb_objective_coef=1, clip_norm=-1.0)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        BlackboxGradientEstimator(lambda t: t.sum(), baseline=True).estimate(MU, 1, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        BlackboxGradientEstimator(lambda t: t.sum() / 0.0).estimate(MU, 3, 1.0)
    with pytest.raises(ValueError, match="scalar"):
        BlackboxGradientEstimator(lambda t: t * 2).estimate(MU, 3, 1.0)


# ---------------------------------------------------------------- the source notebook's regularizer loop
def weights_near_plus_minus_five(flat_weights: torch.Tensor) -> torch.Tensor:
    """Black-box quality of the weights: distance of every |weight| from 5 (no gradient used)."""
    with torch.no_grad():
        return torch.linalg.norm(flat_weights.abs() - 5)


def test_blackbox_regularizer_loop_on_iris_lowers_the_objective_and_keeps_accuracy():
    """The notebook's training loop with its calls and settings (1000 epochs, ~3 s)."""
    x, y = load_iris_tensors()
    grad_estimator = BlackboxGradientEstimator(black_box_function=weights_near_plus_minus_five)

    def train_net(net_, bb_args, epochs, lr):
        opt = torch.optim.Adam(net_.parameters(), lr=lr)
        cross_entropy = torch.nn.CrossEntropyLoss()
        wb_history, bb_history = [], []
        for _ in range(epochs):
            opt.zero_grad()
            white_box = cross_entropy(net_(x), y)
            white_box.backward()
            grad_estimator.add_estimated_grad_to_network(network=net_, **bb_args)
            wb_history.append(white_box.item())
            flat = torch.cat([p.flatten() for p in net_.parameters()])
            bb_history.append(grad_estimator.black_box_function(flat).item())
            opt.step()
        return net_, wb_history, bb_history

    torch.manual_seed(1)
    width = 10
    net = torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.SiLU(),
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, 3),
    )
    bb_args = {"num_samples": 100, "sigma": 1.0, "bb_objective_coef": 1, "clip_norm": 1.0}
    net, wb_history, bb_history = train_net(net, bb_args, epochs=1000, lr=1e-1)

    accuracy = (net(x).argmax(1) == y).float().mean().item()
    print(f"L_bb {bb_history[0]:.1f} -> {bb_history[-1]:.1f}, L_wb {wb_history[0]:.3f} -> {wb_history[-1]:.3f}, "
          f"accuracy {accuracy:.3f}")
    assert bb_history[-1] < 0.75 * bb_history[0]  # measured: 67.0 -> 44.9
    assert min(bb_history[-20:]) < min(bb_history[:20]) - 5
    assert accuracy >= 0.9  # measured: 0.98
    assert wb_history[-1] < 0.2


def test_leave_one_out_baseline_is_exact_for_a_fixed_draw():
    # b_k is the mean of the *other* n - 1 values; a baseline that includes value k itself
    # shrinks the estimate by (n - 1)/n (5% at n = 20), which a statistical tolerance cannot see.
    n, sigma, seed = 20, 0.5, 40
    est = BlackboxGradientEstimator(offset_quadratic, baseline=True, generator=torch.Generator().manual_seed(seed))
    got = est.estimate(MU, n, sigma)
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
    values = torch.stack([offset_quadratic(MU + sigma * z_k) for z_k in z])
    others = torch.stack([torch.cat([values[:k], values[k + 1 :]]).mean() for k in range(n)])
    expected = sum((values[k] - others[k]) * z[k] for k in range(n)) / (n * sigma)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_leave_one_out_baseline_is_exact_in_float32_when_one_value_dominates():
    """(sum - v_k)/(n - 1) gives b_0 = 1.333 for [3e7, 1, 2, 3] in float32; the mean of the others is 2.
    The estimate uses this baseline: replacing it by zeros gives the plain estimate."""
    values = torch.tensor([3e7, 1.0, 2.0, 3.0], dtype=torch.float32)
    b = BlackboxGradientEstimator.leave_one_out_baseline(values)
    print("b", b.tolist())
    assert b[0].item() == 2.0

    class ZeroBaseline(BlackboxGradientEstimator):
        @staticmethod
        def leave_one_out_baseline(values):
            return torch.zeros_like(values)

    based = ZeroBaseline(offset_quadratic, baseline=True, generator=torch.Generator().manual_seed(3))
    plain = BlackboxGradientEstimator(offset_quadratic, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(based.estimate(MU, 8, 0.5), plain.estimate(MU, 8, 0.5), rtol=0, atol=0)
