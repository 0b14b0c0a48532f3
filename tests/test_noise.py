"""gradlab.noise: noise sources draw the same numbers however they are asked."""
from __future__ import annotations

import pytest
import torch

from gradlab.noise import DistributionNoise, GaussianNoise, draw_noise, noise_source, sample_noise

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
