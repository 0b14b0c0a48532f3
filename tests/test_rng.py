"""gradlab.rng: the one rule for random draws (on the generator's device, then moved to the data's)."""
from __future__ import annotations

import pytest
import torch

from gradlab import rng
from gradlab.es.noise import GaussianNoise, NoiseTable
from gradlab.finite_diff import forward_grad


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_are_torchs_numbers_for_the_generator_and_keep_the_dtype(dtype):
    torch.testing.assert_close(rng.randn((3, 4), generator=gen(1), dtype=dtype),
                               torch.randn(3, 4, generator=gen(1), dtype=dtype), rtol=0, atol=0)
    torch.testing.assert_close(rng.rand((5,), generator=gen(2), dtype=dtype),
                               torch.rand(5, generator=gen(2), dtype=dtype), rtol=0, atol=0)
    assert torch.equal(rng.randint(0, 7, (6,), generator=gen(3)), torch.randint(0, 7, (6,), generator=gen(3)))
    assert torch.equal(rng.randperm(9, generator=gen(4)), torch.randperm(9, generator=gen(4)))
    assert rng.randn((2,), generator=gen(1), dtype=dtype).dtype == dtype


def test_filling_a_buffer_gives_the_numbers_of_a_fresh_draw():
    out = torch.empty(4, 3, dtype=torch.float64)
    rng.normal_(out, gen(5))
    torch.testing.assert_close(out, rng.randn((4, 3), generator=gen(5), dtype=torch.float64), rtol=0, atol=0)


def test_same_state_same_numbers_and_the_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a, b = rng.randn((8,), generator=gen(6)), rng.randn((8,), generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, rng.randn((8,), generator=gen(7)))
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_generator_must_be_a_torch_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        rng.randn((2,), generator=0)


def test_the_draw_is_made_on_the_generators_device_then_moved():
    # With a "meta" target every value is gone, but where the draw was made still shows: a CPU
    # generator draws on the CPU (a draw on the target device would refuse the CPU generator).
    assert rng.draw_device(gen(0), "meta") == torch.device("cpu") and rng.draw_device(None, "meta") == "meta"
    assert rng.randn((3,), generator=gen(0), device="meta").device == torch.device("meta")


def test_the_estimators_follow_the_rule():
    x = torch.randn(5, dtype=torch.float64, generator=gen(8))
    noise = GaussianNoise().sample((4, 5), gen(9), dtype=torch.float64)
    torch.testing.assert_close(noise, rng.randn((4, 5), generator=gen(9), dtype=torch.float64), rtol=0, atol=0)
    # forward_grad's tangents are rng.randn draws: a linear f gives (g . v) v averaged
    g = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    tangents = rng.randn((7, 5), generator=gen(10), dtype=torch.float64)
    expected = (tangents @ g) @ tangents / 7
    torch.testing.assert_close(forward_grad(lambda t: (g * t).sum(), x, 7, generator=gen(10)), expected)
    offsets = NoiseTable(100, seed=1).offsets(5, 10, gen(11))
    assert torch.equal(offsets, torch.randint(0, 91, (5,), generator=gen(11)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cpu_generator_drives_cuda_data_with_the_cpu_numbers():
    cpu = rng.randn((4, 3), generator=gen(12))
    cuda = rng.randn((4, 3), generator=gen(12), device="cuda")
    assert cuda.is_cuda and torch.equal(cuda.cpu(), cpu)
    x = torch.zeros(3, device="cuda")
    assert forward_grad(lambda t: t.sum(), x, 2, generator=gen(13)).is_cuda
