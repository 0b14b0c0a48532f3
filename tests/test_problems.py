"""The explorers' problems: objectives and truths checked against formulas computed here, not by the problems."""
from __future__ import annotations

import math

import torch

from gradlab.problems import bernoulli_problem, digits_mlp_problem, gaussian_problem, quadratic_problem

F64 = torch.float64


def test_quadratic_has_the_stated_curvatures_and_minimum():
    r"""$\tfrac12\sum_j a_j (x_j - x^\star_j)^2 + c$: Hessian diag(a), a from 0.1 to 10, value c at x*, d = 5."""
    problem = quadratic_problem(dim=5, offset=2.0, seed=3)
    hessian = torch.autograd.functional.hessian(problem.objective, problem.theta)
    torch.testing.assert_close(hessian, torch.diag(torch.logspace(-1, 1, 5, dtype=F64)))
    x_star = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert problem.objective(x_star).item() == 2.0
    # the gradient at theta = 0 is -a * x*, in scale (not only in direction)
    torch.testing.assert_close(problem.true_grad, -torch.logspace(-1, 1, 5, dtype=F64) * x_star)


def test_gaussian_truth_is_the_monte_carlo_mean_of_f():
    r"""$\mathbb E_{x\sim\mathcal N(\theta, I)}[\sum_j\cos x_j]$ estimated here by 200 000 draws, within 4 standard
    errors of the problem's objective; and its gradient $-e^{-1/2}\sin\theta$ (a missing $e^{-1/2}$ is 16 SE off)."""
    problem = gaussian_problem(dim=4, seed=1)
    theta = problem.theta
    x = theta + torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    values = torch.cos(x).sum(-1)
    se = values.std() / math.sqrt(values.numel())
    truth = problem.objective(theta)
    print("objective", truth.item(), "Monte Carlo", values.mean().item(), "se", se.item())
    assert abs(truth - values.mean()) < 4 * se
    assert abs(math.exp(0.5) * truth - values.mean()) > 10 * se  # power: a truth off by e^{1/2} is far out
    torch.testing.assert_close(problem.true_grad, -math.exp(-0.5) * torch.sin(theta))
    torch.testing.assert_close(problem.f(x[:3]), values[:3])


def test_bernoulli_truth_is_the_exact_enumeration():
    """Sum over the 2^3 states of p(b) f(b), computed here, equals the objective; gradients agree too."""
    problem = bernoulli_problem(dim=3, seed=2)
    states = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=F64)] * 3)

    def enumerated(t):
        p = torch.sigmoid(t)
        prob = (states * p + (1 - states) * (1 - p)).prod(-1)
        return (prob * problem.f(states)).sum()

    torch.testing.assert_close(problem.objective(problem.theta), enumerated(problem.theta))
    theta = problem.theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(enumerated(theta), theta)
    torch.testing.assert_close(problem.true_grad, grad)


def test_digits_problem_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = digits_mlp_problem(hidden=(4,), batch_size=16, seed=1)
    assert torch.equal(state, torch.get_rng_state()), "digits_mlp_problem moved torch's global RNG"
    again, other = digits_mlp_problem(hidden=(4,), batch_size=16, seed=1), digits_mlp_problem(hidden=(4,),
                                                                                             batch_size=16, seed=2)
    assert torch.equal(first.theta, again.theta) and first.objective(first.theta) == again.objective(again.theta)
    assert not torch.equal(first.theta, other.theta)
