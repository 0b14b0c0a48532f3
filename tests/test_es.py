"""Evolution-strategies estimators: unbiasedness (standard-error tolerances), variance, APIs, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradlab.nn as gnn
from gradlab.compare import cosine_similarity
from gradlab.es import (
    ES_grad,
    ES_step,
    ZeroOrderModule,
    centered_ranks,
    es_grad,
    es_grad_model,
    get_model_weights,
    set_model_weights,
    zero_order,
)
from gradlab.params import flatten_grads, flatten_params, unflatten_params

METHODS = ["naive", "forward", "antithetic"]
F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- a function with a known smoothed gradient
A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], dtype=F64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
C = torch.tensor([1.2, -0.6, 0.3], dtype=F64)
X0 = torch.tensor([0.5, -1.0, 0.8], dtype=F64)
SIGMA = 0.5


def cubic(x: torch.Tensor) -> torch.Tensor:
    r"""$\tfrac12 x^\top A x + b^\top x + \sum_i c_i x_i^3$."""
    return 0.5 * x @ A @ x + B @ x + (C * x**3).sum()


def smoothed_grad(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""$\nabla \mathbb E[f(x+\sigma z)] = Ax + b + 3c\odot x^2 + 3\sigma^2 c$ (since $\mathbb E(x+\sigma z)^3 = x^3 + 3x\sigma^2$)."""
    return A @ x + B + 3 * C * x**2 + 3 * sigma**2 * C


def true_grad(x: torch.Tensor) -> torch.Tensor:
    return A @ x + B + 3 * C * x**2


def repeated(estimator, count: int = 300) -> torch.Tensor:
    return torch.stack([estimator() for _ in range(count)])


def within_standard_errors(estimates: torch.Tensor, target: torch.Tensor, k: float = 4.0) -> bool:
    """Mean of the estimates within k standard errors (from their sample std) in every component."""
    mean = estimates.mean(0)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    return bool(((mean - target).abs() < k * se).all())


# ---------------------------------------------------------------- es_grad: statistics
@pytest.mark.parametrize("method", METHODS)
def test_es_grad_is_unbiased_for_the_smoothed_gradient(method):
    g = gen(10)
    est = repeated(lambda: es_grad(cubic, X0, sigma=SIGMA, num_samples=64, method=method, generator=g))
    assert within_standard_errors(est, smoothed_grad(X0, SIGMA)), (est.mean(0), smoothed_grad(X0, SIGMA))
    # ... and the test has the power to see the smoothing bias 3 sigma^2 c when the
    # target is the plain gradient (so it would also see a wrong scaling).
    assert not within_standard_errors(est, true_grad(X0))


def torchopt_forward_0_7_3(f, x, sigma, num_samples, generator):
    """TorchOpt 0.7.3's 'forward' formula, written out: multiplies by sigma and
    overwrites its baseline with the previous difference."""
    baseline = f(x)
    grad = torch.zeros_like(x)
    for _ in range(num_samples):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        baseline = f(x + sigma * z) - baseline
        grad += baseline * sigma * z
    return grad / num_samples


def test_torchopt_style_forward_is_detectably_biased_and_gradlabs_is_not():
    target = smoothed_grad(X0, SIGMA)
    g1, g2 = gen(11), gen(11)
    theirs = repeated(lambda: torchopt_forward_0_7_3(cubic, X0, SIGMA, 16, g1), 200)
    ours = repeated(lambda: es_grad(cubic, X0, sigma=SIGMA, num_samples=16, method="forward", generator=g2), 200)
    assert within_standard_errors(ours, target)
    assert not within_standard_errors(theirs, target, k=10.0), (theirs.mean(0), target)


def test_antithetic_has_lower_variance_than_naive_on_a_smooth_function():
    sigma, n = 0.1, 10
    g_naive, g_anti = gen(12), gen(12)
    naive = repeated(lambda: es_grad(lambda x: cubic(x) + 4.0, X0, sigma=sigma, num_samples=n, method="naive", generator=g_naive), 200)
    anti = repeated(lambda: es_grad(lambda x: cubic(x) + 4.0, X0, sigma=sigma, num_samples=n, method="antithetic", generator=g_anti), 200)
    # naive carries f(x)^2/sigma^2 per draw; antithetic only |grad|^2 + O(sigma^2)
    assert anti.var(0).sum() < 0.05 * naive.var(0).sum()


