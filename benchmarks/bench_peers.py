"""gradlab beside the same estimators written out by hand, and beside Storchastic and TorchOpt, in one run.

Problems (float32, one thread, the contenders taking turns, medians after a warm-up):

* **score-RLOO on a 200-bit Bernoulli** (logits theta, f(x) = (sum_j w_j (x_j - 1/2))^2), N = 64 and 1024:
  ``expectation_grad(estimator="score", baseline="rloo")`` (per-sample estimates) and ``surrogate_loss``
  + backward (the mean), against the estimator written out (score x - p, leave-one-out baseline; the same
  random draws, checked equal to gradlab's) and Storchastic's ``ScoreFunction(baseline_factory="batch_average")``.
* **score-RLOO on the discrete VAE** (gradlab.latent, 64 binarized digits): 16 latents with 4 samples and one
  cost per joint sample (as ``bench_discrete.py``), and 20 latents with 16 samples and one cost per image
  (per-item baseline), each against its hand-written form (and Storchastic's per-image RLOO).
* **REBAR / RELAX** on the 16-latent VAE: an estimate with the control variate fixed, and ``adapt_step``
  (the estimate plus one variance-minimising step of its parameters).
* **ES** on the seed lab's MLPs of 2.4k and 305k parameters (784 inputs, one hidden layer), N = 10 and 100
  antithetic draws: ``gradlab.es_grad_model`` beside TorchOpt's ``diff.zero_order`` (as ``bench_es.py``);
  EvoTorch has no row unless installed (it is not in the ``bench`` extra).

Ratios are time / time of the reference named in the row. Writes ``results/peers_benchmark.md``.

    .venv/bin/python benchmarks/bench_peers.py          # about two minutes on 2 cores
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.distributions import Bernoulli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_per_item import problem as per_item_problem  # noqa: E402
from gradlab.data import load_binarized_digits  # noqa: E402
from gradlab.discrete import REBAR, RELAX  # noqa: E402
from gradlab.expectation import expectation_grad, surrogate_loss  # noqa: E402
from gradlab.latent import DiscreteVAE, PerItemSurrogate, bernoulli_logits  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from storch_guest import as_storch, storch  # noqa: E402  (Storchastic's patches of torch only in its turns)

BITS = 200


def interleaved_medians(contenders: dict, repeats: int, warmup: int = 3) -> dict:
    """Median (wall seconds, CPU seconds of this thread) per call of each contender, timed in turns after
    ``warmup`` calls each. On a shared machine the CPU time is the steadier of the two: it leaves out the
    time the process waited for a core."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in contenders}


def bernoulli_contenders(num_samples: int) -> dict:
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(BITS, generator=g)
    w = torch.randn(BITS, generator=g)

    def f(x):
        return ((x - 0.5) * w).sum(-1) ** 2

    def make(t):
        return Bernoulli(logits=t)

    def gradlab_per_sample(gen):
        return expectation_grad(f, make, theta, estimator="score", num_samples=num_samples, baseline="rloo",
                                generator=gen)

    def hand(gen):
        p = torch.sigmoid(theta)
        x = (torch.rand(num_samples, BITS, generator=gen) < p).to(p.dtype)
        fx = f(x)
        b = (fx.sum() - fx) / (num_samples - 1)
        return (fx - b)[:, None] * (x - p)

    same = torch.allclose(gradlab_per_sample(torch.Generator().manual_seed(5)), hand(torch.Generator().manual_seed(5)),
                          rtol=1e-5, atol=1e-4)
    leaf = theta.clone().requires_grad_(True)

    def gradlab_surrogate(gen):
        leaf.grad = None
        surrogate_loss(f, make(leaf), num_samples=num_samples, baseline="rloo", generator=gen).backward()
        return leaf.grad

    def gradlab_elementwise(gen):  # the chain rule through an elementwise make_dist: diag J, no dense Jacobian
        return expectation_grad(f, lambda t: Bernoulli(probs=torch.sigmoid(t)), theta, estimator="score",
                                num_samples=num_samples, baseline="rloo", generator=gen)

    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    out = {
        "hand-written (per-sample)": lambda: hand(gens[0]),
        "gradlab expectation_grad (per-sample)": lambda: gradlab_per_sample(gens[1]),
        "gradlab expectation_grad, make_dist = Bernoulli(probs=sigmoid(theta))": lambda: gradlab_elementwise(gens[3]),
        "gradlab surrogate_loss + backward (mean)": lambda: gradlab_surrogate(gens[2]),
    }
    if storch is not None:
        method = as_storch(storch.method.ScoreFunction)("x", n_samples=num_samples, baseline_factory="batch_average")
        sleaf = theta.clone().requires_grad_(True)

        def storchastic():
            sleaf.grad = None
            storch.reset()
            storch.add_cost(f(method(Bernoulli(logits=sleaf))), "cost")
            storch.backward()
            return sleaf.grad

        out["Storchastic ScoreFunction batch_average (mean)"] = as_storch(storchastic)
    return out, same


