"""Cost and variance of discrete gradient estimators on the discrete VAE of Chapter 6.

For the encoder logits of a minibatch of binarized digits (64 images x 16 binary latents,
``--samples`` samples per estimate) it times one gradient estimate of each estimator relative to
one REINFORCE (RLOO) estimate, and measures the variance of one estimate (the sum over the
logits of the variance of the mean of ``--samples`` samples) relative to REINFORCE's, and the
squared bias against a high-sample REINFORCE reference. "Variance at equal cost" is the
variance times the relative cost: what an estimator's variance would be worth if REINFORCE
could spend the same time averaging more samples (below 1: better than REINFORCE).

REBAR and RELAX are timed twice: a plain estimate with their parameters fixed, and the
``adapt_step`` that also updates the control variate (what training uses). Their variance is
measured after ``--adapt`` adaptation steps on the same minibatch.

    .venv/bin/python benchmarks/bench_discrete.py            # about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradlab.data import load_binarized_digits  # noqa: E402
from gradlab.discrete import REBAR, RELAX, GumbelSoftmaxEstimator, StraightThroughEstimator  # noqa: E402
from gradlab.expectation import expectation_grad  # noqa: E402
from gradlab.latent import DiscreteVAE, PerItemSurrogate, bernoulli_logits  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_es import machine_description  # noqa: E402  (one description of the machine for every benchmark)


def interleaved_medians(contenders: dict, repeats: int) -> dict:
    """Median seconds per call of each contender, timed in turns (a change of load hits them all alike)."""
    for fn in contenders.values():
        fn()  # warm-up
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pretrain(vae: DiscreteVAE, x_train: torch.Tensor, num_steps: int) -> None:
    """A few hundred cheap Gumbel-softmax steps, so the encoder's probabilities are no longer all near 1/2."""
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    gen, est = torch.Generator().manual_seed(5), GumbelSoftmaxEstimator(0.5)
    for _ in range(num_steps):
        x = x_train[torch.randint(len(x_train), (64,), generator=gen)]
        grads = est.per_sample_grads(vae.cost_fn(x), bernoulli_logits, vae.encoder(x).detach(), num_samples=4, generator=gen)
        opt.zero_grad()
        vae.surrogate_loss(x, grads, generator=gen).backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="samples per gradient estimate")
    parser.add_argument("--repeats", type=int, default=40, help="timed repetitions per estimator")
    parser.add_argument("--variance-estimates", type=int, default=200, help="estimates used for each variance")
    parser.add_argument("--adapt", type=int, default=200, help="adaptation steps for REBAR/RELAX before measuring")
    parser.add_argument("--pretrain", type=int, default=300, help="Gumbel-softmax training steps before measuring")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x_train, _ = load_binarized_digits(test_size=0.2, seed=0)
    x = x_train[:64]
    vae = DiscreteVAE(64, 16, data_mean=x_train.mean(0))
    pretrain(vae, x_train, args.pretrain)
    f, logits = vae.cost_fn(x), vae.encoder(x).detach()
    S = args.samples

    def plain(estimator, baseline=None):
        gen = torch.Generator().manual_seed(1)
        return lambda: expectation_grad(f, bernoulli_logits, logits, estimator=estimator, num_samples=S,
                                        baseline=baseline, generator=gen)

    rebar, relax = REBAR(), RELAX(PerItemSurrogate(16))
    optimizers = {id(e): torch.optim.Adam(e.parameters(), lr=1e-2) for e in (rebar, relax)}

    def adapting(estimator):
        gen = torch.Generator().manual_seed(2)
        opt = optimizers[id(estimator)]
        return lambda: estimator.adapt_step(opt, f, bernoulli_logits, logits, num_samples=S, generator=gen)

    for est in (rebar, relax):
        step = adapting(est)
        for _ in range(args.adapt):
            step()

    def closed_form_rloo():
        """REINFORCE with RLOO written out for Bernoulli logits (score = b - p): the arithmetic floor."""
        gen = torch.Generator().manual_seed(4)

        def run():
            p = torch.sigmoid(logits)
            b = torch.bernoulli(p.expand(S, *p.shape), generator=gen)
            fb = f(b)
            baseline = (fb.sum() - fb) / (S - 1)
            return (fb - baseline)[:, None, None] * (b - p)

        return run

    contenders = {
        "REINFORCE (RLOO), score written out": closed_form_rloo(),
        "REINFORCE (RLOO), gradlab \"score\"": plain("score", "rloo"),
        "REINFORCE (no baseline)": plain("score"),
        "Gumbel-softmax tau=0.5": plain(GumbelSoftmaxEstimator(0.5)),
        "straight-through": plain(StraightThroughEstimator()),
        "REBAR (fixed)": plain(rebar),
        "REBAR (adapt_step)": adapting(rebar),
        "RELAX (fixed)": plain(relax),
        "RELAX (adapt_step)": adapting(relax),
    }
    ref_gen, chunks = torch.Generator().manual_seed(3), 10
    reference = sum(
        expectation_grad(f, bernoulli_logits, logits, estimator="score", num_samples=20000, baseline="rloo",
                         generator=ref_gen).mean(0)
        for _ in range(chunks)
    ) / chunks

    medians = interleaved_medians(contenders, args.repeats)
    rows = []
    for name, fn in contenders.items():
        seconds = medians[name]
        if "adapt_step" in name:
            rows.append(dict(name=name, ms=1e3 * seconds, variance=float("nan"), bias2=float("nan"), floor=float("nan")))
            continue
        estimates = torch.stack([fn().mean(0) for _ in range(args.variance_estimates)])
        variance = estimates.var(0).sum().item()
        bias2 = ((estimates.mean(0) - reference) ** 2).sum().item()
        rows.append(dict(name=name, ms=1e3 * seconds, variance=variance, bias2=bias2))
        rows[-1]["floor"] = variance / args.variance_estimates
        print(f"{name:26s} {1e3 * seconds:8.2f} ms  variance {variance:.3e}  bias^2 {bias2:.2e}", flush=True)

    base = rows[0]
    reference_noise = base["variance"] * S / (20000 * chunks)  # the reference is a mean of 200 000 RLOO samples
    for row in rows:
        row["bias_ratio"] = row["bias2"] / (row["floor"] + reference_noise)
        row["cost"] = row["ms"] / base["ms"]
        row["var_ratio"] = row["variance"] / base["variance"]
        row["equal_cost"] = row["var_ratio"] * row["cost"]

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "discrete_benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v, spec):
        return "–" if v != v else format(v, spec)

    lines = [
        "# Discrete estimators on the discrete VAE: cost and variance per gradient estimate",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} on {machine_description(args.threads)}. "
        f"Encoder logits of 64 binarized digits x 16 latents, {S} samples per estimate, float32; "
        f"median of {args.repeats} timed calls, the contenders taking turns; variance over {args.variance_estimates} estimates; REBAR/RELAX "
        f"adapted for {args.adapt} steps first (and further while `adapt_step` is timed); the model was trained for {args.pretrain} Gumbel-softmax steps before. "
        "Cost and variance are relative to the first row (REINFORCE with the leave-one-out baseline, its score "
        "$b - p$ written out by hand; the second row is the same estimator through gradlab's `\"score\"` estimator). "
        "Last column: squared distance of the mean of the estimates from a 200 000-sample REINFORCE reference, "
        "divided by what the noise of both alone would give: about 1 for an unbiased estimator, much more for a "
        "biased one.",
        "",
        "| estimator | ms per estimate | cost vs REINFORCE | variance vs REINFORCE | variance at equal cost | bias² / noise |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['ms']:.2f} | {row['cost']:.2f} | {fmt(row['var_ratio'], '.2e')} | "
            f"{fmt(row['equal_cost'], '.2e')} | {fmt(row['bias_ratio'], '.1f')} |"
        )
    (args.out / "discrete_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
