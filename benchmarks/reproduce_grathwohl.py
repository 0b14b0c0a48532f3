"""Grathwohl et al. (2018), Figure 1: minimise E[(b - t)^2], b ~ Bernoulli(sigmoid(theta)), t = 0.499, with
REINFORCE (gradlab's "score" estimator), REBAR and RELAX (gradlab.REBAR / gradlab.RELAX, their parameters
adapted by a variance-minimising step at every step), one sample per step, Adam on theta.

Recorded: p = sigmoid(theta) over training (the optimum is p = 0) and the log-variance of one step's gradient
estimate: REINFORCE's from its closed form, REBAR's and RELAX's from 400 fresh estimates every 25 steps. Full
size: 3,000 steps, 3 seeds; ``--quick``: 300 steps, 1 seed. Adam's learning rate is 0.05 for theta, 0.01 for the
control variates (the paper's own settings are not restated here; the shape of the curves is what is compared).
Usage: python benchmarks/reproduce_grathwohl.py [--quick] [--threads 1]
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch.distributions import Bernoulli

import reproduce_common as common
from gradlab import REBAR, RELAX, expectation_grad

T = 0.499
METHODS = ("REINFORCE", "REBAR", "RELAX")
PUBLISHED = {"source": "grathwohl2018backpropagation (Figure 1)",
             "claims": ["with t = 0.499 RELAX drives theta towards the optimum while REINFORCE and REBAR make "
                        "little progress", "RELAX's estimate has the lowest log-variance"]}


def cost(b: torch.Tensor) -> torch.Tensor:
    return ((b - T) ** 2).sum(-1)


def bernoulli(theta: torch.Tensor) -> Bernoulli:
    return Bernoulli(logits=theta)


def reinforce_variance(p: float) -> float:
    f1, f0 = (1 - T) ** 2, T**2
    return p * (1 - p) * ((1 - p) * f1**2 + p * f0**2) - (p * (1 - p) * (f1 - f0)) ** 2


def train(method: str, num_steps: int, seed: int) -> Dict[str, List[float]]:
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    est = {"REBAR": REBAR(), "RELAX": RELAX(num_inputs=1)}.get(method)
    if est is not None:
        est = est.to(torch.float64)
        cv_opt = torch.optim.Adam(est.parameters(), lr=0.01)
    out = {"step": [], "p": [], "log_variance": []}
    for step in range(num_steps):
        th = theta.detach()
        if step % 25 == 0 or step == num_steps - 1:
            p = torch.sigmoid(th).item()
            if est is None:
                var = reinforce_variance(p)
            else:
                var = expectation_grad(cost, bernoulli, th, estimator=est, num_samples=400, generator=gen).var().item()
            out["step"].append(step)
            out["p"].append(round(p, 6))
            out["log_variance"].append(round(math.log(var), 4))
        if est is None:
            grad = expectation_grad(cost, bernoulli, th, estimator="score", num_samples=1, generator=gen).mean(0)
        else:
            grad = est.adapt_step(cv_opt, cost, bernoulli, th, num_samples=1, generator=gen).mean(0)
        opt.zero_grad()
        theta.grad = grad.reshape(theta.shape)
        opt.step()
    return out


def run(num_steps: int, seeds: List[int]) -> Dict[str, List[Dict]]:
    results = {m: [train(m, num_steps, s) for s in seeds] for m in METHODS}
    for m, runs in results.items():
        print(f"{m}: final p {[r['p'][-1] for r in runs]}, final log-variance {[r['log_variance'][-1] for r in runs]}")
    return results


if __name__ == "__main__":
    args = common.parse(__doc__)
    steps, seeds = (300, [0]) if args.quick else (3000, [0, 1, 2])
    common.save("grathwohl", {"setup": {"t": T, "num_steps": steps, "seeds": seeds, "lr_theta": 0.05, "lr_cv": 0.01},
                              "published": PUBLISHED, "results": run(steps, seeds)}, args)
