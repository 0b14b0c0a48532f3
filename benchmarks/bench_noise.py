"""ES at scale: the cost of noise with and without a NoiseTable, and 1 → 2 processes.

Part 1 (one process, ``--threads`` threads): dense ``es_grad_model`` with fresh normals
(``fresh``) and with a ``NoiseTable`` of 2**25 normals (``table``), against the batched
forward passes of all 2N perturbed models with pre-built weights (``limit``, from
``bench_es.py``) and TorchOpt's ``zero_order`` if installed, for the deep MLPs of
``bench_es.py`` with 10k, 100k and 300k parameters and N in {100, 1000}. Also the raw
cost of drawing one chunk of noise both ways.

Part 2 (1 thread per process): the deep 300k MLP, N = 1000, table noise: one process vs
two gloo processes on 127.0.0.1 (``group=``), the largest difference between the two
estimates, the bytes each rank exchanged, and the time of the reduction that every rank
repeats (the Amdahl term of the scheme).

Writes ``results/noise_benchmark.md`` and ``results/noise_benchmark.csv``.
Usage: ``python benchmarks/bench_noise.py [--quick] [--threads 1] [--note "..."]``.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import bench_es  # noqa: E402
from bench_es import BATCH, CLASSES, MODELS, SIGMA, Limit, build_mlp, machine_description, measure  # noqa: E402
from machine import report_load  # noqa: E402

from gradlab import NoiseTable, es_grad_model  # noqa: E402
from gradlab.es.distributed import allreduce_bytes, exchange_bytes  # noqa: E402
from gradlab.es.fastpath import NoiseLayout, fast_plan, fast_reduce  # noqa: E402
from gradlab.params import flatten_params  # noqa: E402

TABLE_SIZE = 2**25
NAMES = ["deep-10k", "deep-100k", "deep-300k"]


def problem(name: str):
    inputs, hidden = MODELS[name]
    torch.manual_seed(0)
    model = build_mlp(inputs, hidden)
    x, y = torch.randn(BATCH, inputs), torch.randint(0, CLASSES, (BATCH,))
    return model, x, y


def estimate(model, x, y, n, table=None, group=None, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=SIGMA, num_samples=n, generator=gen,
                         noise=table, group=group)


# ------------------------------------------------------------------ part 1
def noise_cost(names: List[str], sizes: List[int], reps: int, table: NoiseTable) -> List[dict]:
    rows = []
    loss_fn = nn.CrossEntropyLoss()
    for name in names:
        model, x, y = problem(name)
        d = flatten_params(model).numel()
        for n in sizes:
            limit = Limit(model, 2 * n, x.shape[1])
            contenders = {
                "fresh": lambda: estimate(model, x, y, n),
                "table": lambda: estimate(model, x, y, n, table),
                "limit": lambda: limit.run(loss_fn, x, y),
            }
            if bench_es.torchopt is not None:
                gen = torch.Generator().manual_seed(1)
                contenders["torchopt"] = lambda: bench_es.torchopt_estimate(model, loss_fn, x, y, n, gen)
            results = measure(contenders, reps=reps, slow=4.0)
            chunk = 100
            draws = {
                "randn": lambda: torch.randn(chunk, d),
                "rows": lambda: table.rows(table.offsets(chunk, d), d),
            }
            raw = measure(draws, reps=3, slow=4.0)
            row = {"model": name, "params": d, "N": n}
            row.update({f"{k} ms": 1e3 * v[0] for k, v in results.items()})
            row.update({f"{k} 100xd ms": 1e3 * v[0] for k, v in raw.items()})
            rows.append(row)
            print(", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            del limit
    return rows


# ------------------------------------------------------------------ part 2
def rank_worker(rank: int, world: int, port: int, n: int, reps: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model, x, y = problem("deep-300k")
    table = NoiseTable(TABLE_SIZE, 0)
    times, cpu, out = [], [], None
    for _ in range(reps + 1):  # the first call warms up
        dist.barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = estimate(model, x, y, n, table, group=dist.group.WORLD)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    torch.save({"times": times[1:], "cpu": cpu[1:], "estimate": out}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reduction_time(model, x, n: int, table: NoiseTable) -> float:
    """Seconds to rebuild sum_n w_n eps_n from N table offsets: what every rank repeats."""
    layout = NoiseLayout(fast_plan(model, x), None)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    offsets, weights = table.offsets(n, layout.size, torch.Generator().manual_seed(0)), torch.randn(n)
    chunk = 25
    buffer = torch.empty(chunk, layout.size)
    start = time.perf_counter()
    for a in range(0, n, chunk):
        draw = table.rows(offsets[a : a + chunk], layout.size, out=buffer[: min(chunk, n - a)])
        fast_reduce(layout, draw, weights[a : a + chunk], grads)
    return time.perf_counter() - start


def scaling(n: int, reps: int, table: NoiseTable) -> Dict[str, float]:
    torch.set_num_threads(1)
    model, x, y = problem("deep-300k")
    single_times, single_cpu, single = [], [], None
    for _ in range(reps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        single = estimate(model, x, y, n, table)
        single_times.append(time.perf_counter() - start)
        single_cpu.append(time.process_time() - start_cpu)
    half = statistics.median(timed_calls(lambda: estimate(model, x, y, n // 2, table), reps))
    reduce_s = statistics.median(timed_calls(lambda: reduction_time(model, x, n, table), reps))
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(rank_worker, args=(2, free_port(), n, reps, folder), nprocs=2, join=True)
        ranks = [torch.load(f"{folder}/rank{r}.pt") for r in (0, 1)]
    one = statistics.median(single_times[1:])
    two = statistics.median(max(a, b) for a, b in zip(ranks[0]["times"], ranks[1]["times"]))
    traffic = exchange_bytes(n, 2)
    d = flatten_params(model).numel()
    return {
        "params": d, "N": n, "1 process ms": 1e3 * one, "2 processes ms": 1e3 * two, "speedup": one / two,
        "ideal speedup (replicated reduction)": one / (one / 2 + reduce_s / 2),
        "1 process CPU ms": 1e3 * statistics.median(single_cpu[1:]),
        "2 processes CPU ms per rank (rank 0, rank 1)": ", ".join(
            f"{1e3 * statistics.median(r['cpu']):,.0f}" for r in ranks
        ),
        "CPU speedup (1-process CPU / slower rank's CPU)": statistics.median(single_cpu[1:])
        / max(statistics.median(r["cpu"]) for r in ranks),
        "half population ms": 1e3 * half, "reduction of N ms": 1e3 * reduce_s,
        "max |2 proc - 1 proc| / max |1 proc|": float((ranks[0]["estimate"] - single).abs().max() / single.abs().max()),
        "ranks identical": float(torch.equal(ranks[0]["estimate"], ranks[1]["estimate"])),
        "bytes sent per rank": traffic["sent"], "bytes received per rank": traffic["received"],
        "all-reduce bytes per rank (each way)": allreduce_bytes(d, 2),
    }


def timed_calls(fn, reps: int) -> List[float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------ report
def render(rows: List[dict], scale: Dict[str, float], machine: str, threads: int) -> str:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    report_load("at the end")
    lines = [
        "# ES at scale: noise table and processes",
        "",
        f"Measured {now} on {machine}.",
        f"Part 1 uses {threads} torch thread(s); part 2 one thread per process. Antithetic ES, sigma = {SIGMA}, "
        f"batch {BATCH}, float32 deep ReLU MLPs of bench_es.py, noise table of {TABLE_SIZE:,} normals. "
        "Times are medians of interleaved repetitions (ms per estimate).",
        "",
        "**Dense noise: fresh normals vs the table**",
        "",
    ]
    has_opt = any("torchopt ms" in r for r in rows)
    head = ["model", "params", "N", "fresh ms", "table ms", "limit ms", "fresh / limit", "table / limit",
            "fresh / table"] + (["torchopt ms", "torchopt / table"] if has_opt else [])
    head += ["randn 100×d ms", "table rows 100×d ms"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['params']:,}", str(r["N"]), f"{r['fresh ms']:.1f}", f"{r['table ms']:.1f}",
                 f"{r['limit ms']:.1f}", f"{r['fresh ms'] / r['limit ms']:.2f}", f"{r['table ms'] / r['limit ms']:.2f}",
                 f"{r['fresh ms'] / r['table ms']:.2f}x"]
        if has_opt:
            cells += [f"{r['torchopt ms']:.1f}", f"{r['torchopt ms'] / r['table ms']:.2f}x"]
        cells += [f"{r['randn 100xd ms']:.1f}", f"{r['rows 100xd ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    worst = [r["table ms"] / r["limit ms"] for r in rows if r["params"] > 250_000]
    if worst:
        lines += ["", f"Table noise against the limit at 300k parameters: {max(worst):.2f}× at worst."]
    if scale:
        lines += ["", f"**One process vs two (deep-300k, N = {scale['N']}, table noise, 1 thread each)**", ""]
        lines += [f"- {k}: {number(v)}" for k, v in scale.items()]
        lines += ["", f"Two processes against one: {scale['speedup']:.2f}× faster."]
    return "\n".join(lines) + "\n"


def number(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k/100k models, N = 100, scaling run at N = 100")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description(args.threads)
    if args.note:
        print(args.note, flush=True)
    print(machine, flush=True)
    table = NoiseTable(TABLE_SIZE, 0)
    names, sizes = (NAMES[:2], [100]) if args.quick else (NAMES, [100, 1000])
    rows = noise_cost(names, sizes, args.reps, table)
    scale = scaling(100 if args.quick else 1000, args.reps, table)
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"noise_benchmark{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = render(rows, scale, machine, args.threads)
    (args.out / f"noise_benchmark{suffix}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
