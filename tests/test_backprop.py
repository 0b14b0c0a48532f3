"""gradlab.backprop: the tiny engine's gradients equal torch.autograd's (float64, tight tolerance)."""
import pytest
import torch

import gradlab
from gradlab import backprop as bp
from gradlab.backprop import Node

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def randn(*shape, seed=0):
    return torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


T = torch
OPS = {
    # name: (engine op, torch op, input shapes)
    "matmul": (bp.matmul, T.matmul, [(3, 4), (4, 5)]),
    "matmul_batched": (bp.matmul, T.matmul, [(2, 3, 4), (4, 5)]),
    "transpose": (bp.transpose, lambda a: a.transpose(-1, -2), [(2, 3, 4)]),
    "add_same": (bp.add, T.add, [(3, 4), (3, 4)]),
    "add_row_bias": (bp.add, T.add, [(3, 4), (4,)]),
    "add_outer": (bp.add, T.add, [(3, 1), (1, 4)]),
    "add_leading": (bp.add, T.add, [(2, 3, 4), (3, 1)]),
    "add_scalar": (bp.add, T.add, [(3, 4), ()]),
    "mul_broadcast": (bp.mul, T.mul, [(2, 3, 4), (4,)]),
    "relu": (bp.relu, T.relu, [(3, 4)]),
    "requ": (bp.requ, lambda a: T.clamp(a, min=0) ** 2, [(3, 4)]),
    "sigmoid": (bp.sigmoid, T.sigmoid, [(3, 4)]),
    "log_softmax_last": (bp.log_softmax, lambda a: T.log_softmax(a, -1), [(3, 4)]),
    "log_softmax_dim0": (lambda a: bp.log_softmax(a, dim=0), lambda a: T.log_softmax(a, 0), [(3, 4)]),
    "sum": (bp.sum, T.sum, [(3, 4)]),
    "mean": (bp.mean, T.mean, [(2, 3, 4)]),
    "mse": (bp.mse, lambda p, t: ((p - t) ** 2).mean(), [(5, 2), (5, 2)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_matches_autograd(name):
    engine_op, torch_op, shapes = OPS[name]
    inputs = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    nodes = [Node(x) for x in inputs]
    out = engine_op(*nodes)
    upstream = randn(*out.shape, seed=99)
    bp.backward(out, upstream)
    leaves = [x.clone().requires_grad_() for x in inputs]
    ref_out = torch_op(*leaves)
    ref_grads = torch.autograd.grad(ref_out, leaves, upstream)
    assert out.shape == ref_out.shape
    assert torch.allclose(out.value, ref_out.detach(), **TOL)
    for node, ref in zip(nodes, ref_grads):
        assert node.grad.shape == node.shape  # broadcasting reduced back to the operand
        assert torch.allclose(node.grad, ref, **TOL)


def test_cross_entropy_matches_torch():
    logits = randn(6, 4)
    targets = torch.tensor([0, 3, 1, 1, 2, 3])
    node = Node(logits)
    loss = bp.cross_entropy(node, targets)
    loss.backward()
    leaf = logits.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(leaf, targets)
    ref.backward()
    assert torch.allclose(loss.value, ref.detach(), **TOL)
    assert torch.allclose(node.grad, leaf.grad, **TOL)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0], [0.0, -1000.0]], dtype=F64)
    loss = bp.cross_entropy(Node(logits), torch.tensor([0, 1]))
    assert torch.isfinite(loss.value) and torch.allclose(loss.value, torch.tensor(500.0, dtype=F64))


def test_unbroadcast_equals_sum_to_size():
    grad = randn(2, 3, 4)
    for shape in [(2, 3, 4), (3, 4), (4,), (1, 4), (3, 1), (2, 1, 4), (1, 1, 1), ()]:
        assert torch.allclose(bp.unbroadcast(grad, shape), grad.sum_to_size(shape), **TOL)