def total_variance(estimates: torch.Tensor):
    r"""$\mathbb E\|\hat g - \bar g\|^2$ from repeated estimates, and its standard error."""
    squared = ((estimates - estimates.mean(0)) ** 2).sum(1)
    return float(squared.mean()), float(squared.std()) / math.sqrt(squared.numel())


def test_forward_has_lower_variance_than_naive():
    # naive weights carry f(x + sigma z)/sigma, forward only (f(x + sigma z) - f(x))/sigma:
    # the baseline f(x) = cubic(X0) + 4 removes most of the variance.
    sigma, n = 0.1, 10
    f = lambda x: cubic(x) + 4.0  # noqa: E731
    g_naive, g_forward = gen(13), gen(14)
    naive = repeated(lambda: es_grad(f, X0, sigma=sigma, num_samples=n, method="naive", generator=g_naive), 200)
    forward = repeated(lambda: es_grad(f, X0, sigma=sigma, num_samples=n, method="forward", generator=g_forward), 200)
    (v_naive, se_naive), (v_forward, se_forward) = total_variance(naive), total_variance(forward)
    assert v_naive - v_forward > 4 * math.hypot(se_naive, se_forward), (v_naive, se_naive, v_forward, se_forward)


def test_antithetic_centered_ranks_rank_both_halves_together():
    n, sigma, seed = 6, 0.3, 20
    got = es_grad(cubic, X0, sigma=sigma, num_samples=n, method="antithetic", generator=gen(seed),
                  fitness_shaping="centered_rank")
    z = torch.randn(n, 3, generator=gen(seed), dtype=F64)
    plus = torch.stack([cubic(X0 + sigma * z_n) for z_n in z])
    minus = torch.stack([cubic(X0 - sigma * z_n) for z_n in z])
    joint = centered_ranks(torch.cat([plus, minus]))  # all 2n values ranked together
    expected = ((joint[:n] - joint[n:]) / (2 * sigma)) @ z / n
    torch.testing.assert_close(got, expected)
    separate = ((centered_ranks(plus) - centered_ranks(minus)) / (2 * sigma)) @ z / n
    assert not torch.allclose(expected, separate)  # so the test tells the two apart


def test_vmap_and_loop_give_identical_estimates():
    for method in METHODS:
        a = es_grad(cubic, X0, sigma=0.3, num_samples=7, method=method, generator=gen(1), vectorized=True)
        b = es_grad(cubic, X0, sigma=0.3, num_samples=7, method=method, generator=gen(1), vectorized=False)
        torch.testing.assert_close(a, b)


def test_numpy_black_box_works_through_the_loop_fallback():
    f = lambda x: float(np.sum(x.numpy() ** 2))  # noqa: E731
    a = es_grad(f, X0, sigma=0.3, num_samples=7, generator=gen(2))
    b = es_grad(lambda x: (x**2).sum(), X0, sigma=0.3, num_samples=7, generator=gen(2))
    torch.testing.assert_close(a, b)
    with pytest.raises(Exception):
        es_grad(f, X0, sigma=0.3, num_samples=7, vectorized=True)


def test_distribution_objects_and_functions_are_accepted():
    normal = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
    torch.manual_seed(3)
    a = es_grad(cubic, X0, sigma=0.3, num_samples=5, distribution=normal)
    torch.manual_seed(3)
    b = es_grad(cubic, X0, sigma=0.3, num_samples=5, distribution=lambda shape: torch.randn(shape))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="returned shape"):
        es_grad(cubic, X0, sigma=0.3, num_samples=5, distribution=torch.distributions.Normal(torch.zeros(2), 1.0))