def vae_joint_contenders(samples: int = 4, latents: int = 16):
    x_train, _ = load_binarized_digits(test_size=0.2, seed=0)
    x = x_train[:64]
    torch.manual_seed(0)
    vae = DiscreteVAE(64, latents, data_mean=x_train.mean(0))
    f, logits = vae.cost_fn(x), vae.encoder(x).detach()
    gens = [torch.Generator().manual_seed(i) for i in range(2)]

    def hand():
        p = torch.sigmoid(logits)
        b = torch.bernoulli(p.expand(samples, *p.shape), generator=gens[0])
        fb = f(b)
        baseline = (fb.sum() - fb) / (samples - 1)
        return (fb - baseline)[:, None, None] * (b - p)

    def gradlab():
        return expectation_grad(f, bernoulli_logits, logits, estimator="score", num_samples=samples,
                                baseline="rloo", generator=gens[1])

    return {"hand-written (joint RLOO)": hand, "gradlab \"score\" (joint RLOO)": gradlab}, (f, logits)


def vae_per_item_contenders():
    from bench_per_item import contenders

    _, logits, per_image = per_item_problem(20)
    runs = contenders(logits, per_image, seed=7)
    runs.pop("gradlab joint RLOO")
    order = ["hand-written per-image RLOO", "gradlab per-item RLOO", "Storchastic per-image RLOO"]
    return {k: runs[k] for k in order if k in runs}


def relax_contenders(f, logits, samples: int = 4):
    out = {}
    for name, est in (("REBAR", REBAR()), ("RELAX", RELAX(PerItemSurrogate(16)))):
        opt = torch.optim.Adam(est.parameters(), lr=1e-2)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        out[f"{name} fixed"] = (lambda e=est, g=g1: expectation_grad(
            f, bernoulli_logits, logits, estimator=e, num_samples=samples, generator=g))
        out[f"{name} adapt_step"] = (lambda e=est, o=opt, g=g2: e.adapt_step(
            o, f, bernoulli_logits, logits, num_samples=samples, generator=g))
    return out


ES_MODELS = {"2.4k": (784, [3]), "305k": (784, [384])}  # the seed lab's one-hidden-layer MLPs: 2,395 and 305,290 parameters


def es_contenders(size: str, num_samples: int) -> dict:
    """ES (antithetic, sigma = 0.01, batch 256): gradlab's ``es_grad_model`` beside TorchOpt's ``zero_order``
    (the same model, loss, batch and number of draws)."""
    from bench_es import BATCH, SIGMA, build_mlp, torchopt, torchopt_estimate
    from gradlab.es.population import es_grad_model

    inputs, hidden = ES_MODELS[size]
    torch.manual_seed(0)
    model, loss_fn = build_mlp(inputs, hidden), torch.nn.CrossEntropyLoss()
    x, y = torch.randn(BATCH, inputs), torch.randint(0, 10, (BATCH,))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = {"gradlab es_grad_model": lambda: es_grad_model(model, loss_fn, x, y, sigma=SIGMA, num_samples=num_samples,
                                                           generator=gens[0])}
    if torchopt is not None:
        out["TorchOpt diff.zero_order"] = lambda: torchopt_estimate(model, loss_fn, x, y, num_samples, gens[1])
    return out


