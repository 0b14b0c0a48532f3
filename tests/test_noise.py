"""gradlab.es.noise: noise sources draw the same numbers however they are asked."""
from __future__ import annotations

import math

import pytest
import torch

from gradlab.es.noise import DistributionNoise, GaussianNoise, draw_noise, noise_source, sample_noise

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_source_fills_a_buffer_with_the_numbers_it_samples():
    fresh = GaussianNoise().sample((4, 3), gen(0), dtype=F64)
    buffer = torch.empty(4, 3, dtype=F64)
    filled = draw_noise(GaussianNoise(), (4, 3), generator=gen(0), dtype=F64, out=buffer)
    assert filled.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(filled, fresh, rtol=0, atol=0)
    torch.testing.assert_close(fresh, torch.randn(4, 3, generator=gen(0), dtype=F64), rtol=0, atol=0)


def test_any_object_with_sample_shape_generator_is_a_source():
    class Table:  # the protocol a shared noise table implements
        def __init__(self):
            self.rows = torch.arange(12.0).view(4, 3)

        def sample(self, shape, generator=None):
            return self.rows[: shape[0], : shape[1]]

    drawn = draw_noise(Table(), (2, 3), generator=gen(1), dtype=F64)
    assert drawn.dtype == F64 and drawn.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="noise source returned"):
        draw_noise(Table(), (5, 3))


def test_torchopt_style_distributions_are_wrapped():
    assert isinstance(noise_source(None), GaussianNoise)
    source = noise_source(torch.distributions.Normal(0.0, 1.0))
    assert isinstance(source, DistributionNoise)
    assert sample_noise((2, 5), distribution=lambda shape: torch.ones(shape), dtype=F64).sum() == 10
    with pytest.raises(TypeError, match="distribution must have a sample"):
        noise_source(3)
    with pytest.raises(ValueError, match="scalar distribution"):
        sample_noise((2,), distribution=torch.distributions.Normal(torch.zeros(3), 1.0))


# ---------------------------------------------------------------- NoiseTable
from gradlab import NoiseTable, es_grad, es_grad_model  # noqa: E402


def test_table_is_reproducible_from_its_seed():
    a, b = NoiseTable(1000, 5), NoiseTable(1000, 5)
    assert torch.equal(a.noise, b.noise)
    assert torch.equal(a.noise, torch.randn(1000, generator=gen(5)))  # documented recipe
    assert not torch.equal(a.noise, NoiseTable(1000, 6).noise)
    assert torch.equal(a.sample((7, 3, 4), gen(2)), b.sample((7, 3, 4), gen(2)))
    assert torch.equal(a.checksum(), b.checksum())
    assert not torch.equal(a.checksum(), NoiseTable(1000, 6).checksum())
    as64 = NoiseTable(1000, 5, dtype=F64)
    assert as64.dtype == F64 and torch.equal(as64.noise, a.noise.double())


def test_a_draw_is_a_slice_at_its_offset_and_fill_matches_sample():
    table = NoiseTable(500, 1)
    offsets = table.offsets(6, 40, gen(3))
    rows = table.rows(offsets, 40)
    for row, o in zip(rows, offsets.tolist()):
        assert torch.equal(row, table.noise[o : o + 40])
    assert torch.equal(table.sample((6, 5, 8), gen(3)), rows.view(6, 5, 8))
    buffer = torch.empty(6, 40, dtype=F64)  # another dtype: copied with a cast
    filled = draw_noise(table, (6, 40), generator=gen(3), dtype=F64, out=buffer)
    assert filled.data_ptr() == buffer.data_ptr() and torch.equal(filled, rows.double())
    same = torch.empty(6, 40)
    assert torch.equal(draw_noise(table, (6, 40), generator=gen(3), out=same), rows)


def test_slices_never_run_past_the_end_and_reach_it():
    table = NoiseTable(64, 0)
    assert table.offsets(50, 64, gen(0)).eq(0).all()  # one slice fits: the whole table
    offsets = table.offsets(400, 60, gen(1))
    assert offsets.min() == 0 and offsets.max() == 4  # every offset 0 … size - dim is drawn
    assert set(offsets.tolist()) == {0, 1, 2, 3, 4}
    assert torch.equal(table.rows(torch.tensor([4]), 60)[0], table.noise[-60:])
    with pytest.raises(ValueError, match="too small for draws of 65 values"):
        table.sample((2, 65))
    with pytest.raises(ValueError, match="leading dimension"):
        table.sample(())


def test_bad_table_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="size must be >= 1"):
        NoiseTable(0, 1)
    with pytest.raises(TypeError, match="seed must be an int"):
        NoiseTable(10, 1.5)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        NoiseTable(10, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="either noise"):
        es_grad(lambda x: x.sum(), torch.ones(3), sigma=0.1, num_samples=2, noise=NoiseTable(10, 1),
                distribution=torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="noise must be a noise source"):
        es_grad(lambda x: x.sum(), torch.ones(3), sigma=0.1, num_samples=2, noise="table")


def test_a_members_noise_has_mean_0_and_variance_1():
    # Across table seeds a slice is exactly N(0, I): 400 tables x 8 values are independent
    # standard normals, so mean and variance have standard errors 1/sqrt(3200), sqrt(2/3200).
    values = torch.cat([NoiseTable(256, s).sample((1, 8), gen(s)).reshape(-1) for s in range(400)]).double()
    n = values.numel()
    assert abs(values.mean()) < 4 / math.sqrt(n)
    assert abs(values.var() - 1) < 4 * math.sqrt(2 / n)
    # One big table: its own 2**20 values, standard errors 1e-3 and 1.4e-3.
    big = NoiseTable(2**20, 0).noise.double()
    assert abs(big.mean()) < 4e-3 and abs(big.var() - 1) < 4 * 1.4e-3