def test_centered_rank_shaping_depends_only_on_the_order_of_values():
    r = centered_ranks(torch.tensor([3.0, -1.0, 10.0, 0.0]))
    torch.testing.assert_close(r, torch.tensor([1 / 6, -0.5, 0.5, -1 / 6]))
    for method in METHODS:
        a = es_grad(cubic, X0, sigma=0.3, num_samples=9, method=method, generator=gen(4), fitness_shaping="centered_rank")
        b = es_grad(lambda x: torch.exp(cubic(x) / 5), X0, sigma=0.3, num_samples=9, method=method,
                    generator=gen(4), fitness_shaping="centered_rank")
        torch.testing.assert_close(a, b)
        plain = es_grad(cubic, X0, sigma=0.3, num_samples=9, method=method, generator=gen(4))
        assert not torch.allclose(a, plain)


def test_es_grad_keeps_shape_dtype_and_ignores_autograd_history():
    w = torch.randn(2, 3, requires_grad=True)
    est = es_grad(lambda t: (t**2).sum(), w * 1.0, sigma=0.1, num_samples=4, generator=gen(5))
    assert est.shape == (2, 3) and est.dtype == torch.float32 and not est.requires_grad


def test_es_grad_bad_inputs_get_clear_errors():
    f = lambda x: (x**2).sum()  # noqa: E731
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            es_grad(f, X0, sigma=sigma, num_samples=3)
    with pytest.raises(ValueError, match="num_samples"):
        es_grad(f, X0, sigma=0.1, num_samples=0)
    with pytest.raises(TypeError, match="num_samples"):
        es_grad(f, X0, sigma=0.1, num_samples=2.5)
    with pytest.raises(ValueError, match="method"):
        es_grad(f, X0, sigma=0.1, num_samples=3, method="central")
    with pytest.raises(ValueError, match="fitness_shaping"):
        es_grad(f, X0, sigma=0.1, num_samples=3, fitness_shaping="rank")
    with pytest.raises(ValueError, match="scalar"):
        es_grad(lambda x: x * 2, X0, sigma=0.1, num_samples=3)
    with pytest.raises(ValueError, match="scalar"):
        es_grad(lambda x: np.ones(2), X0, sigma=0.1, num_samples=3)
    with pytest.raises(ValueError, match="non-finite"):
        es_grad(lambda x: torch.log(x[0] - 10.0), X0, sigma=0.1, num_samples=3)
    with pytest.raises(ValueError, match="non-finite"):
        es_grad(lambda x: float("inf"), X0, sigma=0.1, num_samples=3)


# ---------------------------------------------------------------- es_grad_model
def mlp(*modules: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*modules).double()


def batch(in_features: int = 6, classes: int = 3, size: int = 20):
    g = gen(7)
    return torch.randn(size, in_features, generator=g, dtype=F64), torch.randint(0, classes, (size,), generator=g)


def flat_loss(model, loss_fn, x, y):
    return lambda theta: loss_fn(torch.func.functional_call(model, unflatten_params(theta, model), (x,)), y)


def backprop_grad(model, loss_fn, x, y) -> torch.Tensor:
    model.zero_grad()
    loss_fn(model(x), y).backward()
    grad = flatten_grads(model)
    model.zero_grad()
    return grad


MODELS = {
    "torch": lambda: mlp(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)),
    "gradlab": lambda: mlp(gnn.Linear(6, 8), gnn.ReQU(), nn.Linear(8, 5, bias=False), gnn.ReLU(), gnn.Linear(5, 3)),
    "flatten": lambda: mlp(nn.Flatten(), nn.Linear(6, 4), nn.SiLU(), nn.Linear(4, 3)),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rank", [None, 2])
def test_fast_path_equals_generic_vmap_path(name, method, rank):
    model, (x, y) = MODELS[name](), batch()
    if name == "flatten":
        x = x.view(20, 2, 3)
    loss_fn = nn.CrossEntropyLoss()
    kw = dict(sigma=0.05, num_samples=6, method=method, rank=rank)
    fast = es_grad_model(model, loss_fn, x, y, generator=gen(8), **kw)
    generic = es_grad_model(model, loss_fn, x, y, generator=gen(8), fast=False, **kw)
    torch.testing.assert_close(fast, generic, rtol=1e-9, atol=1e-12)


