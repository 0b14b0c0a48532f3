"""gradlab.dv: the score-matrix bounds, the sample forms, MINE, the critics and DVTrainer."""
import ast
import math
import statistics
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradlab
from gradlab import dv_bounds
from gradlab.data import correlated_gaussians, product_of_marginals
from gradlab.dv import (DV, MINE, NWJ, CorrelatedGaussianSampler, DVTrainer, GaussianConditionalCritic, InfoNCE,
                        SeparableCritic, barber_agakov, gaussian_log_ratio, infonce, interpolated, joint_scores,
                        js, log_mean_exp, nwj, plot_net_2, score_matrix, smile, split_pairs, tuba)
from gradlab.dv import dv as dv_bound

ROOT = Path(__file__).resolve().parents[1]


def make_net(d=2, hidden=32, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                         nn.Linear(hidden, 1)).to(dtype)


def samples(n=50, n_ref=70, d=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), 2 * torch.randn(n_ref, d, generator=g, dtype=dtype)


def random_scores(K=7, seed=0):
    """An asymmetric float64 score matrix with a spread of values (diagonal raised, as for a critic)."""
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(K, K, generator=g, dtype=torch.float64) + 1.5 * torch.eye(K, dtype=torch.float64)


# ------------------------------------------------ score-matrix bounds vs direct loops


def direct(S, log_a, alpha, clip):
    """Every bound written out element by element (numpy float64), columns = y."""
    K = S.shape[0]
    off = [(i, j) for i in range(K) for j in range(K) if i != j]
    diag = np.mean([S[i, i] for i in range(K)])
    mean_off = lambda f: np.mean([f(i, j) for i, j in off])  # noqa: E731
    out = {
        "dv": diag - np.log(mean_off(lambda i, j: np.exp(S[i, j]))),
        "nwj": diag - mean_off(lambda i, j: np.exp(S[i, j] - 1)),
        "tuba": 1 + np.mean([S[i, i] - log_a[i] for i in range(K)]) - mean_off(lambda i, j: np.exp(S[i, j] - log_a[j])),
        "infonce": np.mean([S[j, j] - np.log(np.mean(np.exp(S[:, j]))) for j in range(K)]),
        "js": -np.mean([np.log1p(np.exp(-S[i, i])) for i in range(K)]) - mean_off(lambda i, j: np.log1p(np.exp(S[i, j]))),
        "smile": diag - np.log(mean_off(lambda i, j: np.exp(np.clip(S[i, j], -clip, clip)))),
        "ba": diag,
    }

    def base(j, left_out):  # alpha * mean of e^{f(x_k, y_j)} over k != left_out + (1 - alpha) * a(y_j)
        m = np.mean([np.exp(S[k, j]) for k in range(K) if k != left_out])
        return alpha * m + (1 - alpha) * np.exp(log_a[j])

    joint = np.mean([S[j, j] - np.log(base(j, c)) for j, c in off])  # pair j against the x's without x_c
    marginal = np.mean([np.exp(S[i, j]) / base(j, j) for i, j in off])  # (x_i, y_j), x's without x_j
    out["interpolated"] = 1 + joint - marginal
    return out


@pytest.mark.parametrize("K, seed, alpha", [(7, 0, 0.5), (5, 1, 0.01), (12, 2, 0.99), (3, 3, 1.0), (6, 4, 0.0)])
def test_score_bounds_match_direct_float64_computation(K, seed, alpha):
    S = random_scores(K, seed)
    log_a = torch.linspace(-0.5, 1.5, K, dtype=torch.float64)
    want = direct(S.numpy(), log_a.numpy(), alpha, clip=1.5)
    got = {"dv": dv_bound(S), "nwj": nwj(S), "tuba": tuba(S, log_a), "infonce": infonce(S), "js": js(S),
           "smile": smile(S, clip=1.5), "ba": barber_agakov(S), "interpolated": interpolated(S, log_a, alpha)}
    for name, value in got.items():
        assert value.dtype == torch.float64 and value.dim() == 0
        assert value.item() == pytest.approx(want[name], abs=1e-12), name