@pytest.mark.parametrize("activation", ["relu", "requ"])
def test_mlp_gradients_equal_autograd(activation):
    torch.manual_seed(0)
    nonlinearity = {"relu": torch.nn.ReLU, "requ": gradlab.nn.ReQU}[activation]
    model = gradlab.build_mlp(5, [7, 6], 4, nonlinearity_module=nonlinearity).double()
    x = randn(16, 5, seed=1)
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(2))

    layers = bp.mlp_layers(model)
    x_node = Node(x)
    loss = bp.cross_entropy(bp.mlp_forward(x_node, layers, activation), y)
    loss.backward()

    x_leaf = x.clone().requires_grad_()
    ref_loss = torch.nn.functional.cross_entropy(model(x_leaf), y)
    ref_loss.backward()

    assert torch.allclose(loss.value, ref_loss.detach(), **TOL)
    engine_grads = [g for W, b in layers for g in (W.grad, b.grad)]
    for got, (name, p) in zip(engine_grads, model.named_parameters()):
        assert got.abs().sum() > 0, name  # each layer really received a gradient
        assert torch.allclose(got, p.grad, **TOL), name
    assert torch.allclose(x_node.grad, x_leaf.grad, **TOL)


def test_mlp_forward_without_bias_and_mse():
    W1, W2 = Node(randn(3, 2, seed=1)), Node(randn(1, 3, seed=2))
    x, target = randn(4, 2, seed=3), randn(4, 1, seed=4)
    loss = bp.mse(bp.mlp_forward(x, [(W1, None), (W2, None)], "sigmoid"), target)
    loss.backward()
    a, b = W1.value.clone().requires_grad_(), W2.value.clone().requires_grad_()
    ref = ((torch.sigmoid(x @ a.T) @ b.T - target) ** 2).mean()
    ref.backward()
    assert torch.allclose(W1.grad, a.grad, **TOL) and torch.allclose(W2.grad, b.grad, **TOL)


def test_topological_order_each_node_once_parents_first():
    torch.manual_seed(0)
    layers = bp.mlp_layers(gradlab.build_mlp(3, [4, 4], 2))
    x = Node(torch.randn(5, 3))
    root = bp.cross_entropy(bp.mlp_forward(x, layers), torch.tensor([0, 1, 0, 1, 1]))
    order = bp.topological_order(root)
    assert len(order) == len({id(n) for n in order})
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for parent in node.parents:
            assert position[id(parent)] < position[id(node)]
    assert order[-1] is root
    # every reachable node is listed: the leaves x, each W and b, and 3 matmuls, 3 transposes, ...
    leaves = [x] + [t for pair in layers for t in pair]
    assert all(id(leaf) in position for leaf in leaves)
    expected = len(leaves) + 3 * 3 + 2 + 1  # per layer: transpose, matmul, add; 2 relus; 1 loss
    assert len(order) == expected


def test_diamond_accumulates_both_paths():
    # a feeds both branches b and c, which meet again in d: d = relu(a) * sigmoid(a) + a
    value = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    a = Node(value)
    d = bp.add(bp.mul(bp.relu(a), bp.sigmoid(a)), a)
    bp.sum(d).backward()
    leaf = value.clone().requires_grad_()
    (torch.relu(leaf) * torch.sigmoid(leaf) + leaf).sum().backward()
    assert torch.allclose(a.grad, leaf.grad, **TOL)
    order = bp.topological_order(d)
    assert sum(n is a for n in order) == 1


def test_node_used_twice_in_one_op():
    a = Node(torch.tensor([3.0], dtype=F64))
    (a * a).backward()
    assert torch.allclose(a.grad, torch.tensor([6.0], dtype=F64))
    (a + a).backward()
    assert torch.allclose(a.grad, torch.tensor([2.0], dtype=F64))


def test_backward_twice_gives_same_gradients():
    W = Node(randn(2, 3))
    loss = bp.mean(bp.relu(bp.matmul(Node(randn(4, 2, seed=1)), W)))
    loss.backward()
    first = W.grad.clone()
    loss.backward()
    assert torch.equal(W.grad, first)


def test_engine_never_uses_autograd():
    x = torch.randn(3, 2, requires_grad=True)
    W = torch.randn(4, 2, requires_grad=True)
    out = bp.mean(bp.requ(bp.matmul(Node(x), Node(W).T)))
    out.backward()
    for node in bp.topological_order(out):
        assert not node.value.requires_grad and node.value.grad_fn is None
        assert not node.grad.requires_grad
    assert x.grad is None and W.grad is None