def test_gradlab_layers_opt_into_the_fast_path_without_an_import_of_gradlab_nn():
    from gradlab.es.fastpath import fast_plan

    model, (x, _) = MODELS["gradlab"](), batch()
    assert fast_plan(model, x) is not None  # gradlab.nn's layers declare gradlab_layer
    assert [kind for kind, _ in fast_plan(model, x)] == ["linear", "act", "linear", "act", "linear"]


def double(module, inputs, output):
    return 2 * output


@pytest.mark.parametrize("where", ["layer", "pre-hook", "global"])
def test_hooks_that_change_values_send_the_call_to_the_generic_path(where):
    from gradlab.es.fastpath import fast_plan

    model, (x, y) = MODELS["torch"](), batch()
    loss_fn = nn.CrossEntropyLoss()
    kw = dict(sigma=0.05, num_samples=6, method="antithetic", chunk_size=6)
    plain = es_grad_model(model, loss_fn, x, y, generator=gen(9), **kw)
    if where == "layer":
        handle = model[2].register_forward_hook(double)
    elif where == "pre-hook":
        handle = model[2].register_forward_pre_hook(lambda module, args: (args[0] * 3,))
    else:  # a global hook: invisible to any per-module check
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda module, inputs, output: double(module, inputs, output) if module is model[2] else None)
    try:
        assert fast_plan(model, x) is None
        fast = es_grad_model(model, loss_fn, x, y, generator=gen(9), **kw)
        generic = es_grad_model(model, loss_fn, x, y, generator=gen(9), fast=False, **kw)
    finally:
        handle.remove()
    torch.testing.assert_close(fast, generic, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(fast, plain)  # the hook does change the estimate
    assert fast_plan(model, x) is not None  # and without it the fast path is back


def test_an_observing_hook_leaves_the_fast_path_and_its_numbers_alone():
    from gradlab.es.fastpath import fast_plan

    model, (x, y) = MODELS["torch"](), batch()
    seen = []
    handle = model[1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    try:
        assert fast_plan(model, x) is not None and seen
        kw = dict(sigma=0.05, num_samples=6, chunk_size=6)
        fast = es_grad_model(model, nn.CrossEntropyLoss(), x, y, generator=gen(10), **kw)
        generic = es_grad_model(model, nn.CrossEntropyLoss(), x, y, generator=gen(10), fast=False, **kw)
    finally:
        handle.remove()
    torch.testing.assert_close(fast, generic, rtol=1e-9, atol=1e-12)


def test_batched_cross_entropy_shortcut_matches_the_vmapped_loss():
    model, (x, y) = MODELS["torch"](), batch()
    kw = dict(sigma=0.05, num_samples=6)
    direct = es_grad_model(model, nn.functional.cross_entropy, x, y, generator=gen(19), **kw)
    wrapped = es_grad_model(model, lambda out, t: nn.functional.cross_entropy(out, t), x, y, generator=gen(19), **kw)
    torch.testing.assert_close(direct, wrapped, rtol=1e-9, atol=1e-12)
    smoothed = es_grad_model(model, nn.CrossEntropyLoss(label_smoothing=0.1), x, y, generator=gen(19), **kw)
    assert not torch.allclose(smoothed, direct)


def test_es_grad_model_is_es_grad_of_the_flat_loss():
    model, (x, y) = MODELS["torch"](), batch()
    loss_fn = nn.CrossEntropyLoss()
    for method in METHODS:
        a = es_grad_model(model, loss_fn, x, y, sigma=0.05, num_samples=6, method=method, generator=gen(9))
        b = es_grad(flat_loss(model, loss_fn, x, y), flatten_params(model), sigma=0.05, num_samples=6,
                    method=method, generator=gen(9))
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


class NoiseTable:
    """A 'distribution' that hands out consecutive rows of a fixed table."""

    def __init__(self, rows: int, cols: int) -> None:
        self.table, self.next = torch.randn(rows, cols, generator=gen(10), dtype=F64), 0

    def sample(self, shape):
        rows = self.table[self.next : self.next + shape[0], : shape[1]]
        self.next += shape[0]
        return rows


def test_chunking_does_not_change_the_estimate():
    model, (x, y) = MODELS["torch"](), batch()
    d = flatten_params(model).numel()
    whole = es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=0.05, num_samples=10, distribution=NoiseTable(10, d))
    parts = es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=0.05, num_samples=10,
                          distribution=NoiseTable(10, d), chunk_size=3)
    torch.testing.assert_close(whole, parts, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rank", [None, 1, 3])
def test_es_grad_model_is_unbiased_on_a_quadratic_loss(rank):
    # A linear model with MSE is quadratic in theta, so grad of the smoothed loss = backprop's;
    # low-rank noise has Cov = I, hence is unbiased here too.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, t = torch.randn(16, 4, dtype=F64), torch.randn(16, 3, dtype=F64)
    ref = backprop_grad(model, nn.MSELoss(), x, t)
    g = gen(12)
    est = repeated(lambda: es_grad_model(model, nn.MSELoss(), x, t, sigma=0.2, num_samples=8, rank=rank, generator=g), 200)
    assert within_standard_errors(est, ref)
    assert not within_standard_errors(est, 1.5 * ref)  # power: a 50% scale error is seen


@pytest.mark.parametrize("rank", [None, 2])
def test_es_grad_model_aligns_with_backprop(rank):
    # antithetic, small sigma: per-draw error ~ |g| in each of d directions, so
    # cos ~ 1/sqrt(1 + (d + 1)/N) = 0.97 for d = 95, N = 2000; low rank adds a little.
    model, (x, y) = MODELS["torch"](), batch()
    ref = backprop_grad(model, nn.CrossEntropyLoss(), x, y)
    est = es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=1e-3, num_samples=2000, rank=rank, generator=gen(13))
    assert cosine_similarity(est, ref) > 0.9


