"""gradlab.dv: the DV, NWJ and InfoNCE bounds, MINE's moving average, and DVTrainer."""
import math
import statistics
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradlab
from gradlab.data import correlated_gaussians, product_of_marginals
from gradlab.dv import DV, NWJ, DVTrainer, InfoNCE, log_mean_exp, plot_net_2


def make_net(d=2, hidden=32, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                         nn.Linear(hidden, 1)).to(dtype)


def samples(n=50, n_ref=70, d=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), 2 * torch.randn(n_ref, d, generator=g, dtype=dtype)


# ------------------------------------------------------------------ the bounds


def test_dv_and_nwj_match_direct_float64_computation():
    Z, Z_ref = samples()
    net = make_net(dtype=torch.float64)
    with torch.no_grad():
        t, t_ref = net(Z).numpy().ravel(), net(Z_ref).numpy().ravel()
    dv_direct = t.mean() - np.log(np.mean(np.exp(t_ref)))
    nwj_direct = t.mean() - np.mean(np.exp(t_ref - 1))
    assert DV(Z, Z_ref, net).item() == pytest.approx(dv_direct, abs=1e-12)
    assert NWJ(Z, Z_ref, net).item() == pytest.approx(nwj_direct, abs=1e-12)
    # NWJ <= DV for the same critic (log u <= u/e for u = mean e^t).
    assert NWJ(Z, Z_ref, net).item() <= DV(Z, Z_ref, net).item()


def test_dv_gradient_matches_closed_form():
    Z, Z_ref = samples(seed=1)
    net = make_net(dtype=torch.float64)
    grads = torch.autograd.grad(DV(Z, Z_ref, net), list(net.parameters()))
    t_ref = net(Z_ref).reshape(-1)
    weights = torch.softmax(t_ref, 0).detach()  # d/dtheta log mean e^t = sum softmax(t)_j dt_j/dtheta
    expected = torch.autograd.grad(net(Z).mean() - (weights * t_ref).sum(), list(net.parameters()))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_logsumexp_is_stable_for_huge_outputs():
    Z, Z_ref = samples(dtype=torch.float32)
    net = make_net()
    value = DV(Z, Z_ref, net)
    with torch.no_grad():
        net[-1].bias += 1e4  # e^{10000} overflows float32 and float64
        assert torch.isinf(net(Z_ref).exp().mean().log())  # the naive formula breaks
    shifted = DV(Z, Z_ref, net)
    assert torch.isfinite(shifted)
    # DV is invariant to adding a constant to t; float32 rounding of t + 1e4 is ~1e-3.
    assert shifted.item() == pytest.approx(value.item(), abs=5e-3)
    assert log_mean_exp(torch.tensor([1e4, 1e4])).item() == pytest.approx(1e4)


def test_infonce_matches_direct_computation_and_is_at_most_log_k():
    Z, _ = samples(n=6, d=4, seed=2)
    net = make_net(d=4, dtype=torch.float64)
    x, y = Z[:, :2], Z[:, 2:]
    with torch.no_grad():
        scores = np.array([[net(torch.cat((x[i], y[j]))[None]).item() for j in range(6)] for i in range(6)])
    direct = np.mean([scores[i, i] - np.log(np.mean(np.exp(scores[i]))) for i in range(6)])
    assert InfoNCE(Z, net, 2).item() == pytest.approx(direct, abs=1e-12)
    with torch.no_grad():
        net[-1].weight *= 100  # a sharp critic: still at most log K
    assert InfoNCE(Z, net, 2).item() <= math.log(6) + 1e-12


# -------------------------------------------------------------- minibatches


