"""gradlab.nn: modules on the custom Functions behave like their torch.nn twins."""

import pytest
import torch

import gradlab
import gradlab.nn as gnn
from gradlab.autograd import MyReLU, ReQU

F64 = torch.float64


@pytest.mark.parametrize("bias", [True, False])
def test_linear_init_matches_torch(bias):
    torch.manual_seed(0)
    ref = torch.nn.Linear(7, 5, bias=bias)
    torch.manual_seed(0)
    ours = gnn.Linear(7, 5, bias=bias)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert p.shape == q.shape
        assert torch.equal(p, q)
    assert (ours.bias is None) == (not bias)


def test_linear_repr_matches_torch():
    assert repr(gnn.Linear(3, 2)) == repr(torch.nn.Linear(3, 2))
    assert gnn.Linear(3, 2, bias=False).extra_repr() == "in_features=3, out_features=2, bias=False"


@pytest.mark.parametrize("shape", [(6,), (4, 6), (2, 3, 6)])
def test_linear_forward_and_gradients_match_torch(shape):
    ref = torch.nn.Linear(6, 3, dtype=F64)
    ours = gnn.Linear(6, 3, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    out, ref_out = ours(x), ref(x)
    assert torch.allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    (out**2).sum().backward()
    (ref_out**2).sum().backward()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-12)


def test_linear_uses_the_custom_function():
    y = gnn.Linear(3, 2)(torch.randn(4, 3))
    assert "LinearFunction" in type(y.grad_fn).__name__


def test_linear_factory_kwargs():
    layer = gnn.Linear(3, 2, dtype=F64, device="cpu")
    assert layer.weight.dtype == F64 and layer.bias.device.type == "cpu"


@pytest.mark.parametrize(
    "module, function, torch_module",
    [(gnn.ReLU, MyReLU, torch.nn.ReLU), (gnn.ReQU, ReQU, None)],
    ids=["relu", "requ"],
)
def test_activation_modules(module, function, torch_module):
    x = torch.tensor([-1.5, 0.0, 0.5, 2.0], dtype=F64, requires_grad=True)
    y = module()(x)
    assert torch.equal(y, function.apply(x))
    assert function.__name__ in type(y.grad_fn).__name__
    if torch_module is not None:
        assert torch.equal(y, torch_module()(x))
    assert isinstance(module(), torch.nn.Module)
    assert repr(module()) == f"{module.__name__}()"


def test_modules_drop_into_sequential_and_build_mlp():
    model = gradlab.build_mlp(4, [8, 8], 3, nonlinearity_module=gnn.ReQU, weight_module=gnn.Linear)
    assert [type(m) for m in model] == [gnn.Linear, gnn.ReQU, gnn.Linear, gnn.ReQU, gnn.Linear]
    out = model(torch.randn(5, 4))
    out.sum().backward()
    assert out.shape == (5, 3)
    assert all(p.grad is not None for p in model.parameters())


def test_linear_rejects_bad_sizes():
    # one rule (gradlab.checks): a bad value is a ValueError, a wrong kind a TypeError (as torch.nn.Linear)
    with pytest.raises(ValueError, match=r"in_features must be >= 0, got -1"):
        gnn.Linear(-1, 2)
    with pytest.raises(TypeError, match=r"out_features must be an int >= 0, got float"):
        gnn.Linear(3, 2.5)


def test_linear_module_reports_shape_errors():
    with pytest.raises(ValueError, match=r"x shape \(2, 5\) and W shape \(2, 3\)"):
        gnn.Linear(3, 2)(torch.ones(2, 5))


def test_zero_order_module_alias_is_kept_without_an_import_of_es():
    from gradlab.es.layer import ZeroOrderModule
    from gradlab.es_autograd import ZeroOrderModule as old_path

    # the deprecated alias gradlab.nn.ZeroOrderModule (Chapter 3's code) is set by the package;
    # gradlab.nn itself does not import the ES family (tests/test_layout.py checks its imports)
    assert gnn.ZeroOrderModule is ZeroOrderModule is old_path
    assert "ZeroOrderModule" not in gnn.__all__


def test_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError, match=r"has no attribute 'Conv2d'"):
        gnn.Conv2d
    assert not hasattr(gnn, "Conv2d")