def test_generic_models_and_unchanged_parameters():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(x + torch.tanh(self.a(x)))

    torch.manual_seed(0)
    model, (x, y) = Residual().double(), batch()
    before = flatten_params(model)
    est = es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=0.05, num_samples=5, generator=gen(14))
    ref = es_grad(flat_loss(model, nn.CrossEntropyLoss(), x, y), before, sigma=0.05, num_samples=5, generator=gen(14))
    torch.testing.assert_close(est, ref)
    torch.testing.assert_close(flatten_params(model), before, rtol=0, atol=0)


def test_es_grad_model_bad_inputs_get_clear_errors():
    model, (x, y) = MODELS["torch"](), batch()
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="sigma"):
        es_grad_model(model, ce, x, y, sigma=0.0, num_samples=3)
    with pytest.raises(ValueError, match="num_samples"):
        es_grad_model(model, ce, x, y, sigma=0.1, num_samples=0)
    with pytest.raises(ValueError, match="rank"):
        es_grad_model(model, ce, x, y, sigma=0.1, num_samples=3, rank=0)
    with pytest.raises(ValueError, match="no parameters"):
        es_grad_model(nn.Sequential(nn.ReLU()), ce, x, y, sigma=0.1, num_samples=3)
    with pytest.raises(ValueError, match="scalar"):
        es_grad_model(model, nn.CrossEntropyLoss(reduction="none"), x, y, sigma=0.1, num_samples=3)
    with pytest.raises(ValueError, match="non-finite"):
        es_grad_model(model, lambda out, t: out.sum() / 0.0, x, y, sigma=0.1, num_samples=3)
    with pytest.raises(TypeError, match="model"):
        es_grad_model(lambda v: v, ce, x, y, sigma=0.1, num_samples=3)


# ---------------------------------------------------------------- zero_order and ZeroOrderModule
def linear_loss(params, x, y):
    weight, bias = params
    return nn.functional.mse_loss(x @ weight.T + bias, y)


def linear_problem():
    torch.manual_seed(2)
    layer = nn.Linear(5, 2).double()
    x, y = torch.randn(12, 5, dtype=F64), torch.randn(12, 2, dtype=F64)
    return layer, x, y


