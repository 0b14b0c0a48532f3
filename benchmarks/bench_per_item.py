"""Per-item baselines: the variance of the RLOO encoder gradient of a discrete VAE, gradlab beside Storchastic.

The encoder logits of 64 binarized digits (sklearn), ``--latents`` binary latents each (20 and
200), 16 samples per estimate. The cost of sample n is one number per image,
f_{n,i} = -log p(x_i | b_{n,i}) (decoder fixed), so the leave-one-out baseline can be formed per
image (the other 15 samples of the same image) or over the joint sample (the other samples'
costs summed over all 64 images). Contenders, each giving one estimate of the gradient of
E[sum_i f_i] w.r.t. the (64, K) logits:

* ``gradlab per-item RLOO``: ``expectation_grad`` with ``f`` returning ``(N, 64)``, ``baseline="rloo"``.
* ``gradlab joint RLOO``: the same with ``f`` summed over images (``(N,)``): one baseline per joint sample.
* ``Storchastic per-image RLOO``: ``storch.method.ScoreFunction(baseline_factory="batch_average")`` with the
  logits denoted independent over a ``data`` plate (Storchastic averages the cost over that plate, so its
  gradient is multiplied by 64); run when ``import storch`` works.
* ``hand-written per-image RLOO``: the same estimator written out (score b - p), always run.

Reported: the total variance of one estimate (sum over logits of the variance over ``--estimates``
estimates) relative to the Storchastic (else hand-written) per-image estimator, and a check of the
means: the largest standardised difference of each contender's mean from the reference's.
Writes ``results/per_item_benchmark.md``.

    .venv/bin/python benchmarks/bench_per_item.py            # about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.distributions import Bernoulli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradlab.data import load_binarized_digits  # noqa: E402
from gradlab.expectation import expectation_grad  # noqa: E402
from gradlab.latent import DiscreteVAE, bernoulli_logits  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from storch_guest import as_storch, storch  # noqa: E402  (Storchastic's patches of torch only in its turns)

IMAGES, SAMPLES = 64, 16


def problem(num_latents: int, seed: int = 0):
    x_train, _ = load_binarized_digits(test_size=0.2, seed=0)
    x = x_train[:IMAGES]
    torch.manual_seed(seed)  # the VAE's initial weights only; every estimate below uses its own generator
    vae = DiscreteVAE(64, num_latents, data_mean=x_train.mean(0))
    with torch.no_grad():
        vae.decoder.weight.mul_(3.0)  # a decoder that cares about the latents
        logits = vae.encoder(x) * 3.0
    w, c = vae.decoder.weight.detach(), vae.decoder.bias.detach()

    def per_image(b: torch.Tensor) -> torch.Tensor:  # (S, 64, K) -> (S, 64)
        return -Bernoulli(logits=b @ w.T + c, validate_args=False).log_prob(x).sum(-1)

    return x, logits, per_image


def contenders(logits, per_image, seed):
    gens = {name: torch.Generator().manual_seed(seed + i) for i, name in enumerate("abcd")}

    def gradlab_items():
        return expectation_grad(per_image, bernoulli_logits, logits, estimator="score", num_samples=SAMPLES,
                                baseline="rloo", generator=gens["a"]).mean(0)

    def gradlab_joint():
        return expectation_grad(lambda b: per_image(b).sum(-1), bernoulli_logits, logits, estimator="score",
                                num_samples=SAMPLES, baseline="rloo", generator=gens["b"]).mean(0)

    def hand():
        p = torch.sigmoid(logits)
        b = torch.bernoulli(p.expand(SAMPLES, *p.shape), generator=gens["c"])
        f = per_image(b)
        baseline = (f.sum(0, keepdim=True) - f) / (SAMPLES - 1)
        return ((f - baseline).unsqueeze(-1) * (b - p)).mean(0)

    out = {"gradlab per-item RLOO": gradlab_items, "gradlab joint RLOO": gradlab_joint,
           "hand-written per-image RLOO": hand}
    if storch is not None:
        leaf = logits.clone().requires_grad_(True)
        method = as_storch(storch.method.ScoreFunction)("z", n_samples=SAMPLES, baseline_factory="batch_average")

        def storchastic():
            leaf.grad = None
            storch.reset()
            z = method(Bernoulli(logits=storch.denote_independent(leaf, 0, "data")))
            storch.add_cost(per_image(z), "reconstruction")
            storch.backward()
            return leaf.grad.clone() * IMAGES  # Storchastic averages the cost over the data plate

        out["Storchastic per-image RLOO"] = as_storch(storchastic)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--estimates", type=int, default=300, help="estimates per contender for each variance")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference_name = "Storchastic per-image RLOO" if storch is not None else "hand-written per-image RLOO"
    lines = [
        "# Per-item baselines: RLOO encoder-gradient variance on the discrete VAE",
        "",
        f"2 CPU cores, no GPU. Encoder logits of {IMAGES} binarized digits, {SAMPLES} samples per estimate, "
        f"float32; {args.estimates} estimates per contender (the contenders taking turns). Variance: the sum over "
        f"the logits of the variance of one estimate, relative to {reference_name}. Mean check: the largest "
        "|difference of means| / (its standard error) over the logits, against the same reference (for 64·K "
        "unbiased comparisons, values up to about 4–4.5 are expected from noise alone) and the mean of its square "
        "(about 1 when the means agree).",
        "",
        "| latents | estimator | variance vs reference | max standardised mean difference | mean squared "
        "standardised difference | seconds for all estimates |",
        "|---|---|---|---|---|---|",
    ]
    if storch is None:
        print("storch not importable: Storchastic column skipped (pip install -e .[bench])")
    for num_latents in args.latents:
        _, logits, per_image = problem(num_latents)
        runs = contenders(logits, per_image, seed=10 * num_latents)
        estimates = {name: [] for name in runs}
        seconds = {name: 0.0 for name in runs}
        for _ in range(args.estimates):
            for name, fn in runs.items():  # taking turns
                start = time.perf_counter()
                estimates[name].append(fn().detach().double())
                seconds[name] += time.perf_counter() - start
        stacks = {name: torch.stack(v) for name, v in estimates.items()}
        ref = stacks[reference_name]
        ref_var = ref.var(0).sum().item()
        for name, stack in stacks.items():
            ratio = stack.var(0).sum().item() / ref_var
            se = (stack.var(0) / len(stack) + ref.var(0) / len(ref)).sqrt().clamp_min(1e-30)
            zs = (stack.mean(0) - ref.mean(0)).abs() / se
            same = name == reference_name
            z_text = "–" if same else f"{zs.max().item():.2f}"
            z2_text = "–" if same else f"{zs.pow(2).mean().item():.2f}"
            lines.append(f"| {num_latents} | {name} | {ratio:.3g} | {z_text} | {z2_text} | {seconds[name]:.2f} |")
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "per_item_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
