"""gradlab.autograd: custom Functions against gradcheck, closed forms and torch's own ops."""
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from gradlab.autograd import LinearFunction, MyReLU, ReQU, linear, my_relu, requ

F64 = torch.float64
SHAPES = [(), (5,), (3, 4), (2, 3, 4)]


def away_from_zero(shape, seed):
    """Random float64 values with |x| >= 0.1, so central differences never straddle the kink."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64)
    return (x.sign() * (x.abs() + 0.1)).requires_grad_()


def with_zeros():
    """A vector that contains exact zeros next to positive and negative values."""
    return torch.tensor([-2.0, -0.5, 0.0, 0.0, 0.3, 1.0, 0.0, -1e-3, 2.5], dtype=F64).requires_grad_()


# ------------------------------------------------------------------ forward values


def test_my_relu_forward_matches_max():
    x = with_zeros()
    assert torch.equal(my_relu(x), torch.clamp(x, min=0))
    assert torch.equal(MyReLU.apply(x), torch.relu(x))


def test_requ_forward_closed_form():
    x = with_zeros()
    expected = torch.where(x > 0, x**2, torch.zeros_like(x))
    assert torch.equal(requ(x), expected)
    assert torch.equal(ReQU.apply(x), expected)


# ------------------------------------------------------------------ gradcheck


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", [MyReLU.apply, ReQU.apply], ids=["relu", "requ"])
def test_elementwise_gradcheck(fn, shape):
    assert gradcheck(fn, (away_from_zero(shape, seed=len(shape)),))


@pytest.mark.parametrize("fn", [MyReLU.apply, ReQU.apply], ids=["relu", "requ"])
def test_elementwise_gradgradcheck(fn):
    assert gradgradcheck(fn, (away_from_zero((3, 4), seed=1),))


def test_requ_gradcheck_with_exact_zeros():
    # ReQU is differentiable at 0 (derivative 2x = 0), so gradcheck passes there.
    assert gradcheck(ReQU.apply, (with_zeros(),))


def test_relu_subgradient_at_zero_is_zero_like_torch():
    x = with_zeros()
    (grad,) = torch.autograd.grad(my_relu(x).sum(), x)
    (torch_grad,) = torch.autograd.grad(torch.relu(x).sum(), x)
    assert torch.equal(grad, torch_grad)
    assert grad[x == 0].eq(0).all()
    assert torch.equal(grad, (x > 0).to(F64))


def test_relu_gradcheck_at_zero_fails_for_torch_too():
    # Documented: central differences see slope 1/2 at the kink, any subgradient choice in {0, 1} fails.
    x = torch.tensor([0.0], dtype=F64, requires_grad=True)
    assert not gradcheck(MyReLU.apply, (x,), raise_exception=False)
    assert not gradcheck(torch.relu, (x,), raise_exception=False)


def test_requ_backward_closed_form():
    x = with_zeros()
    upstream = torch.linspace(-1, 1, x.numel(), dtype=F64)
    (grad,) = torch.autograd.grad(requ(x), x, upstream)
    assert torch.allclose(grad, upstream * 2 * x.detach() * (x.detach() > 0), rtol=0, atol=0)


LINEAR_CASES = {
    "vector": ((4,), (3, 4), None),
    "batch_no_bias": ((5, 4), (3, 4), None),
    "batch_bias": ((5, 4), (3, 4), (3,)),
    "sequence_bias": ((2, 6, 4), (3, 4), (3,)),
    "sequence_per_step_bias": ((2, 6, 4), (3, 4), (6, 3)),
    "keepdim_bias": ((5, 4), (3, 4), (1, 3)),
}


def linear_inputs(case, seed=0):
    x_shape, w_shape, b_shape = LINEAR_CASES[case]
    g = torch.Generator().manual_seed(seed)
    shapes = [x_shape, w_shape] + ([] if b_shape is None else [b_shape])
    return tuple(torch.randn(s, generator=g, dtype=F64).requires_grad_() for s in shapes)


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_linear_gradcheck_and_gradgradcheck(case):
    inputs = linear_inputs(case)
    assert gradcheck(LinearFunction.apply, inputs)
    assert gradgradcheck(LinearFunction.apply, inputs)


def test_linear_gradcheck_with_zero_inputs():
    x, W, b = linear_inputs("sequence_bias")
    with torch.no_grad():
        x[0].zero_()
        W[:, 1].zero_()
    assert gradcheck(linear, (x, W, b))


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_linear_matches_torch_functional(case):
    inputs = linear_inputs(case, seed=3)
    ours = linear(*inputs)
    if len(inputs) == 3 and inputs[2].dim() > 1:  # a broadcast bias: F.linear wants (out,)
        ref = torch.nn.functional.linear(inputs[0], inputs[1]) + inputs[2]
    else:
        ref = torch.nn.functional.linear(*inputs)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(ours.shape, dtype=F64, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(ours, inputs, upstream)
    ref_grads = torch.autograd.grad(ref, inputs, upstream)
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_linear_keyword_bias_and_plain_function_agree():
    x, W, b = linear_inputs("batch_bias")
    assert torch.equal(LinearFunction.apply(x, W, b=b), linear(x, W, b))
    assert torch.equal(LinearFunction.apply(x, W), linear(x, W))


def test_linear_backward_skips_unneeded_gradients():
    x, W, b = linear_inputs("batch_bias")
    ctx = SimpleNamespace(
        saved_tensors=(x.detach(), W.detach()), bias_shape=b.shape, needs_input_grad=(True, False, False)
    )
    grads = LinearFunction.backward(ctx, torch.ones(5, 3, dtype=F64))
    assert grads[0] is not None and grads[0].shape == x.shape
    assert grads[1] is None and grads[2] is None


def test_linear_only_input_gradient_when_weights_frozen():
    x, W, b = linear_inputs("batch_bias")
    W.requires_grad_(False)
    b.requires_grad_(False)
    linear(x, W, b).sum().backward()
    assert W.grad is None and b.grad is None
    assert torch.allclose(x.grad, W.sum(0).expand_as(x))


def test_relu_needs_input_grad_false_returns_none():
    ctx = SimpleNamespace(saved_tensors=(torch.ones(2, dtype=F64),), needs_input_grad=(False,))
    assert MyReLU.backward(ctx, torch.ones(2, dtype=F64)) is None
    assert ReQU.backward(ctx, torch.ones(2, dtype=F64)) is None


def test_float32_supported():
    x = torch.randn(4, 3, requires_grad=True)
    W = torch.randn(2, 3, requires_grad=True)
    y = requ(linear(my_relu(x), W))
    y.sum().backward()
    assert y.dtype == torch.float32 and x.grad.dtype == torch.float32


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("fn", [my_relu, requ, MyReLU.apply, ReQU.apply])
def test_elementwise_rejects_integer_and_non_tensor(fn):
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor.*torch.int64"):
        fn(torch.arange(3))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        fn([1.0, 2.0])


def test_linear_rejects_non_floating():
    W = torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor"):
        linear(torch.ones(2, 4, dtype=torch.int32), W)
    with pytest.raises(TypeError, match=r"W must be a torch.Tensor, got ndarray"):
        linear(torch.ones(2, 4), W.numpy())
    with pytest.raises(TypeError, match=r"b must be a floating-point tensor"):
        linear(torch.ones(2, 4), W, torch.zeros(3, dtype=torch.long))


def test_linear_rejects_dtype_mismatch():
    with pytest.raises(TypeError, match=r"x and W must share a dtype"):
        linear(torch.ones(2, 4, dtype=F64), torch.ones(3, 4))
    with pytest.raises(TypeError, match=r"b must have W's dtype"):
        linear(torch.ones(2, 4), torch.ones(3, 4), torch.ones(3, dtype=F64))


def test_linear_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., in\).*x shape \(2, 5\).*W shape \(3, 4\)"):
        linear(torch.ones(2, 5), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"W must be 2-D.*\(3, 4, 1\)"):
        linear(torch.ones(2, 4), torch.ones(3, 4, 1))
    with pytest.raises(ValueError, match=r"b must have shape \(out,\) = \(3,\).*b shape \(4,\)"):
        linear(torch.ones(2, 4), torch.ones(3, 4), torch.ones(4))
    with pytest.raises(ValueError, match=r"b must .*broadcast to the output shape \(2, 3\).*\(5, 2, 3\)"):
        linear(torch.ones(2, 4), torch.ones(3, 4), torch.ones(5, 2, 3))