@pytest.mark.parametrize("method", METHODS)
def test_zero_order_agrees_with_es_grad_for_the_same_seed(method):
    layer, x, y = linear_problem()
    params = (layer.weight, layer.bias)
    decorated = zero_order(method=method, argnums=0, num_samples=9, sigma=0.1, generator=gen(15))(linear_loss)
    loss = decorated(params, x, y)
    torch.testing.assert_close(loss, linear_loss(params, x, y).detach())
    grads = torch.autograd.grad(loss, params)
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    ref = es_grad(lambda t: linear_loss((t[:10].view(2, 5), t[10:]), x, y), theta, sigma=0.1, num_samples=9,
                  method=method, generator=gen(15))
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in grads]), ref)


def test_zero_order_with_several_argnums_and_backward():
    layer, x, y = linear_problem()
    weight = layer.weight.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)

    @zero_order(torch.distributions.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)),
                "antithetic", argnums=(0, 2), num_samples=4000, sigma=1e-3)
    def loss_fn(w, inputs, b, targets):
        return nn.functional.mse_loss(inputs @ w.T + b, targets)

    (3 * loss_fn(weight, x, bias, y)).backward()
    ref_w, ref_b = torch.autograd.grad(3 * nn.functional.mse_loss(x @ weight.T + bias, y), (weight, bias))
    est = torch.cat([weight.grad.reshape(-1), bias.grad])
    assert cosine_similarity(est, torch.cat([ref_w.reshape(-1), ref_b])) > 0.97
    assert abs(est.norm() / torch.cat([ref_w.reshape(-1), ref_b]).norm() - 1) < 0.2  # grad_output 3 applied


def test_zero_order_errors():
    layer, x, y = linear_problem()
    with pytest.raises(ValueError, match="method"):
        zero_order(method="central")
    with pytest.raises(ValueError, match="argnums"):
        zero_order(argnums=(0, 0))
    with pytest.raises(ValueError, match="sigma"):
        zero_order(sigma=-1.0)
    with pytest.raises(ValueError, match="out of range"):
        zero_order(argnums=5)(linear_loss)((layer.weight, layer.bias), x, y)
    with pytest.raises(ValueError, match="scalar"):
        zero_order()(lambda w: w * 2)(layer.weight)
    with pytest.raises(TypeError, match="floating-point tensor"):
        zero_order(argnums=1)(lambda w, n: w.sum() * n)(layer.weight, 3)


def test_zero_order_negative_argnums_count_from_the_end():
    a, b, c = (torch.randn(3, generator=gen(k), dtype=F64, requires_grad=True) for k in (30, 31, 32))

    def f(x, y, w):
        return (x * y * w).sum() + (w**2).sum()

    for argnums, selected in ((-1, (2,)), ((0, -1), (0, 2)), ((-3, -2), (0, 1))):
        out = zero_order(argnums=argnums, num_samples=5, sigma=0.1, generator=gen(33))(f)(a, b, c)
        grads = torch.autograd.grad(out, (a, b, c), allow_unused=True)
        assert [k for k, g in enumerate(grads) if g is not None] == list(selected), argnums
        args = [a.detach(), b.detach(), c.detach()]

        def flat_f(t):
            new = list(args)
            for k, piece in zip(selected, t.split(3)):
                new[k] = piece
            return f(*new)

        ref = es_grad(flat_f, torch.cat([args[k] for k in selected]), sigma=0.1, num_samples=5,
                      method="naive", generator=gen(33))
        torch.testing.assert_close(torch.cat([grads[k] for k in selected]), ref)
    with pytest.raises(ValueError, match="twice"):
        zero_order(argnums=(2, -1))(f)(a, b, c)


class Regression(ZeroOrderModule, method="antithetic", num_samples=9, sigma=0.1):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2).double()

    def forward(self, x, y):
        return nn.functional.mse_loss(self.fc(x), y)


