"""gradlab.params: flattening parameters and gradients of a module, and back."""
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from gradlab.params import (
    assign_grads,
    assign_params,
    flatten_grads,
    flatten_params,
    param_shapes,
    unflatten_params,
)

F64 = torch.float64


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2, bias=False)).double()


def test_param_shapes():
    assert param_shapes(small_model()) == [
        ("0.weight", torch.Size([4, 3]), 12),
        ("0.bias", torch.Size([4]), 4),
        ("2.weight", torch.Size([2, 4]), 8),
    ]


def test_flatten_params_is_a_detached_copy_in_named_order():
    model = small_model()
    theta = flatten_params(model)
    assert theta.shape == (24,) and theta.dtype == F64
    assert torch.equal(theta, parameters_to_vector(model.parameters()).detach())
    assert torch.equal(theta[12:16], model[0].bias.detach())
    assert not theta.requires_grad
    theta.zero_()
    assert model[0].weight.abs().sum() > 0  # the model was not touched


def test_unflatten_params_views_and_functional_call():
    model = small_model()
    vec = torch.randn(24, dtype=F64)
    params = unflatten_params(vec, model)
    assert list(params) == ["0.weight", "0.bias", "2.weight"]
    assert params["0.bias"].shape == (4,)
    assert torch.equal(params["2.weight"].reshape(-1), vec[16:])
    assert params["0.weight"].data_ptr() == vec.data_ptr()  # a view, not a copy
    x = torch.randn(5, 3, dtype=F64)
    out = torch.func.functional_call(model, params, (x,))
    assign_params(model, vec)
    assert torch.allclose(out, model(x), rtol=0, atol=0)


def test_unflatten_params_keeps_the_autograd_graph():
    model = small_model()
    x = torch.randn(5, 3, dtype=F64)
    vec = flatten_params(model).requires_grad_()
    torch.func.functional_call(model, unflatten_params(vec, model), (x,)).pow(2).sum().backward()
    model(x).pow(2).sum().backward()
    assert torch.allclose(vec.grad, flatten_grads(model), rtol=1e-12, atol=1e-12)


def test_assign_params_round_trip():
    model = small_model()
    vec = torch.arange(24, dtype=F64)
    assign_params(model, vec)
    assert torch.equal(flatten_params(model), vec)
    assert torch.equal(model[0].bias.detach(), torch.arange(12, 16, dtype=F64))
    assert model[0].weight.requires_grad  # still a trainable parameter


def test_flatten_grads_zeros_where_none():
    model = small_model()
    model[2].weight.grad = torch.ones(2, 4, dtype=F64)
    grads = flatten_grads(model)
    assert grads.shape == (24,)
    assert torch.equal(grads[:16], torch.zeros(16, dtype=F64))
    assert torch.equal(grads[16:], torch.ones(8, dtype=F64))


def test_assign_grads_set_and_accumulate():
    model = small_model()
    vec = torch.linspace(-1, 1, 24, dtype=F64)
    assign_grads(model, vec)
    assert torch.equal(flatten_grads(model), vec)
    assign_grads(model, vec, accumulate=True)
    assert torch.equal(flatten_grads(model), 2 * vec)
    assign_grads(model, vec)
    assert torch.equal(flatten_grads(model), vec)
    vec.zero_()
    assert flatten_grads(model).abs().sum() > 0  # grads are copies, not views of vec


def test_assign_grads_drives_an_optimizer():
    model = small_model()
    before = flatten_params(model)
    direction = torch.randn(24, dtype=F64)
    assign_grads(model, direction)
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert torch.allclose(flatten_params(model), before - 0.5 * direction, rtol=0, atol=1e-15)


def test_empty_module():
    assert flatten_params(torch.nn.ReLU()).numel() == 0
    assert flatten_grads(torch.nn.ReLU()).numel() == 0
    assert param_shapes(torch.nn.ReLU()) == []


@pytest.mark.parametrize("fn", [unflatten_params, lambda v, m: assign_params(m, v), lambda v, m: assign_grads(m, v)])
def test_vector_validation(fn):
    model = small_model()
    with pytest.raises(ValueError, match=r"vec must be 1-D with 24 entries.*got shape \(23,\)"):
        fn(torch.zeros(23, dtype=F64), model)
    with pytest.raises(ValueError, match=r"vec must be 1-D with 24 entries.*got shape \(4, 6\)"):
        fn(torch.zeros(4, 6, dtype=F64), model)
    with pytest.raises(TypeError, match=r"vec must be a floating-point tensor, got dtype torch.int64"):
        fn(torch.zeros(24, dtype=torch.long), model)
    with pytest.raises(TypeError, match=r"vec must be a torch.Tensor, got list"):
        fn([0.0] * 24, model)


@pytest.mark.parametrize("fn", [flatten_params, flatten_grads, param_shapes])
def test_model_validation(fn):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got Tensor"):
        fn(torch.zeros(3))
