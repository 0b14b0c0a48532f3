"""Shared plumbing of the expectation estimators: sampling with a generator, parameters, Jacobians, costs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from gradlab.distributions import (
    distribution_params,
    draw,
    evaluate_costs,
    parameter_jacobian,
    rebuild,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_draw_frequencies_match_probabilities():
    """Categorical and Bernoulli draws from the generator: frequencies within 5 standard errors."""
    n = 50_000
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=F64)
    x = draw(D.Categorical(probs=probs), (n,), generator=gen(1))
    assert x.shape == (n, 2) and x.dtype == torch.long
    freq = F.one_hot(x, 3).to(F64).mean(0)
    assert torch.all((freq - probs).abs() <= 5 * (probs * (1 - probs) / n).sqrt())
    p = torch.tensor([0.2, 0.9], dtype=F64)
    b = draw(D.Independent(D.Bernoulli(probs=p), 1), (n,), generator=gen(2))
    assert b.shape == (n, 2)
    assert torch.all((b.mean(0) - p).abs() <= 5 * (p * (1 - p) / n).sqrt())


def test_draw_normal_is_loc_plus_scale_times_generator_noise_and_differentiable():
    loc = torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)
    x = draw(D.Normal(loc, 2.0), (3,), generator=gen(3), reparameterized=True)
    torch.testing.assert_close(x.detach(), loc.detach() + 2.0 * torch.randn(3, 2, generator=gen(3), dtype=F64))
    assert x.requires_grad
    assert not draw(D.Normal(loc, 2.0), (3,), generator=gen(3)).requires_grad


def test_draw_other_distributions_reproducible_without_touching_global_rng():
    state = torch.get_rng_state()
    dist = D.Beta(torch.tensor(2.0), torch.tensor(3.0))
    one, two = draw(dist, (5,), generator=gen(4)), draw(dist, (5,), generator=gen(4))
    assert torch.equal(one, two) and not torch.equal(one, draw(dist, (5,), generator=gen(5)))
    assert torch.equal(state, torch.get_rng_state())


def test_params_and_rebuild_round_trip():
    dist = D.Independent(D.Normal(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 3.0])), 1)
    params = distribution_params(dist)
    assert list(params) == ["base.loc", "base.scale"]
    again = rebuild(dist, params)
    x = torch.tensor([[0.3, -0.4]])
    torch.testing.assert_close(again.log_prob(x), dist.log_prob(x))
    assert list(distribution_params(D.Bernoulli(logits=torch.zeros(2)))) == ["probs"]


@pytest.mark.parametrize("dim", [2, 5])  # P = 4 (row by row) and P = 10 (one batched backward pass)
def test_parameter_jacobian(dim):
    """Normal(theta, softplus(theta)): J = [I; diag(sigmoid(theta))]."""
    th = torch.linspace(-1.0, 1.0, dim, dtype=F64)
    jac = parameter_jacobian(lambda t: D.Normal(t, F.softplus(t)), th)
    expected = torch.cat([torch.eye(dim, dtype=F64), torch.diag(torch.sigmoid(th))])
    torch.testing.assert_close(jac, expected)
    fixed = parameter_jacobian(lambda t: D.Normal(t, 1.0), th)
    assert torch.all(fixed[dim:] == 0)


def test_evaluate_costs_checks():
    x = torch.zeros(4, 2)
    assert evaluate_costs(lambda x: x.sum(-1), x, 4).shape == (4,)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        evaluate_costs(lambda x: x, x, 4)
    with pytest.raises(TypeError, match="tensor"):
        evaluate_costs(lambda x: 1.0, x, 4)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_costs(lambda x: x.sum(-1) + math.inf, x, 4)


def test_per_item_costs_are_accepted_only_with_the_distributions_item_count():
    from gradlab.distributions import item_count

    dist = D.Independent(D.Bernoulli(logits=torch.zeros(3, 5)), 1)  # 3 items of 5 bits
    assert item_count(dist) == 3 and item_count(D.Normal(0.0, 1.0)) is None
    x = torch.zeros(4, 3, 5)
    assert evaluate_costs(lambda x: x.sum(-1), x, 4, items=item_count(dist)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(4, 3\) \(one per item\)"):
        evaluate_costs(lambda x: x.sum(1), x, 4, items=item_count(dist))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        evaluate_costs(lambda x: x.sum(-1), x, 4)


def test_the_old_base_class_name_is_the_protocols():
    import gradlab.distributions as distributions
    from gradlab.estimator import Estimator

    assert distributions.Estimator is Estimator
    with pytest.raises(AttributeError):
        distributions.NoSuchName  # noqa: B018