class Recorder(nn.Module):
    """A linear critic that records every row it sees while training."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1, dtype=torch.float64)
        self.seen = []

    def forward(self, z):
        if self.training:
            self.seen.append(z[:, 0].detach().clone())
        return self.linear(z)


@pytest.mark.parametrize("n, n_ref, iters", [(103, 57, 10), (40, 40, 4), (9, 30, 9)])
def test_every_sample_used_exactly_once_per_epoch(n, n_ref, iters):
    ids = torch.arange(n, dtype=torch.float64)
    ids_ref = 1000 + torch.arange(n_ref, dtype=torch.float64)
    Z, Z_ref = torch.stack((ids, ids), 1), torch.stack((ids_ref, ids_ref), 1)
    net = Recorder()
    trainer = DVTrainer(Z, Z_ref, net, iters, lr=0.0)
    epochs = []
    for _ in range(3):
        net.seen.clear()
        trainer.step(1)
        batches_z, batches_ref = net.seen[0::2], net.seen[1::2]  # DV calls net(Z_B), then net(Z'_B)
        assert len(batches_z) == len(batches_ref) == iters
        for batches, total in ((batches_z, ids), (batches_ref, ids_ref)):
            sizes = [len(b) for b in batches]
            assert max(sizes) - min(sizes) <= 1, sizes
            assert torch.equal(torch.cat(batches).sort().values, total)  # each sample exactly once
        epochs.append(torch.cat(batches_z))
    assert not torch.equal(epochs[0], epochs[1]), "every epoch needs a fresh permutation"
    assert len(trainer.history["loss"]) == 3 * iters and trainer.history["epoch"] == [1, 2, 3]


def test_step_returns_estimate_on_all_data_and_is_reproducible():
    Z, Z_ref, _ = correlated_gaussians(200, 0.5, seed=3)
    runs = []
    for _ in range(2):
        net = make_net(seed=1)
        trainer = DVTrainer(Z, Z_ref, net, 4, seed=7, lr=1e-3)
        estimate = trainer.step(3)
        assert estimate == pytest.approx(DV(Z, Z_ref, net).item(), abs=1e-6)
        assert trainer.history["estimate"] == [estimate]
        runs.append(estimate)
    assert runs[0] == runs[1]


# ------------------------------------------------------------------- MINE


def test_mine_moving_average_and_gradient():
    Z, Z_ref = samples(n=40, n_ref=40, seed=4)
    net = make_net(dtype=torch.float64)
    trainer = DVTrainer(Z, Z_ref, net, 2, bound="mine", ema_rate=0.25)
    batches = [(Z[:20], Z_ref[:20]), (Z[20:], Z_ref[20:])]
    means = [net(b_ref).exp().mean().item() for _, b_ref in batches]
    trainer.mine_objective(*batches[0])
    assert trainer.log_avg_exp.exp().item() == pytest.approx(means[0], rel=1e-12)  # initialised by batch 1
    surrogate, value = trainer.mine_objective(*batches[1])
    average = 0.75 * means[0] + 0.25 * means[1]
    assert trainer.log_avg_exp.exp().item() == pytest.approx(average, rel=1e-12)
    assert value.item() == pytest.approx(DV(*batches[1], net).item(), abs=1e-12)
    params = list(net.parameters())
    got = torch.autograd.grad(surrogate, params)
    b, b_ref = batches[1]
    want = torch.autograd.grad(net(b).mean() - net(b_ref).exp().mean() / average, params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_mine_with_rate_one_follows_the_dv_gradient():
    Z, Z_ref, _ = correlated_gaussians(120, 0.7, seed=5, dtype=torch.float64)
    trained = []
    for bound in ("dv", "mine"):
        net = make_net(dtype=torch.float64)
        DVTrainer(Z, Z_ref, net, 4, bound=bound, ema_rate=1.0, seed=2, lr=1e-2).step(3)
        trained.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    assert torch.allclose(trained[0], trained[1], rtol=1e-8, atol=1e-10)


# -------------------------------------------------------------- accuracy


@pytest.mark.parametrize("bound", ["dv", "mine"])
def test_trainer_approaches_the_true_mutual_information(bound):
    """Six data sets: the mean estimate is within 4 standard errors of the seed-to-seed spread
    (about 0.02 nats per run here, so about 0.033), and training moved it there from about 0."""
    estimates, first = [], []
    for seed in range(6):
        Z, Z_ref, mi = correlated_gaussians(1000, 0.8, seed=seed)
        trainer = DVTrainer(Z, Z_ref, make_net(seed=seed), 5, seed=seed, lr=3e-3, bound=bound)
        first.append(trainer.step(0))
        estimates.append(trainer.step(40))
    spread = statistics.stdev(estimates)
    print(f"{bound}: truth {mi:.3f}, estimates {estimates}, spread {spread:.3f}")
    assert spread < 0.1
    assert abs(statistics.mean(estimates) - mi) < 4 * spread / math.sqrt(6)
    assert max(abs(e) for e in first) < 0.1


def test_fresh_reference_shuffles_and_validation():
    Z, Z_ref, _ = correlated_gaussians(100, 0.8, seed=6)
    Z_val, Z_ref_val, _ = correlated_gaussians(300, 0.8, seed=7)
    calls = []

    def sampler(generator):
        calls.append(1)
        return product_of_marginals(Z, 1, generator)

    trainer = DVTrainer(Z, Z_ref, make_net(), 2, ref_sampler=sampler, validation=(Z_val, Z_ref_val), lr=1e-3)
    trainer.step(3)
    trainer.step(2)
    assert len(calls) == 5
    assert not torch.equal(trainer.Z_ref, Z_ref)
    assert len(trainer.history["val_estimate"]) == 2
    assert trainer.history["val_estimate"][-1] == pytest.approx(trainer.estimate(Z_val, Z_ref_val))


def test_other_bounds_train():
    Z, Z_ref, _ = correlated_gaussians(200, 0.8, dim=1, seed=8)
    for bound in ("nwj", "infonce"):
        trainer = DVTrainer(Z, Z_ref, make_net(), 10, bound=bound, lr=3e-3)
        before = trainer.step(0)
        after = trainer.step(5)
        assert math.isfinite(after) and after > before
        if bound == "infonce":
            assert after <= math.log(20)


# -------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    net = make_net()
    with pytest.raises(ValueError, match="same number of features"):
        DV(Z, torch.randn(10, 3), net)
    with pytest.raises(ValueError, match="same number of features"):
        DVTrainer(Z, torch.randn(10, 3), net, 2)
    with pytest.raises(ValueError, match="fewer than n_iters_per_epoch"):
        DVTrainer(Z, Z_ref, net, 11)
    with pytest.raises(ValueError, match="Z_ref has 5 samples"):
        DVTrainer(Z, Z_ref[:5], net, 6)
    with pytest.raises(TypeError, match="Z must be a torch.Tensor"):
        DV(Z.numpy(), Z_ref, net)
    with pytest.raises(ValueError, match="shape"):
        DV(Z[:, 0], Z_ref, net)
    with pytest.raises(ValueError, match="one value per sample"):
        DV(Z, Z_ref, nn.Linear(2, 3))
    with pytest.raises(ValueError, match="n_iters_per_epoch"):
        DVTrainer(Z, Z_ref, net, 0)
    with pytest.raises(ValueError, match="bound"):
        DVTrainer(Z, Z_ref, net, 2, bound="kl")
    with pytest.raises(ValueError, match="ema_rate"):
        DVTrainer(Z, Z_ref, net, 2, bound="mine", ema_rate=0.0)
    with pytest.raises(TypeError, match="net"):
        DVTrainer(Z, Z_ref, lambda z: z, 2)
    with pytest.raises(ValueError, match="epochs"):
        DVTrainer(Z, Z_ref, net, 2).step(-1)
    with pytest.raises(ValueError, match="x_dim"):
        InfoNCE(Z, net, 2)


def test_non_finite_network_outputs_raise():
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    net = make_net()
    with torch.no_grad():
        net[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        DV(Z, Z_ref, net)
    with pytest.raises(ValueError, match="non-finite"):
        DVTrainer(Z, Z_ref, net, 2).step(1)


# ------------------------------------------------- logging, device, plotting


def test_tensorboard_is_optional(monkeypatch):
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        trainer = DVTrainer(Z, Z_ref, make_net(), 2, writer_params={})
    assert math.isfinite(trainer.step(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DVTrainer(Z, Z_ref, make_net(), 2).step(1)  # no writer_params: no warning, no writer

    logged = []

    class FakeWriter:
        def __init__(self, **params):
            logged.append(("init", params))

        def add_scalar(self, tag, value, global_step):
            logged.append((tag, global_step))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    DVTrainer(Z, Z_ref, make_net(), 2, writer_params={"log_dir": "runs/x"}).step(2)
    assert logged == [("init", {"log_dir": "runs/x"}), ("Loss/train", 1), ("Loss/train", 2),
                      ("Loss/train", 3), ("Loss/train", 4), ("Estimate", 2)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_trainer_runs_on_the_device_of_the_data():
    Z, Z_ref, _ = correlated_gaussians(200, 0.8, seed=0, device="cuda")
    net = make_net().cuda()
    trainer = DVTrainer(Z, Z_ref, net, 4, bound="mine", lr=1e-3)
    assert math.isfinite(trainer.step(2))
    assert trainer.log_avg_exp.device.type == "cuda"


def test_plot_net_2_draws_the_network():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
        net.bias.zero_()
    fig, ax = plt.subplots()
    plot_net_2(net, xlim=(-1, 1), ylim=(0, 2), grid=3, ax=ax)
    values = np.asarray(ax.collections[0].get_array()).reshape(3, 3)
    # row = y in (0, 1, 2), column = x in (-1, 0, 1): t = x - 2y
    assert np.allclose(values, [[-1, 0, 1], [-3, -2, -1], [-5, -4, -3]])
    plt.close(fig)


def test_exports():
    assert gradlab.DVTrainer is DVTrainer and gradlab.dv.DV is DV
    assert gradlab.correlated_gaussians is correlated_gaussians