def rows_for(title, medians, reference):
    base_wall, base_cpu = medians[reference]
    return [f"| {title} | {name} | {1e3 * c:.3f} | {c / base_cpu:.2f} | {1e3 * w:.3f} | {w / base_wall:.2f} |"
            for name, (w, c) in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# gradlab beside hand-written code, Storchastic and TorchOpt",
        "",
        f"2 CPU cores, no GPU; torch with {args.threads} thread(s), float32. Median of {args.repeats} calls "
        "after a warm-up, the contenders of a problem taking turns; CPU time of the calling thread (steady on a "
        "shared machine) and wall-clock time. Ratio: time / time of the first row of the problem. Storchastic and TorchOpt return only the mean gradient, gradlab's `expectation_grad` the "
        "per-sample estimates and `surrogate_loss` and `es_grad_model` the mean.",
        "",
        "| problem | contender | CPU ms per estimate | CPU ratio | wall ms | wall ratio |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for n in (64, 1024):
        runs, same = bernoulli_contenders(n)
        notes.append(f"200-bit Bernoulli, N = {n}: gradlab's per-sample estimates equal the hand-written ones "
                     f"for the same generator: {'yes' if same else 'NO'}.")
        lines += rows_for(f"score-RLOO, 200-bit Bernoulli, N = {n}", interleaved_medians(runs, args.repeats),
                          "hand-written (per-sample)")
        print("\n".join(lines[-len(runs):]), flush=True)
    runs, (f, logits) = vae_joint_contenders()
    lines += rows_for("score-RLOO, discrete VAE (64 images x 16 latents, 4 samples)",
                      interleaved_medians(runs, args.repeats), "hand-written (joint RLOO)")
    runs = vae_per_item_contenders()
    lines += rows_for("per-image score-RLOO, discrete VAE (64 images x 20 latents, 16 samples)",
                      interleaved_medians(runs, args.repeats), "hand-written per-image RLOO")
    runs = relax_contenders(f, logits)
    medians = interleaved_medians(runs, args.repeats)
    for name in ("REBAR", "RELAX"):
        pair = {k: medians[k] for k in (f"{name} fixed", f"{name} adapt_step")}
        lines += rows_for(f"{name}, discrete VAE (64 x 16, 4 samples)", pair, f"{name} fixed")
    es_repeats = max(5, args.repeats // 8)
    for size, n in (("2.4k", 10), ("2.4k", 100), ("305k", 10), ("305k", 100)):
        runs = es_contenders(size, n)
        lines += rows_for(f"ES, MLP of {size} parameters, N = {n} (antithetic)",
                          interleaved_medians(runs, es_repeats, warmup=2), "gradlab es_grad_model")
        print("\n".join(lines[-len(runs):]), flush=True)
    notes.append(f"ES rows: median of {es_repeats} calls each (a call of the 305k model takes up to a second).")
    if storch is None:
        notes.append("Storchastic is not installed: its rows are missing (pip install -e .[bench]).")
    if "TorchOpt diff.zero_order" not in runs:
        notes.append("TorchOpt is not installed: its ES rows are missing (pip install -e .[bench]).")
    installed = importlib.util.find_spec("evotorch") is not None
    notes.append("EvoTorch has no ES rows: it is not in the bench extra"
                 + (" (installed here, but no contender is written for it)." if installed else " and not installed."))
    notes.append("REBAR/RELAX have no hand-written column here; their ratio is adapt_step / fixed estimate.")
    lines += [""] + [f"- {note}" for note in notes]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(load average before {load_before:.1f}, after {load_after:.1f}; not written to the results)")


if __name__ == "__main__":
    main()
