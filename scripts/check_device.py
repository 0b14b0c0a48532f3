"""Run gradlab's main workflows on one device and check that results stay on it and are right.

    python scripts/check_device.py            # cuda if available, else cpu
    python scripts/check_device.py --device cpu

Not part of the test suite (CI has no GPU); run it on a machine with an accelerator
after changing anything that creates tensors.  Exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch
from torch import nn

import gradlab
from gradlab import backprop
from gradlab.compare import cosine_similarity, relative_error
from gradlab.data import load_digits_split, load_iris_tensors
from gradlab.params import flatten_grads, flatten_params
from gradlab.training import accuracy, build_mlp, train

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def backprop_grad(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return flatten_grads(model)


@check
def autograd_functions(dev):
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, device=dev, generator=gen, requires_grad=True)
    W = torch.randn(3, 4, dtype=torch.float64, device=dev, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=dev, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(gradlab.ReQU.apply, (x,))
    assert torch.autograd.gradcheck(gradlab.autograd.LinearFunction.apply, (x, W, b))
    assert gradlab.MyReLU.apply(x).device == x.device


@check
def backprop_engine(dev):
    model = build_mlp(64, [32], 10, nonlinearity_module=nn.ReLU).to(dev).double()
    x, y, _, _ = load_digits_split(device=dev, dtype=torch.float64)
    x, y = x[:128], y[:128]
    layers = backprop.mlp_layers(model)
    backprop.cross_entropy(backprop.mlp_forward(backprop.Node(x), layers), y).backward()
    ours = torch.cat([node.grad.reshape(-1) for layer in layers for node in layer])
    ref = backprop_grad(model, x, y)
    assert ours.device.type == dev.type and relative_error(ours, ref) < 1e-10, relative_error(ours, ref)


@check
def training_loop(dev):
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split(device=dev)
    model = build_mlp(64, [64], 10, nonlinearity_module=gradlab.nn.ReQU, weight_module=gradlab.nn.Linear).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    train(model, nn.CrossEntropyLoss(), opt, x_tr, y_tr, num_epochs=10, progress=False)
    acc = accuracy(model, x_te, y_te)
    assert acc > 0.9, acc


@check
def finite_differences_and_forward_gradient(dev):
    x = torch.linspace(-1, 1, 7, dtype=torch.float64, device=dev)
    f = lambda v: (v.sin() * v.exp()).sum()  # noqa: E731
    true = x.cos() * x.exp() + x.sin() * x.exp()
    g = gradlab.fd_grad(f, x)
    assert g.device == x.device and relative_error(g, true) < 1e-8
    gen = torch.Generator(device=dev).manual_seed(0)
    fg = gradlab.forward_grad(f, x, num_samples=4000, generator=gen)
    assert fg.device == x.device and cosine_similarity(fg, true) > 0.9


@check
def evolution_strategies(dev):
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(20, dtype=torch.float64, device=dev, generator=gen)
    g = gradlab.es_grad(lambda v: (v ** 2).sum(), x, sigma=0.1, num_samples=2000, generator=gen)
    assert g.device == x.device and cosine_similarity(g, 2 * x) > 0.95
    torch.manual_seed(0)
    x_tr, y_tr, _, _ = load_digits_split(device=dev)
    model = build_mlp(64, [32], 10).to(dev)
    ref = backprop_grad(model, x_tr[:256], y_tr[:256])
    for rank in (None, 1):
        est = gradlab.es_grad_model(model, nn.CrossEntropyLoss(), x_tr[:256], y_tr[:256], sigma=0.01,
                                    num_samples=2000, rank=rank, generator=gen)
        assert est.device == ref.device and cosine_similarity(est, ref) > 0.5, (rank, cosine_similarity(est, ref))


@check
def zero_order_decorator(dev):
    params = torch.zeros(5, device=dev, requires_grad=True)
    target = torch.arange(5.0, device=dev)

    @gradlab.zero_order(distribution=torch.distributions.Normal(torch.tensor(0.0, device=dev),
                                                                torch.tensor(1.0, device=dev)),
                        method="antithetic", num_samples=2000, sigma=0.01)
    def loss(p):
        return ((p - target) ** 2).sum()

    (g,) = torch.autograd.grad(loss(params), params)
    assert g.device == params.device and cosine_similarity(g, -2 * target) > 0.95


@check
def blackbox_estimator(dev):
    x, y = load_iris_tensors(device=dev)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 10), nn.SiLU(), nn.Linear(10, 3)).to(dev)
    est = gradlab.BlackboxGradientEstimator(lambda theta: (theta.abs() - 5).norm())
    nn.functional.cross_entropy(net(x), y).backward()
    est.add_estimated_grad_to_network(net, num_samples=50, sigma=1.0, bb_objective_coef=1.0, clip_norm=1.0)
    assert all(p.grad.device == x.device for p in net.parameters())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(parser.parse_args(argv).device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"gradlab {gradlab.__version__}, torch {torch.__version__}, device {dev} ({name})")
    failed = 0
    for fn in CHECKS:
        try:
            fn(dev)
            print(f"  ok    {fn.__name__}")
        except Exception:  # report every check, then fail
            failed += 1
            print(f"  FAIL  {fn.__name__}\n{traceback.format_exc()}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
