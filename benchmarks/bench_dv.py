"""Accuracy and speed of gradlab's neural MI estimators on correlated Gaussians (issue 8).

For 2-D Gaussians (X, Y) with correlation rho = 0.8 (true I(X;Y) = -log(1 - rho^2)/2 = 0.511 nats),
4,000 samples of Z = (X, Y) and 4,000 reference samples Z_ref (Y shuffled), each bound is trained
with ``gradlab.DVTrainer`` (Adam, lr 1e-3, the course's network: two hidden ELU layers of 100
units, PyTorch's default initialisation) on 5 seeds (data, network and minibatches all change
with the seed). After every epoch it records the estimate on the training data (what
``step()`` returns) and the wall time; at the end also the estimate on 4,000 fresh held-out pairs.

Reported per bound: time and epochs until the estimate is first within 0.05 nats of the truth,
the final error (mean over seeds = bias, standard deviation over seeds), and the held-out error.

Also measured (``--scores``): the cost of one training step of InfoNCE on a K x K score matrix in d = 20, from
a joint critic (the network on all K^2 concatenated pairs) against a separable critic g(x)^T h(y) of the same
width (2K passes and a matrix product), as a ratio within one run.

Usage: ``python benchmarks/bench_dv.py [--scores] [--quick] [--threads 1] [--seeds 5] [--out benchmarks/results]``.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gradlab  # noqa: E402
from gradlab.data import correlated_gaussians  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine_line  # noqa: E402  (benchmarks/machine.py)

RHO, N, TOLERANCE = 0.8, 4000, 0.05
# bound -> (minibatches per epoch, epochs). InfoNCE scores all K^2 pairs of a batch of K: K = 50.
SETTINGS = {"dv": (10, 30), "mine": (10, 30), "nwj": (10, 30), "infonce": (80, 8)}


def course_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 100), nn.ELU(), nn.Linear(100, 100), nn.ELU(), nn.Linear(100, 1))


def run(bound: str, seed: int, iters: int, epochs: int) -> dict:
    Z, Z_ref, mi = correlated_gaussians(N, RHO, seed=seed)
    Z_val, Z_ref_val, _ = correlated_gaussians(N, RHO, seed=1000 + seed)
    trainer = gradlab.DVTrainer(Z, Z_ref, course_net(seed), iters, bound=bound, seed=seed, lr=1e-3, progress=False,
                                holdout=0)  # trains on all of Z: step() returns the training estimate
    start, reached = time.perf_counter(), None
    for epoch in range(1, epochs + 1):
        estimate = trainer.step(1)
        if reached is None and abs(estimate - mi) < TOLERANCE:
            reached = (epoch, time.perf_counter() - start)
    total = time.perf_counter() - start
    held_out = trainer.estimate(Z_val, Z_ref_val)
    return {"bound": bound, "seed": seed, "truth": mi, "estimate": estimate, "error": estimate - mi,
            "held_out_error": held_out - mi, "epochs_to_tol": reached[0] if reached else None,
            "seconds_to_tol": reached[1] if reached else None, "seconds_total": total, "epochs": epochs}


def score_cost(sizes=(32, 64, 128, 256), reps: int = 5) -> list:
    """Median seconds of forward + backward of InfoNCE from a joint and from a separable critic, per K."""
    from gradlab.dv import CorrelatedGaussianSampler, SeparableCritic, infonce, joint_scores, split_pairs

    def mlp(inputs, outputs, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, outputs))

    joint, separable = mlp(40, 1, 0), SeparableCritic(mlp(20, 32, 1), mlp(20, 32, 2), x_dim=20)
    rows = []
    for K in sizes:
        x, y = split_pairs(CorrelatedGaussianSampler(20, mi=4.0)(K, torch.Generator().manual_seed(K)), 20)
        times = {}
        for name, scores in (("joint", lambda: joint_scores(joint, x, y)), ("separable", lambda: separable.scores(x, y))):
            samples = []
            for _ in range(reps):
                start = time.perf_counter()
                infonce(scores()).backward()
                samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples)
        rows.append({"K": K, **times, "ratio": times["joint"] / times["separable"]})
        print(f"K={K}: joint {1e3 * times['joint']:.2f} ms, separable {1e3 * times['separable']:.2f} ms, "
              f"ratio {rows[-1]['ratio']:.1f}", flush=True)
    return rows


def fmt(values, spec=".3f"):
    return "n/a" if not values else f"{statistics.median(values):{spec}}"


def report(rows: list, args: argparse.Namespace) -> str:
    lines = [
        "# DV benchmark: neural mutual-information estimates for correlated Gaussians",
        "",
        f"rho = {RHO}, 2-D (X, Y), {N} samples of Z and of Z_ref, true MI = {rows[0]['truth']:.4f} nats; "
        f"{args.seeds} seeds; {machine_line(args.threads)}.",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python benchmarks/bench_dv.py{' --quick' if args.quick else ''}`.",
        "",
        "| bound | batches/epoch | epochs | reached ±0.05 (seeds) | median time to ±0.05 | median epochs | "
        "bias (mean error) | std over seeds | held-out bias | held-out std | time per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bound in SETTINGS:
        rs = [r for r in rows if r["bound"] == bound]
        if not rs:
            continue
        ok = [r for r in rs if r["seconds_to_tol"] is not None]
        errors, held = [r["error"] for r in rs], [r["held_out_error"] for r in rs]
        sd = statistics.stdev(errors) if len(errors) > 1 else float("nan")
        sd_held = statistics.stdev(held) if len(held) > 1 else float("nan")
        lines.append(
            f"| {bound} | {SETTINGS[bound][0]} | {rs[0]['epochs']} | {len(ok)}/{len(rs)} | "
            f"{fmt([r['seconds_to_tol'] for r in ok], '.2f')} s | {fmt([r['epochs_to_tol'] for r in ok], '.0f')} | "
            f"{statistics.mean(errors):+.4f} | {sd:.4f} | {statistics.mean(held):+.4f} | {sd_held:.4f} | "
            f"{statistics.median(r['seconds_total'] for r in rs):.1f} s |"
        )
    lines += ["", "Per run (estimate after the last epoch, on the training data):", "",
              "| bound | seed | estimate | error | held-out error | epochs to ±0.05 | seconds to ±0.05 |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = "never" if r["seconds_to_tol"] is None else f"{r['seconds_to_tol']:.2f}"
        lines.append(f"| {r['bound']} | {r['seed']} | {r['estimate']:.4f} | {r['error']:+.4f} | "
                     f"{r['held_out_error']:+.4f} | {r['epochs_to_tol'] or 'never'} | {t} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, DV and MINE only")
    parser.add_argument("--seeds", type=int, default=5)
    # One thread: on a shared 2-core machine two OpenMP threads per process spin against other jobs
    # and made a 5 s run take 98 s.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bounds", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--note", default="", help="a remark about this run, printed (never written to the results)")
    parser.add_argument("--scores", action="store_true", help="only the joint vs separable score-matrix cost")
    args = parser.parse_args()
    if args.scores:
        torch.set_num_threads(args.threads)
        rows = score_cost()
        lines = ["# Score-matrix cost: joint vs separable critic (InfoNCE step, d = 20, hidden 64)", "",
                 f"{machine_line(args.threads)}; medians of 5 steps.", "",
                 "| K | joint ms | separable ms | joint / separable |", "|---|---|---|---|"]
        lines += [f"| {r['K']} | {1e3 * r['joint']:.2f} | {1e3 * r['separable']:.2f} | {r['ratio']:.1f} |" for r in rows]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dv_scores_benchmark.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if args.quick:
        args.seeds, args.bounds = 2, ["dv", "mine"]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "dv_benchmark_quick" if args.quick else "dv_benchmark"
    rows = []
    for bound in args.bounds:
        for seed in range(args.seeds):
            rows.append(run(bound, seed, *SETTINGS[bound]))
            r = rows[-1]
            print(f"{bound:8s} seed {seed}: estimate {r['estimate']:.4f} (error {r['error']:+.4f}), "
                  f"within {TOLERANCE} after {r['seconds_to_tol']} s, run {r['seconds_total']:.1f} s", flush=True)
            (args.out / f"{stem}.md").write_text(report(rows, args))
            with open(args.out / f"{stem}.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
