"""LAX (gradlab.lax): unbiased for any c_phi on a Gaussian closed form, the two limits, and adaptation.

The objective is a non-differentiable f (a weighted count of coordinates above thresholds) of an
Independent Normal whose mean and log-scale mix two parameters (non-diagonal Jacobian), so that
E[f] and its gradient have a closed form through the normal CDF.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from gradlab import ESTIMATORS, LAX, expectation_grad
from gradlab.estimator import UnsupportedDistribution
from gradlab.relax import CoordinateSurrogate

F64 = torch.float64
A = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.4]], dtype=F64)
B = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.3, 0.2]], dtype=F64)
W = torch.tensor([1.0, -2.0, 1.5], dtype=F64)
LEVEL = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
THETA = torch.tensor([0.4, -0.3], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_dist(t):
    return D.Independent(D.Normal(A.to(t) @ t, (B.to(t) @ t).exp()), 1)


def step_f(x):
    """Piecewise constant: no pathwise gradient exists."""
    return ((x > LEVEL.to(x)).to(x.dtype) * W.to(x)).sum(-1)


def step_truth(t):
    leaf = t.detach().clone().requires_grad_(True)
    mu, sigma = A @ leaf, (B @ leaf).exp()
    value = (torch.special.ndtr((mu - LEVEL) / sigma) * W).sum()
    (g,) = torch.autograd.grad(value, leaf)
    return g


def z_scores(grads, truth):
    se = grads.std(0) / math.sqrt(grads.shape[0])
    return ((grads.mean(0) - truth).abs() / se).max().item()


@pytest.mark.parametrize("c_phi", [CoordinateSurrogate(8, seed=3), lambda x: 0.5 * (torch.tanh(3 * (x - LEVEL.to(x))) * W.to(x)).sum(-1) + x[:, 0] * x[:, 2]])
def test_lax_is_unbiased_for_any_control_variate_with_power(c_phi):
    n = 40_001
    grads = LAX(c_phi).per_sample_grads(step_f, make_dist, THETA, num_samples=n, generator=gen(1))
    truth = step_truth(THETA)
    assert z_scores(grads, truth) < 5.0
    assert z_scores(1.25 * grads, truth) > 5.0  # power: a 25% bias is seen on the same draw


def test_lax_with_c_equal_to_f_is_the_pathwise_estimator_and_with_c_zero_the_score_function():
    smooth = lambda x: ((x - 0.2) ** 2 * W.abs().to(x)).sum(-1)  # noqa: E731
    lax = LAX(smooth).per_sample_grads(smooth, make_dist, THETA, num_samples=9, generator=gen(4))
    path = ESTIMATORS["pathwise"].per_sample_grads(smooth, make_dist, THETA, num_samples=9, generator=gen(4))
    torch.testing.assert_close(lax, path)
    zero = LAX(lambda x: x.sum(-1) * 0.0).per_sample_grads(step_f, make_dist, THETA, num_samples=9, generator=gen(4))
    score = ESTIMATORS["score"].per_sample_grads(step_f, make_dist, THETA, num_samples=9, generator=gen(4))
    torch.testing.assert_close(zero, score)


def test_adapted_lax_has_lower_variance_than_the_score_function_and_stays_unbiased():
    torch.manual_seed(0)  # only the network's initial weights (the output layer starts at zero)
    lax = LAX(num_inputs=3, hidden=16).double()
    optimizer = torch.optim.Adam(lax.parameters(), lr=2e-2)
    for step in range(300):
        lax.adapt_step(optimizer, step_f, make_dist, THETA, num_samples=64, generator=gen(100 + step))
    n = 20_001
    adapted = lax.per_sample_grads(step_f, make_dist, THETA, num_samples=n, generator=gen(7))
    score = ESTIMATORS["score"].per_sample_grads(step_f, make_dist, THETA, num_samples=n, generator=gen(7))
    ratio = adapted.var(0).sum() / score.var(0).sum()
    assert ratio < 0.5, f"adapted LAX variance / score variance = {ratio:.3f}"
    assert z_scores(adapted, step_truth(THETA)) < 5.0


def test_variance_loss_gradient_matches_finite_differences_in_phi():
    c_phi = torch.nn.Linear(3, 1).double()
    lax = LAX(c_phi)
    _, loss = lax.grads_and_variance(step_f, make_dist, THETA, num_samples=50, generator=gen(5))
    loss.backward()
    eps = 1e-6
    with torch.no_grad():
        c_phi.bias += eps
        up = lax.grads_and_variance(step_f, make_dist, THETA, num_samples=50, generator=gen(5))[1]
        c_phi.bias -= 2 * eps
        down = lax.grads_and_variance(step_f, make_dist, THETA, num_samples=50, generator=gen(5))[1]
        c_phi.bias += eps
    torch.testing.assert_close(c_phi.bias.grad[0], (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="c_phi"):
        LAX(3.0)
    with pytest.raises(UnsupportedDistribution, match="reparameterizable"):
        expectation_grad(step_f, lambda t: D.Bernoulli(logits=t), THETA, estimator="lax", num_samples=4)
    with pytest.raises(ValueError, match="hidden"):
        LAX(hidden=0)


def test_per_sample_lax_is_the_formula_on_a_plain_batch_of_normals():
    r"""$\hat g_n = [f(x_n) - c(x_n)]\,\nabla\log p(x_n) + \nabla_\lambda c(x_n(\lambda))$ per sample, for a batch of three
    Normals that is not wrapped in Independent (log_prob (N, 3), summed per sample) and a linear
    $c(x) = v\cdot x$ (its pathwise term is $v$ for loc and $v\,\varepsilon$ for scale); N = 5, float64."""
    from gradlab.distributions import draw

    v = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def make(t):
        return D.Normal(t[:3], torch.nn.functional.softplus(t[3:]) + 0.2)

    def f(x):
        return (x**2).sum(-1) + x[..., 0] * x[..., 2]

    th = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4, 0.2], dtype=torch.float64)
    estimator = LAX(lambda x: x @ v)
    got = expectation_grad(f, make, th, estimator=estimator, num_samples=5, generator=torch.Generator().manual_seed(2))
    dist = make(th)
    x = draw(dist, (5,), generator=torch.Generator().manual_seed(2), reparameterized=True)
    loc, scale = dist.loc, dist.scale
    eps = (x - loc) / scale
    score = torch.cat([(x - loc) / scale**2, ((x - loc) ** 2 - scale**2) / scale**3], 1)
    lam_grads = (f(x) - x @ v).unsqueeze(1) * score + torch.cat([v.expand(5, 3), v * eps], 1)
    jac = torch.block_diag(torch.eye(3, dtype=torch.float64), torch.diag(torch.sigmoid(th[3:])))
    torch.testing.assert_close(got, lam_grads @ jac)