def test_long_chain_does_not_hit_recursion_limit():
    node = Node(torch.tensor(1.0, dtype=F64))
    start = node
    for _ in range(3000):
        node = bp.add(node, torch.tensor(1.0, dtype=F64))
    node.backward()
    assert len(bp.topological_order(node)) == 1 + 2 * 3000
    assert start.grad == 1.0


def test_operator_sugar_and_repr():
    a, b = Node(randn(2, 3)), Node(randn(3, 2, seed=1))
    assert (a @ b).op == "matmul" and (a + a).op == "add" and (1.0 + a).op == "add"
    assert a.T.shape == (3, 2) and (2 * a).op == "mul" and a.relu().op == "relu"
    assert a.requ().op == "requ" and a.sigmoid().op == "sigmoid"
    assert a.sum().op == "sum" and a.mean().op == "mean"
    c = 2.0 * a + 1
    c.sum().backward()
    assert torch.equal(a.grad, torch.full((2, 3), 2.0, dtype=F64)) and c.value.dtype == F64
    assert repr(a @ b) == "Node(shape=(2, 2), op='matmul')"


# ------------------------------------------------------------------ bad input


def test_node_rejects_bad_values():
    with pytest.raises(TypeError, match=r"value must be a torch.Tensor, got float"):
        Node(1.0)
    with pytest.raises(TypeError, match=r"value must be a floating-point tensor.*torch.int64"):
        Node(torch.arange(3))
    with pytest.raises(TypeError, match=r"parents must be Nodes, got Tensor"):
        Node(torch.ones(1), parents=(torch.ones(1),))


def test_ops_reject_bad_shapes_and_types():
    a = Node(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"add: shapes of a \(2, 3\) and b \(4,\) do not broadcast"):
        bp.add(a, torch.ones(4))
    with pytest.raises(ValueError, match=r"mul: shapes"):
        bp.mul(a, torch.ones(4))
    with pytest.raises(ValueError, match=r"matmul needs .* got a \(2, 3\) and b \(2, 3\)"):
        bp.matmul(a, a)
    with pytest.raises(ValueError, match=r"transpose needs .*\(3,\)"):
        bp.transpose(Node(torch.ones(3)))
    with pytest.raises(ValueError, match=r"mse: .* pred \(2, 3\) and target \(2,\)"):
        bp.mse(a, torch.ones(2))
    with pytest.raises(TypeError, match=r"a must be a Node, a torch.Tensor or a number, got list"):
        bp.relu([1.0])
    with pytest.raises(ValueError, match=r"log_softmax needs a tensor with at least 1 dim"):
        bp.log_softmax(Node(torch.tensor(1.0)))


def test_cross_entropy_rejects_bad_targets():
    logits = Node(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, C\), got \(12,\)"):
        bp.cross_entropy(Node(torch.zeros(12)), torch.zeros(12, dtype=torch.long))
    with pytest.raises(TypeError, match=r"targets must hold integer class indices.*float32"):
        bp.cross_entropy(logits, torch.zeros(3))
    with pytest.raises(TypeError, match=r"targets must be a torch.Tensor, got list"):
        bp.cross_entropy(logits, [0, 1, 2])
    with pytest.raises(ValueError, match=r"targets must have shape \(B,\) = \(3,\).*got \(2,\)"):
        bp.cross_entropy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        bp.cross_entropy(logits, torch.tensor([0, 1, 4]))


def test_backward_and_helpers_reject_bad_input():
    root = bp.sum(Node(torch.ones(2)))
    with pytest.raises(ValueError, match=r"grad must have the root's shape \(\), got \(2,\)"):
        bp.backward(root, torch.ones(2))
    with pytest.raises(TypeError, match=r"grad must be a torch.Tensor or None, got float"):
        bp.backward(root, 1.0)
    with pytest.raises(TypeError, match=r"root must be a Node, got Tensor"):
        bp.topological_order(torch.ones(1))
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'tanh'"):
        bp.mlp_forward(torch.ones(1, 2), [(Node(torch.ones(1, 2)), None)], "tanh")
    with pytest.raises(ValueError, match=r"layers must contain at least one"):
        bp.mlp_forward(torch.ones(1, 2), [])
    with pytest.raises(ValueError, match=r"model has no Linear-like layer"):
        bp.mlp_layers(torch.nn.ReLU())
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got list"):
        bp.mlp_layers([])