# A quadratic f(x) = x^T A x / 2 + b^T x: antithetic ES gives exactly (1/N) sum_n z_n z_n^T g with
# g = A x + b, whatever sigma. With fresh normals each draw's error has total variance
# E||z z^T g - g||^2 = (d + 1) ||g||^2.
D = 12
A_Q = torch.diag(torch.linspace(0.5, 3.0, D, dtype=F64))
B_Q = torch.linspace(-1.0, 1.0, D, dtype=F64)
X_Q = torch.linspace(1.0, -0.5, D, dtype=F64)
G_Q = A_Q @ X_Q + B_Q


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ A_Q @ x + B_Q @ x


def test_es_grad_with_a_table_is_unbiased_and_as_noisy_as_fresh_noise():
    # Table size 2**14, N = 16 draws of D = 12: a pair of slices overlaps with probability
    # (2D - 1)/M = 23/16373; a shift-k overlap adds sum_i g_{i+k} g_{i-k} <= ||g||^2 to the
    # total variance of the sum, so the expected excess over (D + 1)||g||^2 / N is at most
    # (N - 1)/N * 23/16373 * ||g||^2 (< 0.2% of the fresh-noise variance). One table per
    # estimate (seed r) makes every draw marginally N(0, I), hence the mean is exactly G_Q.
    n, reps = 16, 600
    est = torch.stack([
        es_grad(quadratic, X_Q, sigma=0.3, num_samples=n, noise=NoiseTable(2**14, r, dtype=F64), generator=gen(r))
        for r in range(reps)
    ])
    se = est.std(0) / math.sqrt(reps)
    assert ((est.mean(0) - G_Q).abs() < 4 * se).all(), (est.mean(0), G_Q)
    assert not ((est.mean(0) - 1.2 * G_Q).abs() < 4 * se).all()  # power: a 20% scale error is seen
    errors = ((est - G_Q) ** 2).sum(1)
    fresh = (D + 1) * G_Q.dot(G_Q) / n
    excess = (n - 1) / n * (2 * D - 1) / (2**14 - D + 1) * G_Q.dot(G_Q)
    tol = 4 * errors.std() / math.sqrt(reps)
    assert fresh - tol < errors.mean() < fresh + excess + tol, (errors.mean(), fresh, tol)


def test_es_grad_model_with_a_table_is_unbiased_on_a_quadratic_loss():
    # A linear model with MSE is quadratic in theta; fresh table per estimate (marginal N(0, I)).
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    x, t = torch.randn(16, 4, dtype=F64), torch.randn(16, 3, dtype=F64)
    model.zero_grad()
    torch.nn.MSELoss()(model(x), t).backward()
    ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    for rank in (None, 2):
        est = torch.stack([
            es_grad_model(model, torch.nn.MSELoss(), x, t, sigma=0.2, num_samples=8, rank=rank,
                          noise=NoiseTable(4096, r), generator=gen(r))
            for r in range(200)
        ])
        se = est.std(0) / math.sqrt(est.shape[0])
        assert ((est.mean(0) - ref).abs() < 4 * se).all(), rank
        assert not ((est.mean(0) - 1.5 * ref).abs() < 4 * se).all()


def test_with_a_table_the_estimate_does_not_depend_on_chunks_or_path():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    x, y = torch.randn(10, 6, dtype=F64), torch.randint(0, 3, (10,))
    loss = torch.nn.CrossEntropyLoss()
    table = NoiseTable(5000, 3)
    for rank in (None, 2):
        kw = dict(sigma=0.05, num_samples=9, rank=rank, noise=table)
        whole = es_grad_model(model, loss, x, y, generator=gen(4), **kw)
        parts = es_grad_model(model, loss, x, y, generator=gen(4), chunk_size=4, **kw)
        generic = es_grad_model(model, loss, x, y, generator=gen(4), chunk_size=2, fast=False, **kw)
        torch.testing.assert_close(whole, parts, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(whole, generic, rtol=1e-9, atol=1e-12)
    # dense: the same as es_grad of the flat loss with the same table and generator
    flat = es_grad_model(model, loss, x, y, sigma=0.05, num_samples=9, noise=table, generator=gen(4))
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def flat_loss(th):
        params, start = {}, 0
        for name, p in model.named_parameters():
            params[name] = th[start : start + p.numel()].view_as(p)
            start += p.numel()
        return loss(torch.func.functional_call(model, params, (x,)), y)

    point = es_grad(flat_loss, theta, sigma=0.05, num_samples=9, noise=table, generator=gen(4))
    torch.testing.assert_close(flat, point, rtol=1e-9, atol=1e-12)


def test_noise_table_is_seeded_by_its_own_generator_and_leaves_the_global_rng_alone():
    """Same seed, same table; another seed, another table; torch's global state is neither moved nor reseeded."""
    from gradlab.es import NoiseTable

    torch.manual_seed(2024)
    state = torch.get_rng_state()
    table = NoiseTable(5_000, seed=3)
    assert torch.equal(torch.get_rng_state(), state), "NoiseTable moved (or reseeded) the global RNG"
    assert torch.equal(table.noise, NoiseTable(5_000, seed=3).noise)
    assert not torch.equal(table.noise, NoiseTable(5_000, seed=4).noise)
    torch.testing.assert_close(table.noise[:100], torch.randn(5_000, generator=torch.Generator().manual_seed(3))[:100])