def test_family_identities():
    S = random_scores(9, 5)
    K = S.shape[0]
    assert tuba(S, torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(nwj(S).item(), abs=1e-13)
    log_a = torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert interpolated(S, log_a, 0.0).item() == pytest.approx(tuba(S, log_a).item(), abs=1e-12)
    assert smile(S, clip=1e6).item() == pytest.approx(dv_bound(S).item(), abs=1e-12)
    # NWJ <= DV for the same critic (log u <= u / e); the shift f + log c leaves DV unchanged.
    assert nwj(S).item() <= dv_bound(S).item()
    assert dv_bound(S + 3.0).item() == pytest.approx(dv_bound(S).item(), abs=1e-12)


def test_infonce_never_exceeds_log_k():
    for K, scale in [(2, 1.0), (8, 50.0), (33, 1e3)]:
        S = random_scores(K, K)
        S.diagonal().add_(scale)  # however sharp the critic: at most log K
        assert infonce(scale * S).item() <= math.log(K) + 1e-12
        assert infonce(S).item() <= math.log(K) + 1e-12
    separated = 60.0 * torch.eye(8, dtype=torch.float64)  # e^{f} of the partner dominates every column
    assert infonce(separated).item() == pytest.approx(math.log(8), abs=1e-20 + 1e-12)
    assert infonce(torch.zeros(6, 6, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-14)


def test_leave_one_out_mean_is_stable_for_huge_scores():
    S = random_scores(6, 8)
    shifted = interpolated(S + 500.0, torch.full((6,), 500.0, dtype=torch.float64), 0.5)
    assert shifted.item() == pytest.approx(interpolated(S, torch.zeros(6, dtype=torch.float64), 0.5).item(), abs=1e-9)


def test_objective_trains_js_and_reports_the_evaluation_bound():
    S = random_scores(6, 9).requires_grad_()
    for name, report in [("js", lambda s: nwj(s + 1)), ("js_dv", dv_bound), ("smile", lambda s: smile(s, 2.0))]:
        surrogate, value = dv_bounds.objective(name, S, clip=2.0)
        assert value.item() == pytest.approx(report(S).item(), abs=1e-12)
        got = torch.autograd.grad(surrogate, S)[0]
        assert torch.allclose(got, torch.autograd.grad(js(S), S)[0], atol=1e-14)  # the JS gradient
    with pytest.raises(ValueError, match="log_baseline"):
        dv_bounds.objective("tuba", S)


# ------------------------------------------- lower bounds on correlated Gaussians


def gaussian_batches(reps, K, dim, mi, seed):
    sampler = CorrelatedGaussianSampler(dim, mi=mi, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return sampler, [split_pairs(sampler(K, g), dim) for _ in range(reps)]


@pytest.mark.parametrize("dim, mi, K, seed", [(1, 0.5, 16, 0), (3, 2.0, 24, 1)])
def test_lower_bounds_stay_below_the_true_mi(dim, mi, K, seed):
    """Mean over 300 batches <= I + 3 standard errors, for the optimal critic and a distorted one; the
    tolerance is small enough (3 SE < 0.08) that a variant biased upward by 0.08 nats fails."""
    sampler, batches = gaussian_batches(300, K, dim, mi, seed)
    rho = sampler.rho
    log_e = torch.tensor(1.0, dtype=torch.float64)
    critics = {"optimal": lambda x, y: gaussian_log_ratio(x, y, rho),
               "distorted": lambda x, y: 1.4 * gaussian_log_ratio(x, y, 0.8 * rho) - 0.3}
    bounds = {"nwj": lambda S, y: nwj(S + 1), "tuba": lambda S, y: tuba(S, 1 + 0.2 * y.sum(1)),
              "infonce": lambda S, y: infonce(S), "interpolated": lambda S, y: interpolated(S, log_e, 0.5),
              "js_nwj": lambda S, y: nwj(S + 1), "dv": lambda S, y: dv_bound(S)}
    for cname, critic in critics.items():
        for bname, bound in bounds.items():
            values = torch.tensor([bound(critic(x, y), y).item() for x, y in batches])
            mean, se = values.mean().item(), values.std().item() / math.sqrt(len(values))
            print(f"{cname} {bname}: mean {mean:.4f} ± {se:.4f}, truth {mi}")
            assert 3 * se < 0.08, (cname, bname, se)
            if bname == "dv" and cname == "optimal":
                continue  # the DV *estimate* at the optimum is biased upwards by Jensen (checked below)
            assert mean <= mi + 3 * se, (cname, bname, mean, se)
    # At the optimal critic NWJ(f + 1) is unbiased for I, and Barber-Agakov with the true conditional too.
    values = torch.tensor([nwj(gaussian_log_ratio(x, y, rho) + 1).item() for x, y in batches])
    assert abs(values.mean().item() - mi) < 3 * values.std().item() / math.sqrt(len(values))
    std = math.sqrt(1 - rho**2)
    ba = GaussianConditionalCritic(lambda y: rho * y, dim, sigma=std)
    values = torch.tensor([barber_agakov(ba.scores(x, y)).item() for x, y in batches])
    assert abs(values.mean().item() - mi) < 3 * values.std().item() / math.sqrt(len(values))
    loose = GaussianConditionalCritic(lambda y: 0.7 * rho * y, dim, sigma=1.2 * std)
    values = torch.tensor([barber_agakov(loose.scores(x, y)).item() for x, y in batches])
    assert values.mean().item() < mi - 3 * values.std().item() / math.sqrt(len(values))


def test_conditional_critic_of_the_true_posterior_is_the_log_ratio():
    _, [(x, y)] = gaussian_batches(1, 9, 2, 1.3, 4)
    rho = CorrelatedGaussianSampler(2, mi=1.3).rho
    critic = GaussianConditionalCritic(lambda v: rho * v, 2, sigma=math.sqrt(1 - rho**2))
    assert torch.allclose(critic.scores(x, y), gaussian_log_ratio(x, y, rho), atol=1e-12)


# -------------------------------------------------------------- critics


def test_separable_and_joint_scores_agree():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    h = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    critic = SeparableCritic(g, h, x_dim=2)
    Z = torch.randn(7, 5, dtype=torch.float64)
    x, y = split_pairs(Z, 2)
    S = score_matrix(critic, x, y)
    assert torch.allclose(S, joint_scores(critic, x, y), atol=1e-12)  # forward on the K^2 concatenated rows
    assert torch.allclose(S[2, 5], (g(x[2]) * h(y[5])).sum(), atol=1e-12)
    net = make_net(d=5, dtype=torch.float64)
    assert score_matrix(net, x, y)[3, 1].item() == pytest.approx(net(torch.cat((x[3], y[1]))[None]).item(), abs=1e-12)


# ------------------------------------------------------- the sample forms


def test_dv_and_nwj_match_direct_float64_computation():
    Z, Z_ref = samples()
    net = make_net(dtype=torch.float64)
    with torch.no_grad():
        t, t_ref = net(Z).numpy().ravel(), net(Z_ref).numpy().ravel()
    assert DV(Z, Z_ref, net).item() == pytest.approx(t.mean() - np.log(np.mean(np.exp(t_ref))), abs=1e-12)
    assert NWJ(Z, Z_ref, net).item() == pytest.approx(t.mean() - np.mean(np.exp(t_ref - 1)), abs=1e-12)


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
        net[-1].bias += 1e4
        assert torch.isinf(net(Z_ref).exp().mean().log())
    shifted = DV(Z, Z_ref, net)
    assert torch.isfinite(shifted) and shifted.item() == pytest.approx(value.item(), abs=5e-3)
    assert log_mean_exp(torch.tensor([1e4, 1e4])).item() == pytest.approx(1e4)


def test_course_infonce_is_the_score_bound_with_roles_exchanged():
    Z, _ = samples(n=6, d=4, seed=2)
    net = make_net(d=4, dtype=torch.float64)
    x, y = Z[:, :2], Z[:, 2:]
    with torch.no_grad():
        scores = np.array([[net(torch.cat((x[i], y[j]))[None]).item() for j in range(6)] for i in range(6)])
    rows = np.mean([scores[i, i] - np.log(np.mean(np.exp(scores[i]))) for i in range(6)])
    assert InfoNCE(Z, net, 2).item() == pytest.approx(rows, abs=1e-12)
    with torch.no_grad():
        net[-1].weight *= 100
    assert InfoNCE(Z, net, 2).item() <= math.log(6) + 1e-12


# ------------------------------------------------------------------- MINE


def test_mine_moving_average_and_gradient():
    Z, Z_ref = samples(n=40, n_ref=40, seed=4)
    net = make_net(dtype=torch.float64)
    trainer = DVTrainer(Z, Z_ref, net, 2, bound="mine", ema_rate=0.25, holdout=0)
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


def test_mine_on_scores_uses_the_off_diagonal_pairs():
    S1, S2 = random_scores(5, 10).requires_grad_(), random_scores(5, 11).requires_grad_()
    mine = MINE(ema_rate=0.5)
    mine.scores(S1)
    surrogate, value = mine.scores(S2)
    off = ~torch.eye(5, dtype=torch.bool)
    m = 0.5 * S1.detach()[off].exp().mean() + 0.5 * S2.detach()[off].exp().mean()
    assert mine.log_avg_exp.exp().item() == pytest.approx(m.item(), rel=1e-12)
    assert value.item() == pytest.approx(dv_bound(S2).item(), abs=1e-12)
    want = torch.autograd.grad(S2.diagonal().mean() - S2[off].exp().mean() / m, S2)[0]
    assert torch.allclose(torch.autograd.grad(surrogate, S2)[0], want, atol=1e-13)


def test_mine_with_rate_one_follows_the_dv_gradient():
    Z, Z_ref, _ = correlated_gaussians(120, 0.7, seed=5, dtype=torch.float64)
    trained = []
    for bound in ("dv", "mine"):
        net = make_net(dtype=torch.float64)
        DVTrainer(Z, Z_ref, net, 4, bound=bound, ema_rate=1.0, seed=2, lr=1e-2).step(3)
        trained.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    assert torch.allclose(trained[0], trained[1], rtol=1e-8, atol=1e-10)


# ------------------------------------------------- DVTrainer: the course form


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


@pytest.mark.parametrize("n, n_ref, iters, holdout", [(103, 57, 10, 0.0), (40, 40, 4, 0.25), (9, 30, 9, 0.0)])
def test_every_training_sample_used_exactly_once_per_epoch(n, n_ref, iters, holdout):
    ids = torch.arange(n, dtype=torch.float64)
    ids_ref = 1000 + torch.arange(n_ref, dtype=torch.float64)
    Z, Z_ref = torch.stack((ids, ids), 1), torch.stack((ids_ref, ids_ref), 1)
    net = Recorder()
    trainer = DVTrainer(Z, Z_ref, net, iters, lr=0.0, holdout=holdout)
    train, train_ref = trainer.Z[:, 0].sort().values, trainer.Z_ref[:, 0].sort().values
    if holdout:  # the held-out rows are the others, never trained on
        assert torch.equal(torch.cat((train, trainer.Z_val[:, 0])).sort().values, ids)
        assert torch.equal(torch.cat((train_ref, trainer.Z_ref_val[:, 0])).sort().values, ids_ref)
        assert len(trainer.Z_val) == round(holdout * n)
    epochs = []
    for _ in range(3):
        net.seen.clear()
        trainer.step(1)
        batches_z, batches_ref = net.seen[0::2], net.seen[1::2]  # DV calls net(Z_B), then net(Z'_B)
        assert len(batches_z) == len(batches_ref) == iters
        for batches, total in ((batches_z, train), (batches_ref, train_ref)):
            sizes = [len(b) for b in batches]
            assert max(sizes) - min(sizes) <= 1, sizes
            assert torch.equal(torch.cat(batches).sort().values, total)
        epochs.append(torch.cat(batches_z))
    assert not torch.equal(epochs[0], epochs[1]), "every epoch needs a fresh permutation"
    assert len(trainer.history["loss"]) == 3 * iters and trainer.history["epoch"] == [1, 2, 3]


def test_step_returns_the_held_out_estimate_and_records_both():
    Z, Z_ref, _ = correlated_gaussians(200, 0.5, seed=3)
    runs = []
    for _ in range(2):
        net = make_net(seed=1)
        trainer = DVTrainer(Z, Z_ref, net, 4, seed=7, lr=1e-3, holdout=0.2)
        estimate = trainer.step(3)
        assert estimate == pytest.approx(DV(trainer.Z_val, trainer.Z_ref_val, net).item(), abs=1e-6)
        assert trainer.history["train_estimate"] == [pytest.approx(DV(trainer.Z, trainer.Z_ref, net).item(), abs=1e-6)]
        assert trainer.history["estimate"] == trainer.history["val_estimate"] == [estimate]
        runs.append(estimate)
    assert runs[0] == runs[1]
    whole = DVTrainer(Z, Z_ref, make_net(seed=1), 4, seed=7, lr=1e-3, holdout=0)  # held-out evaluation off
    assert whole.Z is Z and whole.Z_val is None
    assert whole.step(1) == pytest.approx(DV(Z, Z_ref, whole.net).item(), abs=1e-6)
    assert whole.history["estimate"] == whole.history["train_estimate"] and math.isnan(whole.history["val_estimate"][0])


def test_course_form_holds_out_by_default_and_never_trains_on_it():
    """``DVTrainer(Z, Z_ref, net, iters)``: 20 % of Z and of Z_ref (uneven sizes) set aside with the seed; the
    training batches never contain a held-out row; step() returns the bound on the held-out rows and records
    the bound on the training rows beside it; the same seed gives the same split, another seed another."""
    n, n_ref = 53, 41
    ids = torch.arange(n, dtype=torch.float64)
    ids_ref = 1000 + torch.arange(n_ref, dtype=torch.float64)
    Z, Z_ref = torch.stack((ids, -ids), 1) / 100, torch.stack((-ids_ref, ids_ref), 1) / 1000
    splits = []
    for seed in (5, 5, 6):
        net = Recorder()
        trainer = DVTrainer(Z, Z_ref, net, 4, seed=seed, lr=1e-2)
        assert len(trainer.Z_val) == round(0.2 * n) and len(trainer.Z_ref_val) == round(0.2 * n_ref)
        estimate = trainer.step(2)
        seen = torch.cat(net.seen)
        held = torch.cat((trainer.Z_val[:, 0], trainer.Z_ref_val[:, 0]))
        assert not torch.isin(seen, held).any(), "a held-out row reached a training step"
        assert torch.equal(torch.unique(seen), torch.cat((trainer.Z[:, 0], trainer.Z_ref[:, 0])).unique())
        with torch.no_grad():
            on_held, on_train = DV(trainer.Z_val, trainer.Z_ref_val, net).item(), DV(trainer.Z, trainer.Z_ref, net).item()
        assert estimate == pytest.approx(on_held, abs=1e-12) and trainer.estimate() == pytest.approx(on_held, abs=1e-12)
        assert trainer.history["val_estimate"] == trainer.history["estimate"] == [estimate]
        assert trainer.history["train_estimate"] == [pytest.approx(on_train, abs=1e-12)]
        assert abs(on_train - on_held) > 1e-6
        splits.append((trainer.Z_val, trainer.Z_ref_val))
    assert all(torch.equal(a, b) for a, b in zip(splits[0], splits[1]))
    assert not torch.equal(splits[0][0], splits[2][0])
    off = DVTrainer(Z, Z_ref, Recorder(), 4, seed=5, lr=1e-2, holdout=0)
    assert off.Z is Z and off.Z_ref is Z_ref and off.Z_val is None
    assert off.step(1) == off.history["train_estimate"][0] and math.isnan(off.history["val_estimate"][0])


def test_seed_controls_everything_and_leaves_the_global_rng_alone():
    sampler = CorrelatedGaussianSampler(1, rho=0.7)
    Z, Z_ref, _ = correlated_gaussians(120, 0.6, seed=2)
    configs = [dict(Z=Z, Z_ref=Z_ref), dict(Z=Z, Z_ref=Z_ref, holdout=0.3), dict(Z=Z, Z_ref=None, bound="infonce"),
               dict(Z=None, Z_ref=None, sampler=sampler, batch_size=16, bound="smile")]
    for config in configs:
        data = {k: config.pop(k) for k in ("Z", "Z_ref")}
        results = []
        for seed in (3, 3, 4):
            net = make_net(seed=0)
            torch.manual_seed(123)
            state = torch.random.get_rng_state()
            trainer = DVTrainer(data["Z"], data["Z_ref"], net, 4, seed=seed, lr=1e-2, **config)
            trainer.step(2)
            assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must stay untouched"
            results.append(trainer.history["batch_estimate"] + trainer.history["estimate"])
        assert results[0] == results[1] and results[0] != results[2], config


def test_trainer_approaches_the_true_mutual_information():
    """Six data sets of 1,000 pairs (800 trained on, holdout=0.2): the held-out estimate after 40 epochs is
    within 4 standard errors (spread / sqrt 6) of the truth, and training moved it there from about 0."""
    for bound in ("dv", "mine"):
        estimates, first = [], []
        for seed in range(6):
            Z, Z_ref, mi = correlated_gaussians(1000, 0.8, seed=seed)
            trainer = DVTrainer(Z, Z_ref, make_net(seed=seed), 5, seed=seed, lr=3e-3, bound=bound, holdout=0.2)
            first.append(trainer.step(0))
            estimates.append(trainer.step(40))
        spread = statistics.stdev(estimates)
        print(f"{bound}: truth {mi:.3f}, held-out estimates {estimates}, spread {spread:.3f}")
        assert spread < 0.2
        assert abs(statistics.mean(estimates) - mi) < 4 * spread / math.sqrt(6)
        assert max(abs(e) for e in first) < 0.15


def test_fresh_reference_shuffles_and_validation():
    Z, Z_ref, _ = correlated_gaussians(100, 0.8, seed=6)
    Z_val, Z_ref_val, _ = correlated_gaussians(300, 0.8, seed=7)
    calls = []

    def sampler(generator):
        calls.append(1)
        return product_of_marginals(Z, 1, generator)

    trainer = DVTrainer(Z, Z_ref, make_net(), 2, ref_sampler=sampler, validation=(Z_val, Z_ref_val), lr=1e-3)
    assert trainer.Z is Z  # explicit validation data: nothing held out of Z
    trainer.step(3)
    trainer.step(2)
    assert len(calls) == 5 and not torch.equal(trainer.Z_ref, Z_ref)
    assert len(trainer.history["val_estimate"]) == 2
    assert trainer.history["val_estimate"][-1] == pytest.approx(trainer.estimate(Z_val, Z_ref_val))


# ------------------------------------------- DVTrainer: pairs and samplers


def test_sampler_gives_fresh_pairs_every_step_and_held_out_estimates():
    seen = []
    gaussian = CorrelatedGaussianSampler(1, mi=0.5)

    def sampler(num_samples, generator):
        batch = gaussian(num_samples, generator)
        seen.append(batch)
        return batch

    net = make_net()
    trainer = DVTrainer(None, None, net, 5, sampler=sampler, batch_size=32, bound="infonce", num_eval=96, lr=3e-3)
    seen.clear()
    estimate = trainer.step(2)
    sizes = [len(b) for b in seen]
    assert sizes == [32] * 10 + [96]  # ten training batches, then one held-out draw
    assert all(not torch.equal(seen[0], b[:32]) for b in seen[1:])
    assert len(trainer.history["batch_estimate"]) == 10 and estimate == trainer.history["val_estimate"][-1]
    assert estimate <= math.log(32)
    gaussian.mi = 2.0  # the staircase: a new level between calls, no private attribute touched
    assert gaussian.rho == pytest.approx(math.sqrt(1 - math.exp(-4)))
    trainer.step(1)
    assert len(trainer.history["estimate"]) == 2


@pytest.mark.parametrize("bound", ["nwj", "tuba", "infonce", "interpolated", "js", "smile", "mine", "ba"])
def test_every_bound_trains_on_fresh_pairs(bound):
    sampler = CorrelatedGaussianSampler(1, mi=0.5)
    torch.manual_seed(0)
    if bound == "ba":
        net = GaussianConditionalCritic(nn.Linear(1, 1), x_dim=1)
    else:
        net = SeparableCritic(nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 8)),
                              nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 8)), x_dim=1)
    trainer = DVTrainer(None, None, net, 50, sampler=sampler, batch_size=64, bound=bound, num_eval=2048,
                        lr=1e-2, seed=1)
    before = trainer.estimate()
    after = trainer.step(6)
    print(f"{bound}: {before:.3f} -> {after:.3f} (truth 0.5)")
    assert after > before + 0.1 and after < 0.5 + 0.12


