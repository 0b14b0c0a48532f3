r"""The reference problems of gradlab's explorers: a point, a differentiable objective, the truth.

A :class:`GradientProblem` holds the point $\theta$ and a differentiable ``objective`` whose
backprop gradient is the truth; an *expectation problem* also holds the cost ``f`` and the
family ``make_dist`` of the one estimator signature, with ``objective`` $=\theta \mapsto
\mathbb E_{x\sim p_\theta}[f(x)]$ in closed form. The problems of the book's explorers: a
model and loss (Chapter 2: an MLP on digits), Chapter 3's quadratic and wiggly functions,
a Gaussian (Chapter 4) and a product of Bernoullis (Chapters 5 and 6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .checks import check_module
from .params import flatten_params, unflatten_params

__all__ = [
    "GradientProblem",
    "model_problem",
    "digits_mlp_problem",
    "quadratic_problem",
    "wiggly_problem",
    "gaussian_problem",
    "bernoulli_problem",
]


@dataclass
class GradientProblem:
    """A point ``theta`` and a differentiable scalar ``objective``; optionally ``f``/``make_dist``."""

    name: str
    theta: torch.Tensor
    objective: Callable[[torch.Tensor], torch.Tensor]
    f: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    make_dist: Optional[Callable[[torch.Tensor], Any]] = None
    _true_grad: Optional[torch.Tensor] = field(default=None, repr=False)
    cache: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # e.g. an adapted RELAX

    @property
    def is_expectation(self) -> bool:
        return self.f is not None and self.make_dist is not None

    @property
    def true_grad(self) -> torch.Tensor:
        """$\\nabla$ objective at ``theta`` by backprop (computed once)."""
        if self._true_grad is None:
            theta = self.theta.detach().requires_grad_()
            (self._true_grad,) = torch.autograd.grad(self.objective(theta), theta)
        return self._true_grad


def model_problem(model: torch.nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: Any,
                  name: Optional[str] = None) -> GradientProblem:
    """``loss_fn(model(inputs), targets)`` as a function of the flat parameter vector θ (``flatten_params`` order)."""
    check_module(model)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, unflatten_params(theta, model), (inputs,)), targets)

    theta = flatten_params(model)
    return GradientProblem(name or f"{type(model).__name__} (d = {theta.numel()})", theta, objective)


def digits_mlp_problem(
    hidden: Sequence[int] = (16,), batch_size: int = 128, seed: int = 0, dtype: torch.dtype = torch.float32
) -> GradientProblem:
    """Cross-entropy of a freshly initialised MLP on a fixed batch of scikit-learn's digits, as a function of θ."""
    from .data import load_digits_split
    from .training import build_mlp

    x_train, y_train, _, _ = load_digits_split(seed=seed, dtype=dtype)
    with torch.random.fork_rng():  # a reproducible initialisation that leaves the global RNG alone
        torch.manual_seed(seed)
        model = build_mlp(64, list(hidden), 10).to(dtype)
    index = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    problem = model_problem(model, F.cross_entropy, x_train[index], y_train[index])
    problem.name = f"MLP on digits (d = {problem.theta.numel()})"
    return problem


def quadratic_problem(dim: int = 20, offset: float = 5.0, seed: int = 0) -> GradientProblem:
    r"""Chapter 3's quadratic $\tfrac12\sum_j a_j (x_j - x^\star_j)^2 + c$ at $x = 0$, $a_j$ from 0.1 to 10 (float64)."""
    curvatures = torch.logspace(-1, 1, dim, dtype=torch.float64)
    x_star = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (curvatures * (x - x_star) ** 2).sum() + offset

    return GradientProblem(f"quadratic (d = {dim})", torch.zeros(dim, dtype=torch.float64), objective)


def wiggly_problem(dim: int = 10, seed: int = 0) -> GradientProblem:
    r"""Chapter 3's $\sum_j x_j^2/4 + \sin 3x_j$ at a random point (float64): ES is biased for its gradient.

    Its smoothed gradient is $\nabla f_\sigma(x)_j = x_j/2 + 3e^{-9\sigma^2/2}\cos 3x_j$, so the
    bias of every ES estimator is $3(e^{-9\sigma^2/2} - 1)\cos 3x_j$ per coordinate.
    """
    point = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return (x**2 / 4 + torch.sin(3 * x)).sum()

    return GradientProblem(f"wiggly (d = {dim})", point, objective)


def gaussian_problem(dim: int = 10, seed: int = 0) -> GradientProblem:
    r"""$\nabla_\theta\,\mathbb E_{x\sim\mathcal N(\theta, I)}\big[\sum_j \cos x_j\big]$ (float64).

    In closed form $\mathbb E[\cos x_j] = e^{-1/2}\cos\theta_j$; every expectation estimator applies.
    """
    theta = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return GradientProblem(
        f"E[Σ cos x], x ~ N(θ, I) (d = {dim})", theta, lambda t: math.exp(-0.5) * torch.cos(t).sum(),
        f=lambda x: torch.cos(x).sum(-1), make_dist=lambda t: torch.distributions.Normal(t, 1.0),
    )


def bernoulli_problem(dim: int = 10, seed: int = 0) -> GradientProblem:
    r"""$\nabla_\theta\,\mathbb E_{b\sim\text{Bernoulli}(\mathrm{sigmoid}\,\theta)}\big[\sum_j (b_j - t_j)^2\big]$, targets $t_j\in(0,1)$.

    In closed form the objective is $\sum_j p_j(1 - t_j)^2 + (1 - p_j)t_j^2$ with $p = \mathrm{sigmoid}\,\theta$;
    no pathwise estimator applies (no ``rsample``).
    """
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(dim, generator=gen, dtype=torch.float64)
    target = torch.rand(dim, generator=gen, dtype=torch.float64) * 0.8 + 0.1

    def objective(t: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(t)
        return (p * (1 - target) ** 2 + (1 - p) * target**2).sum()

    return GradientProblem(
        f"E[Σ (b - t)²], b ~ Bernoulli(σ(θ)) (d = {dim})", theta, objective,
        f=lambda b: (b - target).pow(2).sum(-1), make_dist=lambda t: torch.distributions.Bernoulli(logits=t),
    )
