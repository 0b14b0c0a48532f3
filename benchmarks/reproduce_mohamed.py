"""Mohamed et al. (2020), Figures 2-3: the variance of one sample of the score-function, pathwise and
measure-valued estimators of d/dmu and d/dsigma of E[f(x)], x ~ N(1, 1), for f = (x - k)^2, exp(-k x^2) and
cos(k x), against the same variances computed by numerical integration (as the paper's figures are).

Monte Carlo: gradlab.expectation_grad(..., estimator=name) with N samples per cell, float64; the variance of the
N per-sample estimates. Quadrature: the second moment of each single-sample estimator minus the squared gradient,
on a fine grid (trapezoid rule, and Gauss-Legendre over U for the measure-valued d/dsigma). Full size: N = 200,000
and 13/9/9 values of k; ``--quick``: N = 20,000 and 5 values each.
Usage: python benchmarks/reproduce_mohamed.py [--quick] [--threads 1]
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np
import torch
from torch import distributions as D

import reproduce_common as common
from gradlab import expectation_grad

MU, SIGMA = 1.0, 1.0
ESTIMATORS = ("score", "pathwise", "measure_valued")
COSTS = {  # name -> (f on numpy, f' on numpy, torch f of k, full k grid, quick k grid)
    "(x-k)^2": (lambda x, k: (x - k) ** 2, lambda x, k: 2 * (x - k), lambda k: (lambda x: (x - k) ** 2),
                np.linspace(-3, 3, 13), np.linspace(-3, 3, 5)),
    "exp(-k x^2)": (lambda x, k: np.exp(-k * x**2), lambda x, k: -2 * k * x * np.exp(-k * x**2),
                    lambda k: (lambda x: torch.exp(-k * x**2)), np.logspace(-1, 1, 9), np.logspace(-1, 1, 5)),
    "cos(k x)": (lambda x, k: np.cos(k * x), lambda x, k: -k * np.sin(k * x), lambda k: (lambda x: torch.cos(k * x)),
                 np.logspace(-1, 1, 9), np.logspace(-1, 1, 5)),
}
PUBLISHED = {"source": "mohamed2020monte (Figures 2 and 3; curves computed by numerical integration)",
             "claims": ["for (x - k)^2 the pathwise variance of d/dmu does not depend on k, the score function's "
                        "grows with |k|", "for cos(k x) the pathwise variance grows with k^2"]}

EPS = np.linspace(-14, 14, 40001)  # standard-normal grid
PHI = np.exp(-EPS**2 / 2) / math.sqrt(2 * math.pi)


def integrate(values: np.ndarray, grid: np.ndarray = EPS) -> float:
    return float(np.trapezoid(values, grid) if hasattr(np, "trapezoid") else np.trapz(values, grid))


def quadrature_variances(f: Callable, df: Callable, k: float) -> Dict[str, list]:
    """Exact single-sample variances (d/dmu, d/dsigma) of the three estimators at N(MU, SIGMA^2)."""
    x = MU + SIGMA * EPS
    fx = f(x, k)
    grad = np.array([integrate(fx * EPS / SIGMA * PHI), integrate(fx * (EPS**2 - 1) / SIGMA * PHI)])
    second = {
        "score": [integrate((fx * EPS / SIGMA) ** 2 * PHI), integrate((fx * (EPS**2 - 1) / SIGMA) ** 2 * PHI)],
        "pathwise": [integrate(df(x, k) ** 2 * PHI), integrate((df(x, k) * EPS) ** 2 * PHI)],
    }
    w = np.linspace(0, 14, 40001)  # Weibull(sqrt 2, 2): density w exp(-w^2 / 2)
    c_mu = 1 / (SIGMA * math.sqrt(2 * math.pi))
    mv_mu = integrate((c_mu * (f(MU + SIGMA * w, k) - f(MU - SIGMA * w, k))) ** 2 * w * np.exp(-w**2 / 2), w)
    u, wu = np.polynomial.legendre.leggauss(64)
    u, wu = (u + 1) / 2, wu / 2  # Gauss-Legendre on (0, 1)
    m = EPS[::8][:, None]  # double-sided Maxwell: density m^2 phi(m)
    diff = (f(MU + SIGMA * m, k) - f(MU + SIGMA * m * u[None, :], k)) / SIGMA
    mv_sigma = integrate((diff**2 @ wu) * m[:, 0] ** 2 * PHI[::8], EPS[::8])
    second["measure_valued"] = [mv_mu, mv_sigma]
    return {name: (np.array(s) - grad**2).tolist() for name, s in second.items()}


def normal(theta: torch.Tensor) -> D.Normal:
    return D.Normal(theta[0], theta[1])


def run(num_samples: int, quick: bool) -> Dict[str, Dict]:
    theta = torch.tensor([MU, SIGMA], dtype=torch.float64)
    out = {}
    for c, (cost, (f, df, torch_f, ks_full, ks_quick)) in enumerate(COSTS.items()):
        ks = ks_quick if quick else ks_full
        rows = {"k": [round(float(k), 4) for k in ks], "mc": {n: [] for n in ESTIMATORS},
                "quadrature": {n: [] for n in ESTIMATORS}, "z": {n: [] for n in ESTIMATORS}}
        for j, k in enumerate(ks):
            exact = quadrature_variances(f, df, float(k))
            for e, name in enumerate(ESTIMATORS):
                gen = torch.Generator().manual_seed(1000 * c + 10 * j + e)
                g = expectation_grad(torch_f(float(k)), normal, theta, estimator=name, num_samples=num_samples,
                                     generator=gen)
                var = g.var(0)
                # standard error of a sample variance: sqrt((m4 - var^2) / N) from the sample's own 4th moment
                se = (((g - g.mean(0)) ** 4).mean(0) - var**2).clamp_min(0).sqrt() / math.sqrt(num_samples)
                ref = torch.tensor(exact[name], dtype=torch.float64)
                rows["mc"][name].append(var.tolist())
                rows["quadrature"][name].append(exact[name])
                rows["z"][name].append(((var - ref) / se.clamp_min(1e-300)).tolist())
        out[cost] = rows
        worst = max(abs(z) for n in ESTIMATORS for pair in rows["z"][n] for z in pair)
        print(f"{cost}: largest |MC - quadrature| / standard error = {worst:.2f}", flush=True)
    return out


if __name__ == "__main__":
    args = common.parse(__doc__)
    n = 20_000 if args.quick else 200_000
    results = run(n, args.quick)
    common.save("mohamed", {"setup": {"mu": MU, "sigma": SIGMA, "num_samples": n}, "published": PUBLISHED,
                            "results": results}, args)