def test_pairs_mode_holds_out_pairs():
    Z, _, mi = correlated_gaussians(400, 0.8, seed=8)
    trainer = DVTrainer(Z, None, make_net(), 10, bound="infonce", lr=3e-3)
    assert trainer.x_dim == 1 and len(trainer.Z) == 320 and len(trainer.Z_val) == 80 and trainer.batch_size == 32
    before = trainer.step(0)
    after = trainer.step(5)
    assert math.isfinite(after) and after > before and after <= math.log(32)


# -------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    net = make_net()
    with pytest.raises(ValueError, match="same number of features"):
        DV(Z, torch.randn(10, 3), net)
    with pytest.raises(ValueError, match="same number of features"):
        DVTrainer(Z, torch.randn(10, 3), net, 2)
    with pytest.raises(ValueError, match="fewer than n_iters_per_epoch"):
        DVTrainer(Z, Z_ref, net, 11, holdout=0)
    with pytest.raises(ValueError, match="Z_ref has 5 training samples"):
        DVTrainer(Z, Z_ref[:5], net, 6, holdout=0)
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
    with pytest.raises(ValueError, match="holdout"):
        DVTrainer(Z, Z_ref, net, 2, holdout=1.0)
    with pytest.raises(TypeError, match="net"):
        DVTrainer(Z, Z_ref, lambda z: z, 2)
    with pytest.raises(ValueError, match="epochs"):
        DVTrainer(Z, Z_ref, net, 2).step(-1)
    with pytest.raises(ValueError, match="x_dim"):
        InfoNCE(Z, net, 2)
    with pytest.raises(ValueError, match="square"):
        dv_bound(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="square"):
        infonce(torch.zeros(1, 1))
    with pytest.raises(TypeError, match="floating"):
        nwj(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="log_baseline"):
        tuba(torch.zeros(3, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="alpha"):
        interpolated(torch.zeros(3, 3), torch.zeros(3), 1.5)
    with pytest.raises(ValueError, match="clip"):
        smile(torch.zeros(3, 3), clip=0)
    with pytest.raises(ValueError, match="batch_size"):
        DVTrainer(None, None, net, 2, sampler=CorrelatedGaussianSampler(1, rho=0.5), batch_size=1)
    with pytest.raises(ValueError, match="exactly one"):
        CorrelatedGaussianSampler(1)


def test_non_finite_network_outputs_raise():
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    net = make_net()
    with torch.no_grad():
        net[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        DV(Z, Z_ref, net)
    with pytest.raises(ValueError, match="non-finite"):
        DVTrainer(Z, Z_ref, net, 2).step(1)
    with pytest.raises(ValueError, match="non-finite"):
        nwj(torch.full((3, 3), float("nan")))


# ------------------------------------------------- logging, device, plotting, shape


def test_tensorboard_is_optional(monkeypatch):
    Z, Z_ref = samples(n=10, n_ref=10, dtype=torch.float32)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        trainer = DVTrainer(Z, Z_ref, make_net(), 2, writer_params={})
    assert math.isfinite(trainer.step(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DVTrainer(Z, Z_ref, make_net(), 2).step(1)

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
    trainer = DVTrainer(Z, Z_ref, make_net().cuda(), 4, bound="mine", lr=1e-3)
    assert math.isfinite(trainer.step(2)) and trainer.log_avg_exp.device.type == "cuda"
    sampler = CorrelatedGaussianSampler(1, rho=0.8, device="cuda")
    trainer = DVTrainer(None, None, make_net().cuda(), 4, sampler=sampler, batch_size=16, bound="tuba", lr=1e-3)
    assert math.isfinite(trainer.step(1))


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
    assert np.allclose(values, [[-1, 0, 1], [-3, -2, -1], [-5, -4, -3]])  # t = x - 2y
    plt.close(fig)


def test_estimator_modules_do_not_import_matplotlib_and_stay_small():
    for name in ("dv", "dv_bounds", "dv_critics", "dv_trainer", "dv_plots"):
        source = (ROOT / "gradlab" / f"{name}.py").read_text()
        assert len(source.splitlines()) < 400, name
        top = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not any("matplotlib" in m or "tensorboard" in m for m in names), name


def test_exports():
    assert gradlab.DVTrainer is DVTrainer and gradlab.dv.DV is DV and gradlab.dv.MINE is MINE
    assert gradlab.correlated_gaussians is correlated_gaussians
    from gradlab.dv_plots import plot_net_2 as plots_version
    assert plot_net_2 is plots_version


def test_gaussian_log_ratio_paired_is_the_diagonal():
    _, [(x, y)] = gaussian_batches(1, 6, 3, 0.9, 12)
    rho = CorrelatedGaussianSampler(3, mi=0.9).rho
    assert torch.allclose(gaussian_log_ratio(x, y, rho, paired=True), gaussian_log_ratio(x, y, rho).diagonal(), atol=1e-12)
    # the log ratio of the bivariate normal density, written out for one pair
    xi, yi = x[0, 0].item(), y[0, 0].item()
    log_joint = -math.log(2 * math.pi) - 0.5 * math.log(1 - rho**2) - (xi**2 - 2 * rho * xi * yi + yi**2) / (2 * (1 - rho**2))
    log_marg = -math.log(2 * math.pi) - (xi**2 + yi**2) / 2
    assert gaussian_log_ratio(x[:1, :1], y[:1, :1], rho).item() == pytest.approx(log_joint - log_marg, abs=1e-12)
