"""How fast do the explorers answer a slider move? (Not a test: run by hand, results in benchmarks/results.)

For each explorer with its default problem, the time from a control change to the new
picture and readout (the callback a slider release triggers), for a setting not seen
before and for one already visited (cached), with one torch thread. Also the time to
precompute the static views of the book's grids, per frame.

    .venv/bin/python benchmarks/bench_widgets.py [--note "machine, load"]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gradlab.widgets import GradientExplorer, SmoothingExplorer, VarianceExplorer  # noqa: E402
from machine import machine_line, report_load  # noqa: E402  (benchmarks/machine.py)

OUT = Path(__file__).with_name("results") / "widgets_benchmark.md"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def slider_moves(explorer, control: str, values) -> tuple[float, float]:
    """Median seconds per move to new values, then per move back to visited ones."""
    explorer.widget  # noqa: B018 (first view, warm-up)
    fresh = [timed(lambda v=v: setattr(explorer.controls[control], "value", v)) for v in values]
    cached = [timed(lambda v=v: setattr(explorer.controls[control], "value", v)) for v in values]
    return statistics.median(fresh), statistics.median(cached)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--note", default="", help="a remark about this run, printed (never written to the results)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    cases = [
        ("GradientExplorer (MLP on digits, d = 1210, ES antithetic)", GradientExplorer, "num_samples",
         [30, 300, 1000]),
        ("GradientExplorer, estimator menu", GradientExplorer, "estimator",
         ["es_forward", "fd_central", "forward_grad"]),
        ("SmoothingExplorer (σ slider)", SmoothingExplorer, "sigma", [0.1, 0.6, 1.5]),
        ("VarianceExplorer (σ slider, 3 estimators × 5 N × 16 draws)", VarianceExplorer, "knob",
         [0.003, 0.03, 0.3]),
    ]
    for label, cls, control, values in cases:
        explorer = cls()
        fresh, cached = slider_moves(explorer, control, values)
        rows.append((label, fresh, cached))
        print(f"{label}: new setting {fresh:.3f} s, visited {cached:.4f} s")
    smoothing = SmoothingExplorer(num_samples=1000)
    grid = dict(function=list(smoothing.functions), sigma=[0.03, 0.1, 0.3, 0.6, 1.0, 1.5])
    total = timed(lambda: smoothing.static_html(**grid))
    per_frame = total / 18
    print(f"static frames (SmoothingExplorer, 18 frames): {total:.2f} s, {per_frame:.3f} s per frame")
    report_load("at the end")
    if args.note:
        print(args.note, flush=True)
    lines = [
        "# Explorer response times (seconds)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine_line(1)}.",
        "",
        "Time from a control change to the new picture and readout (median of 3 moves).",
        "",
        "| explorer, control | new setting | visited setting (cached) |",
        "|---|---|---|",
        *[f"| {label} | {fresh:.3f} | {cached:.4f} |" for label, fresh, cached in rows],
        "",
        f"Precomputing static views: {per_frame:.3f} s per frame (SmoothingExplorer, 18 frames, {total:.1f} s).",
        "",
    ]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
