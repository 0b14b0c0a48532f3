"""Pathwise estimator: closed-form variances, exact per-sample values, chain rule, errors."""
from __future__ import annotations

import pytest
import torch
from torch import distributions as D

import gaussian_closed_forms as gc
from gradlab.expectation import expectation_grad

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", gc.CASES)
def test_gaussian_closed_form_mean_and_variance(k):
    """Pathwise: g = 2(a + sigma eps) (1, eps); Var_mu = 4 sigma^2, Var_sigma = 4a^2 + 8 sigma^2
    (derivation in gaussian_closed_forms)."""
    grads = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="pathwise",
                             num_samples=200_000, generator=gen(1))
    gc.assert_mean(grads, gc.true_grad(k))
    gc.assert_variance(grads, gc.pathwise_variance(k))


def test_per_sample_values_and_same_draws_as_score():
    k = 0.3
    grads = expectation_grad(gc.cost(k), gc.make_normal, gc.theta(), estimator="pathwise",
                             num_samples=50, generator=gen(2))
    eps = torch.randn(50, generator=gen(2), dtype=F64)
    slope = 2 * (gc.MU + gc.SIGMA * eps - k)
    torch.testing.assert_close(grads[:, 0], slope)
    torch.testing.assert_close(grads[:, 1], slope * eps)


def test_vector_theta_independent_normal_matches_autograd_per_sample():
    """A non-separable f of a 4-dim Independent Normal: each row equals autograd on that sample alone."""
    th = torch.tensor([0.5, -1.0, 2.0, 0.1], dtype=F64)

    def f(x):
        return torch.sin(x).sum(-1) * x[..., 0] + x.pow(2).sum(-1)

    def make(t):
        return D.Independent(D.Normal(t, 0.3 + t.abs()), 1)

    grads = expectation_grad(f, make, th, estimator="pathwise", num_samples=7, generator=gen(3))
    eps = torch.randn(7, 4, generator=gen(3), dtype=F64)
    for n in range(7):  # the reference loop over samples (that is what is being checked)
        t = th.clone().requires_grad_(True)
        x = t + (0.3 + t.abs()) * eps[n]
        (ref,) = torch.autograd.grad(f(x.unsqueeze(0)).sum(), t)
        torch.testing.assert_close(grads[n], ref)


def test_errors():
    th = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="rsample"):
        expectation_grad(lambda x: x.sum(-1), lambda t: D.Bernoulli(logits=t), th,
                         estimator="pathwise", num_samples=4)
    with pytest.raises(ValueError, match="differentiable"):
        expectation_grad(lambda x: x.detach().sum(-1), lambda t: D.Normal(t, 1.0), th,
                         estimator="pathwise", num_samples=4)
    with pytest.raises(ValueError, match="baseline"):
        expectation_grad(lambda x: x.sum(-1), lambda t: D.Normal(t, 1.0), th,
                         estimator="pathwise", num_samples=4, baseline="rloo")


@pytest.mark.parametrize("per_item", [False, True])
def test_surrogate_value_is_the_mean_cost_and_its_gradient_the_mean_estimate(per_item):
    """surrogate_loss's VALUE is the mean over its N = 7 draws of the (item-summed) cost, not their sum, and its
    gradient the mean of the per-sample estimates; a product of Normals with a (4, 3) non-diagonal Jacobian."""
    from gradlab.distributions import draw
    from gradlab.expectation import surrogate_loss

    mix = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.1]], dtype=torch.float64)

    def make(t):
        return D.Independent(D.Normal((mix @ t).reshape(2, 1).expand(2, 2),
                                      torch.nn.functional.softplus(t[:2]).reshape(2, 1) + 0.3), 1)

    def f(x):  # (N, 2, 2) -> (N, 2) per item, or (N,)
        costs = (x[..., 0] - 0.5) ** 2 + x[..., 1] * x[..., 0]
        return costs if per_item else costs.sum(-1)

    th = torch.tensor([0.3, -0.2, 0.6], dtype=torch.float64, requires_grad=True)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    loss = surrogate_loss(f, make(th), estimator="pathwise", num_samples=7, generator=gen())
    x = draw(make(th.detach()), (7,), generator=gen(), reparameterized=True)
    expected = f(x).sum(-1).mean() if per_item else f(x).mean()
    print("value", loss.item(), "expected", expected.item())
    torch.testing.assert_close(loss.detach(), expected)
    (grad,) = torch.autograd.grad(loss, th)
    mean = expectation_grad(f, make, th.detach(), estimator="pathwise", num_samples=7, generator=gen()).mean(0)
    torch.testing.assert_close(grad, mean)
