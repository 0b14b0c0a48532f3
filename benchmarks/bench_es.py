"""Speed of ES gradient estimates for MLPs: gradlab vs a Python loop vs TorchOpt vs the batched-forward limit.

One run measures, for each model and population size N (same model, loss, batch
and N for every contender, antithetic sampling, sigma = 0.01):

* ``gradlab``      ``es_grad_model`` (dense Gaussian noise, Sequential fast path)
* ``gradlab r=k``  ``es_grad_model(..., rank=k)`` (low-rank noise E = A B^T / sqrt(k))
* ``vmap``         ``es_grad_model(..., fast=False)``: functional_call + vmap over
                   materialised perturbed parameter vectors (gradlab's generic path)
* ``loop``         the seed lab's style: a Python loop over draws that writes
                   theta +- sigma z into the model and calls it
* ``torchopt``     ``torchopt.diff.zero_order`` (if installed), fastest sampler
                   (a ``torch.randn`` function)
* ``limit``        only the forward passes of all 2N perturbed models as batched
                   matmuls with pre-built perturbed weights (no noise drawn, no
                   reduction): what any estimator that evaluates every perturbed model
                   separately has to pay.

Times are medians over interleaved repetitions (contenders alternate, so a load
change on a shared machine hits all of them). Writes ``results/es_benchmark.md``
and ``results/es_benchmark.csv``.

Usage: ``python benchmarks/bench_es.py [--quick] [--threads 2] [--out benchmarks/results]``.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gradlab.compare import cosine_similarity  # noqa: E402
from machine import machine_line, report_load  # noqa: E402  (benchmarks/machine.py)
from gradlab.es.fastpath import member_losses  # noqa: E402
from gradlab.es.population import es_grad_model  # noqa: E402
from gradlab.params import flatten_grads, flatten_params  # noqa: E402

try:  # optional contender; never a requirement of gradlab
    import torchopt  # type: ignore

    TORCHOPT = getattr(torchopt, "__version__", "?")
except Exception as error:  # noqa: BLE001
    torchopt = None
    TORCHOPT = None
    TORCHOPT_ERROR = f"{type(error).__name__}: {error}"

SIGMA = 0.01
BATCH = 256
CLASSES = 10

# name -> (input dim, hidden widths); two families: a deep MLP on 64 inputs (digits-sized),
# and the seed lab's shape, one hidden layer on 784 inputs (MNIST-sized).
MODELS: Dict[str, Tuple[int, List[int]]] = {
    "deep-1.5k": (64, [16, 16]),
    "deep-10k": (64, [96, 32]),
    "deep-100k": (64, [320, 240]),
    "deep-300k": (64, [512, 512]),
    "wide-10k": (784, [12]),
    "wide-100k": (784, [128]),
    "wide-300k": (784, [384]),
}
QUICK_MODELS = ["deep-1.5k", "deep-10k", "deep-100k", "wide-100k"]


def build_mlp(inputs: int, hidden: List[int]) -> nn.Sequential:
    layers: List[nn.Module] = []
    widths = [inputs, *hidden]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], CLASSES))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ contenders
def loop_estimate(model, loss_fn, x, y, num_samples, generator):
    """Seed-lab style: write theta +- sigma z into the model, call it, accumulate; one draw at a time."""
    params = list(model.parameters())
    theta = flatten_params(model)
    grad = torch.zeros_like(theta)
    with torch.no_grad():
        for _ in range(num_samples):
            z = torch.randn(theta.shape, generator=generator)
            torch.nn.utils.vector_to_parameters(theta + SIGMA * z, params)
            plus = loss_fn(model(x), y)
            torch.nn.utils.vector_to_parameters(theta - SIGMA * z, params)
            minus = loss_fn(model(x), y)
            grad += (plus - minus) * z
        torch.nn.utils.vector_to_parameters(theta, params)
    return grad / (2 * SIGMA * num_samples)


def torchopt_estimate(model, loss_fn, x, y, num_samples, generator):
    names = [name for name, _ in model.named_parameters()]

    @torchopt.diff.zero_order(
        distribution=lambda shape: torch.randn(shape, generator=generator),
        method="antithetic", argnums=0, num_samples=num_samples, sigma=SIGMA,
    )
    def loss_of(params, inputs, targets):
        return loss_fn(torch.func.functional_call(model, dict(zip(names, params)), (inputs,)), targets)

    params = tuple(p.detach().requires_grad_(True) for p in model.parameters())
    grads = torch.autograd.grad(loss_of(params, x, y), params)
    return torch.cat([g.reshape(-1) for g in grads])


class Limit:
    """Forward passes of 2N perturbed models, batched, with perturbed weights built beforehand."""

    def __init__(self, model: nn.Sequential, num_models: int, inputs: int) -> None:
        d = flatten_params(model).numel()
        widths = inputs + sum(m.out_features for m in model if isinstance(m, nn.Linear))
        self.total = num_models
        # at most ~128 MB of weights and activations per batched pass
        self.chunk = max(1, min(num_models, 2**25 // (d + BATCH * widths)))
        gen = torch.Generator().manual_seed(0)
        self.layers = []
        for module in model:
            if isinstance(module, nn.Linear):
                w = module.weight.detach() + SIGMA * torch.randn(self.chunk, *module.weight.shape, generator=gen)
                b = module.bias.detach() + SIGMA * torch.randn(self.chunk, 1, module.bias.numel(), generator=gen)
                self.layers.append(("linear", w.transpose(1, 2).contiguous(), b))
            else:
                self.layers.append(("act", module, None))

    def run(self, loss_fn, x, y):
        losses = []
        with torch.no_grad():
            for start in range(0, self.total, self.chunk):
                count = min(self.chunk, self.total - start)
                h = x
                for kind, a, b in self.layers:
                    if kind == "linear":
                        h = torch.baddbmm(b[:count], h.expand(count, *h.shape[-2:]) if h.dim() == 2 else h, a[:count])
                    else:
                        h = a(h)
                losses.append(member_losses(loss_fn, h, y))  # the same batched loss as gradlab
        return torch.cat(losses)


# ------------------------------------------------------------------ timing
def timed(fn: Callable[[], object]) -> Tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(contenders: Dict[str, Callable[[], object]], reps: int, slow: float) -> Dict[str, Tuple[float, object]]:
    """Median seconds per call and the last output; a first call slower than ``slow`` s is kept as the only one."""
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    outputs: Dict[str, object] = {}
    for name, fn in contenders.items():  # warm-up round, kept only when it is expensive
        seconds, outputs[name] = timed(fn)
        if seconds > slow:
            times[name].append(seconds)
    for _ in range(reps):
        for name, fn in contenders.items():
            if times[name] and times[name][0] > slow:
                continue
            seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
    return {name: (statistics.median(times[name]), outputs[name]) for name in contenders}


def machine_description(threads: int) -> str:
    """The machine line of every results file (cores, GPU, torch and threads; nothing about the run)."""
    report_load("at start")
    return machine_line(threads)


def profile_estimate(model, loss_fn, x, y, num_samples, rank) -> List[Tuple[str, float]]:
    """Share of CPU time of the six most expensive ops, and of all matmul-type ops, in one estimate."""
    from torch.profiler import ProfilerActivity, profile

    es_grad_model(model, loss_fn, x, y, sigma=SIGMA, num_samples=num_samples, rank=rank)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        es_grad_model(model, loss_fn, x, y, sigma=SIGMA, num_samples=num_samples, rank=rank)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    matmul = sum(t for k, t in events if any(m in k for m in ("mm", "matmul", "linear")))
    top = sorted(events, key=lambda kt: -kt[1])[:6]
    return [("all matmul-type ops", matmul / total)] + [(k, t / total) for k, t in top]


# ------------------------------------------------------------------ main
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer models and repetitions (about a minute)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--samples", nargs="*", type=int, default=None, help="population sizes N")
    parser.add_argument("--ranks", nargs="*", type=int, default=None)
    parser.add_argument("--note", default="", help="a remark about this run, printed (never written to the results)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = args.models or (QUICK_MODELS if args.quick else list(MODELS))
    sizes = args.samples or ([10, 100] if args.quick else [10, 100, 1000])
    ranks = args.ranks if args.ranks is not None else ([1] if args.quick else [1, 4])
    reps = 2 if args.quick else 4
    machine = machine_description(args.threads)
    if args.note:
        print(args.note, flush=True)
    print(machine, flush=True)
    if torchopt is None:
        print(f"torchopt not available ({TORCHOPT_ERROR}); skipping it", flush=True)

    loss_fn = nn.CrossEntropyLoss()
    rows = []
    profile_rows: List[Tuple[str, float]] = []
    for name in names:
        inputs, hidden = MODELS[name]
        torch.manual_seed(0)
        model = build_mlp(inputs, hidden)
        d = flatten_params(model).numel()
        x, y = torch.randn(BATCH, inputs), torch.randint(0, CLASSES, (BATCH,))
        model.zero_grad()
        loss_fn(model(x), y).backward()
        reference = flatten_grads(model)
        model.zero_grad()
        for n in sizes:
            gen = torch.Generator().manual_seed(1)
            contenders: Dict[str, Callable[[], object]] = {
                "gradlab": lambda: es_grad_model(model, loss_fn, x, y, sigma=SIGMA, num_samples=n, generator=gen),
            }
            for r in ranks:
                contenders[f"gradlab r={r}"] = (
                    lambda r=r: es_grad_model(model, loss_fn, x, y, sigma=SIGMA, num_samples=n, rank=r, generator=gen)
                )
            if n * d <= 3 * 10**7:  # the generic path is only a reference; skip it where it takes long
                contenders["vmap"] = lambda: es_grad_model(
                    model, loss_fn, x, y, sigma=SIGMA, num_samples=n, generator=gen, fast=False
                )
            contenders["loop"] = lambda: loop_estimate(model, loss_fn, x, y, n, gen)
            if torchopt is not None:
                contenders["torchopt"] = lambda: torchopt_estimate(model, loss_fn, x, y, n, gen)
            limit = Limit(model, 2 * n, inputs)
            contenders["limit"] = lambda: limit.run(loss_fn, x, y)
            results = measure(contenders, reps=reps, slow=2.0)
            del limit
            base = results.get("torchopt", (math.nan, None))[0]
            for method, (seconds, out) in results.items():
                cos = cosine_similarity(out, reference) if method != "limit" else math.nan
                rows.append({
                    "model": name, "params": d, "N": n, "method": method, "ms": 1e3 * seconds,
                    "speedup_vs_torchopt": base / seconds, "x_limit": seconds / results["limit"][0],
                    "cosine": cos,
                })
            line = ", ".join(f"{m} {1e3 * results[m][0]:.1f} ms" for m in results)
            print(f"{name} (d={d}) N={n}: {line}", flush=True)
            write_outputs(args.out, rows, machine, ranks, [], quick=args.quick, echo=False)  # partial results
    if "deep-300k" in names and 1000 in sizes:
        inputs, hidden = MODELS["deep-300k"]
        torch.manual_seed(0)
        model = build_mlp(inputs, hidden)
        x, y = torch.randn(BATCH, inputs), torch.randint(0, CLASSES, (BATCH,))
        for rank in [None] + ranks[:1]:
            label = "dense" if rank is None else f"r={rank}"
            profile_rows += [(f"{label}: {k}", v) for k, v in profile_estimate(model, loss_fn, x, y, 100, rank)]

    write_outputs(args.out, rows, machine, ranks, profile_rows, quick=args.quick)
    return 0


def write_outputs(out: Path, rows, machine: str, ranks, profile_rows, quick: bool, echo: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    with open(out / f"es_benchmark{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md = render_markdown(rows, machine, ranks, profile_rows)
    (out / f"es_benchmark{suffix}.md").write_text(md)
    if echo:
        print(md)


def render_markdown(rows, machine: str, ranks, profile_rows) -> str:
    table: Dict[Tuple[str, int], Dict[str, dict]] = {}
    params: Dict[str, int] = {}
    for row in rows:
        table.setdefault((row["model"], row["N"]), {})[row["method"]] = row
        params[row["model"]] = row["params"]
    methods = ["gradlab"] + [f"gradlab r={r}" for r in ranks] + ["vmap", "loop", "torchopt", "limit"]
    have = {m for cell in table.values() for m in cell}
    methods = [m for m in methods if m in have]
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    report_load("at the end")
    lines = [
        "# ES gradient estimates: time per estimate (ms)",
        "",
        f"Measured {now} on {machine}.",
        f"Antithetic sampling, sigma = {SIGMA}, batch {BATCH}, cross-entropy over {CLASSES} classes, "
        "float32, ReLU MLPs; `deep-*` = 64 inputs and two hidden layers, `wide-*` = 784 inputs and "
        "one hidden layer (the seed lab's shape). N = number of noise draws (2N perturbed models).",
        "Speed-up columns are TorchOpt's time divided by gradlab's; `xlimit` is gradlab's time over the "
        "limit's (batched forward of all 2N perturbed models with pre-built weights). cos = cosine "
        "similarity of the estimate with the backprop gradient (one estimate each).",
        "",
    ]
    head = ["model", "params", "N"] + [f"{m} ms" for m in methods]
    head += ["speedup gradlab"] + [f"speedup r={r}" for r in ranks if f"gradlab r={r}" in have]
    head += ["gradlab xlimit", "cos gradlab"] + [f"cos r={r}" for r in ranks if f"gradlab r={r}" in have]
    head += ["cos torchopt"] if "torchopt" in have else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (model, n), cell in table.items():
        values = [model, f"{params[model]:,}", str(n)]
        values += [f"{cell[m]['ms']:.1f}" if m in cell else "" for m in methods]
        values += [f"{cell['gradlab']['speedup_vs_torchopt']:.1f}x"]
        values += [f"{cell[f'gradlab r={r}']['speedup_vs_torchopt']:.1f}x" for r in ranks if f"gradlab r={r}" in cell]
        values += [f"{cell['gradlab']['x_limit']:.2f}", f"{cell['gradlab']['cosine']:.3f}"]
        values += [f"{cell[f'gradlab r={r}']['cosine']:.3f}" for r in ranks if f"gradlab r={r}" in cell]
        if "torchopt" in cell:
            values += [f"{cell['torchopt']['cosine']:.3f}"]
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", "## Against TorchOpt", ""]
    lines += check_targets(table, params, ranks)
    if profile_rows:
        lines += ["", "Profile of one estimate, deep-300k, N=100 (share of self CPU time per op):", ""]
        lines += [f"- {family}: {share:.0%}" for family, share in profile_rows]
    return "\n".join(lines) + "\n"


def check_targets(table, params, ranks) -> List[str]:
    out = []
    if not any("torchopt" in cell for cell in table.values()):
        return ["TorchOpt was not available, so the targets relative to it were not measured."]

    small = [(k, c) for k, c in table.items() if params[k[0]] <= 2000 and k[1] in (100, 1000) and "torchopt" in c]
    if small:
        worst = min(c["gradlab"]["speedup_vs_torchopt"] for _, c in small)
        out.append(f"- speed-up over TorchOpt for <= 2k parameters at N in {{100, 1000}}: worst {worst:.1f}x")
    upto = [(k, c) for k, c in table.items() if params[k[0]] <= 310_000 and k[1] in (100, 1000) and "torchopt" in c]
    if upto:
        worst_key, worst_cell = min(upto, key=lambda kc: kc[1]["gradlab"]["speedup_vs_torchopt"])
        worst = worst_cell["gradlab"]["speedup_vs_torchopt"]
        out.append(
            f"- speed-up over TorchOpt up to 300k parameters at N in {{100, 1000}} (dense noise): worst "
            f"{worst:.2f}x ({worst_key[0]}, N={worst_key[1]})"
        )
    for model in ("deep-300k", "wide-300k"):
        cell = table.get((model, 1000))
        if cell and "torchopt" in cell:
            for r in ranks:
                if f"gradlab r={r}" in cell:
                    s = cell[f"gradlab r={r}"]["speedup_vs_torchopt"]
                    bound = cell["torchopt"]["ms"] / cell["limit"]["ms"]
                    out.append(
                        f"- low rank r={r} against TorchOpt at {model}, N=1000: {s:.1f}x "
                        f"(TorchOpt / limit = {bound:.1f}x: the most any estimator that runs all 2N "
                        "perturbed forward passes in full can gain)"
                    )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
