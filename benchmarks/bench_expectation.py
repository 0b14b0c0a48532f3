"""Speed of per-sample expectation-gradient estimates: gradlab.expectation_grad vs a Python loop over samples.

For x ~ N(theta, 0.5^2 I) with theta of dimension d = 100 and the cost
f(x) = sum_i (x_i - 1)^2 + sum_i sin(x_i), each estimator returns the N per-sample
estimates of grad_theta E[f(x)]:

* ``gradlab``: ``expectation_grad(..., estimator=name, num_samples=N)`` (vectorized).
* ``loop``: a Python loop over the N samples; each sample's estimate by autograd
  (score: f(x_n) * grad log p(x_n); pathwise: grad of f(theta + 0.5 eps_n)); for the
  measure-valued estimator, which has no autograd form, each sample's 2d perturbed
  points are evaluated in one call of f (vectorized over coordinates, looped over samples).

Times are medians of interleaved repetitions (float32, torch limited to ``--threads``).
Writes ``results/expectation_benchmark.md``.

Usage: ``python benchmarks/bench_expectation.py [--quick] [--threads 1] [--out benchmarks/results]``.
"""
from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import distributions as D

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradlab.expectation import expectation_grad  # noqa: E402
from gradlab.measure_valued import weibull  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine_line  # noqa: E402  (benchmarks/machine.py)

DIM, SIGMA = 100, 0.5
ESTIMATORS = ["score", "pathwise", "measure_valued"]
NOTE = (
    "The measure-valued estimator evaluates f at 2d = 200 perturbed points per sample in both versions "
    "(O(N d^2) arithmetic), so its time is the time of f and vectorizing over samples gains little."
)


def cost(x: torch.Tensor) -> torch.Tensor:
    return (x - 1.0).pow(2).sum(-1) + torch.sin(x).sum(-1)


def make_dist(theta: torch.Tensor) -> D.Distribution:
    return D.Independent(D.Normal(theta, SIGMA), 1)


def loop_score(theta, num_samples, generator):
    out = []
    for _ in range(num_samples):  # the baseline being measured: one sample at a time
        x = theta + SIGMA * torch.randn(DIM, generator=generator)
        leaf = theta.clone().requires_grad_(True)
        (score,) = torch.autograd.grad(make_dist(leaf).log_prob(x), leaf)
        out.append(cost(x) * score)
    return torch.stack(out)


def loop_pathwise(theta, num_samples, generator):
    out = []
    for _ in range(num_samples):  # the baseline being measured: one sample at a time
        leaf = theta.clone().requires_grad_(True)
        x = leaf + SIGMA * torch.randn(DIM, generator=generator)
        (grad,) = torch.autograd.grad(cost(x), leaf)
        out.append(grad)
    return torch.stack(out)


def loop_measure_valued(theta, num_samples, generator):
    out = []
    idx = torch.arange(DIM)
    for _ in range(num_samples):  # the baseline being measured: one sample at a time
        x = theta + SIGMA * torch.randn(DIM, generator=generator)
        w = weibull((DIM,), theta, generator)
        points = x.repeat(2 * DIM, 1)
        points[idx, idx] = theta + SIGMA * w
        points[DIM + idx, idx] = theta - SIGMA * w
        values = cost(points)
        out.append((values[:DIM] - values[DIM:]) / (SIGMA * math.sqrt(2 * math.pi)))
    return torch.stack(out)


LOOPS = {"score": loop_score, "pathwise": loop_pathwise, "measure_valued": loop_measure_valued}


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in {100, 1000} only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--note", default="", help="a remark about this run, printed (never written to the results)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [100, 1000] if args.quick else [100, 10_000]
    theta = torch.linspace(-1.0, 1.0, DIM)
    rows = []
    for name in ESTIMATORS:  # warm-up: lazy imports and first-call allocations are not timed
        expectation_grad(cost, make_dist, theta, estimator=name, num_samples=10)
        LOOPS[name](theta, 2, torch.Generator().manual_seed(0))
    for num_samples in sizes:
        for name in ESTIMATORS:
            gen = torch.Generator().manual_seed(0)
            fast, grads = timed(lambda: expectation_grad(cost, make_dist, theta, estimator=name,
                                                         num_samples=num_samples, generator=gen), args.repeats)
            loop_repeats = 1 if num_samples >= 10_000 else args.repeats
            slow, reference = timed(lambda: LOOPS[name](theta, num_samples, gen), loop_repeats)
            # the two must estimate the same gradient: mean difference in units of its standard error
            se = ((grads.var(0) + reference.var(0)) / num_samples).sqrt().clamp_min(1e-12)
            z = ((grads.mean(0) - reference.mean(0)) / se).abs().max().item()
            rows.append((num_samples, name, fast * 1e3, slow * 1e3, slow / fast, z))
            print(f"N={num_samples:>6} {name:>15}: gradlab {fast * 1e3:9.1f} ms  loop {slow * 1e3:9.1f} ms  "
                  f"speed-up {slow / fast:6.1f}x  max |z| {z:.1f}", flush=True)
    write(rows, args)


def write(rows, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "expectation_benchmark_quick.md" if args.quick else "expectation_benchmark.md"
    lines = [
        "# Expectation-gradient estimates: vectorized vs a loop over samples",
        "",
        f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine_line(args.threads)}, float32.",
        f"x ~ N(theta, {SIGMA}^2 I), theta of dimension {DIM}, f(x) = sum (x_i - 1)^2 + sum sin(x_i); "
        "N per-sample estimates of the gradient per call. `loop` = a Python loop over samples, each sample's "
        "estimate by autograd (measure-valued: each sample's 2d perturbed points in one call of f). "
        "After one warm-up call each; medians of 3 runs (the N = 10,000 loops: one run). `max |z|` = largest difference between the two "
        "mean estimates, in standard errors (both estimate the same gradient).",
        "",
        NOTE,
        "",
        "| N | estimator | gradlab ms | loop ms | speed-up | max abs z |",
        "|---|---|---|---|---|---|",
    ]
    for num_samples, est, fast, slow, ratio, z in rows:
        lines.append(f"| {num_samples:,} | {est} | {fast:.1f} | {slow:.1f} | {ratio:.1f}x | {z:.1f} |")
    (out / name).write_text("\n".join(lines) + "\n")
    print("wrote", out / name)


if __name__ == "__main__":
    main()