def test_zero_order_module_matches_es_grad_model():
    _, x, y = linear_problem()
    torch.manual_seed(3)
    net = Regression()
    net.generator = gen(16)
    net(x, y).backward()
    est = flatten_grads(net)
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(5, 2).double())
    ref = es_grad_model(plain, nn.MSELoss(), x, y, sigma=0.1, num_samples=9, generator=gen(16))
    torch.testing.assert_close(est, ref)
    assert gnn.ZeroOrderModule is ZeroOrderModule


def test_zero_order_module_called_twice_gives_es_estimates_both_times():
    _, x, y = linear_problem()
    torch.manual_seed(3)
    net = Regression()
    net.generator = gen(17)
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(5, 2).double())
    exact = backprop_grad(plain, nn.MSELoss(), x, y)
    reference_generator = gen(17)
    for call in range(2):
        net.zero_grad()
        net(x, y).backward()
        ref = es_grad_model(plain, nn.MSELoss(), x, y, sigma=0.1, num_samples=9, generator=reference_generator)
        torch.testing.assert_close(flatten_grads(net), ref, msg=f"call {call + 1}")
        assert not torch.allclose(flatten_grads(net), exact, rtol=1e-3, atol=1e-6), f"call {call + 1} is exact"
    with pytest.raises(RuntimeError):
        net(x[:, :3], y)  # a failing call must not leave the module in its inner (exact) mode
    net.zero_grad()
    net(x, y).backward()
    ref = es_grad_model(plain, nn.MSELoss(), x, y, sigma=0.1, num_samples=9, generator=reference_generator)
    torch.testing.assert_close(flatten_grads(net), ref)


def test_zero_order_module_uses_a_custom_sample_and_class_keywords():
    calls = []

    class Custom(Regression, num_samples=3):
        def sample(self, sample_shape=torch.Size()):
            calls.append(tuple(sample_shape))
            return torch.ones(sample_shape)

    _, x, y = linear_problem()
    net = Custom()
    net(x, y).backward()
    assert calls == [(3, 12)]  # one batch of noise for all 12 parameters, 3 draws
    assert Custom._zo_config == {"method": "antithetic", "num_samples": 3, "sigma": 0.1}
    with pytest.raises(ValueError, match="method"):
        type("Bad", (ZeroOrderModule,), {}, method="bogus")


# ---------------------------------------------------------------- seed-style helpers
def test_model_weights_round_trip_as_tensors():
    model = MODELS["torch"]()
    w = get_model_weights(model)
    assert isinstance(w, torch.Tensor) and w.shape == (flatten_params(model).numel(),)
    set_model_weights(model, w * 2)
    torch.testing.assert_close(get_model_weights(model), 2 * w)
    with pytest.raises(ValueError):
        set_model_weights(model, w[:-1])


def test_ES_grad_naive_is_the_labs_formula():  # noqa: N802
    model, (x, y) = MODELS["torch"](), batch()
    loss = nn.CrossEntropyLoss()
    sigma, n = 0.01, 7
    est = ES_grad(model, loss, x, y, sigma, n, generator=gen(17), method="naive")
    # (1 / (N sigma^2)) sum_n L(w + v_n) v_n with v_n = sigma z_n, by a loop over set_model_weights
    w0 = get_model_weights(model)
    v = sigma * torch.randn(n, w0.numel(), generator=gen(17), dtype=F64)
    total = torch.zeros_like(w0)
    for v_n in v:
        set_model_weights(model, w0 + v_n)
        total += loss(model(x), y).detach() * v_n
    set_model_weights(model, w0)
    torch.testing.assert_close(est, total / (n * sigma**2))


def test_ES_step_descends():  # noqa: N802
    model, (x, y) = MODELS["torch"](), batch()
    loss = nn.CrossEntropyLoss()
    w0 = get_model_weights(model)
    grad = ES_grad(model, loss, x, y, 1e-3, 50, generator=gen(18))
    before = ES_step(model, loss, x, y, 0.5, 1e-3, 50, generator=gen(18))
    torch.testing.assert_close(get_model_weights(model), w0 - 0.5 * grad)
    with torch.no_grad():
        assert before == pytest.approx(float(loss(MODELS["torch"]()(x), y)))
    with torch.no_grad():
        assert float(loss(model(x), y)) < before
