"""ARM and DisARM against REINFORCE-RLOO, REBAR and RELAX on the discrete VAE, at equal evaluations of f.

For the encoder logits of a minibatch of binarized digits (64 images x 16 binary latents), each
estimator gets the same budget of ``--evals`` evaluations of the per-image cost
$f(b) = -\\log p(x\\mid b)$ per gradient estimate: REINFORCE with the per-image leave-one-out
baseline takes ``evals`` samples, ARM and DisARM ``evals / 2`` antithetic pairs, REBAR and RELAX
``evals / 3`` samples (they evaluate $f$ at $b$, $\\sigma_\\tau(z)$ and $\\sigma_\\tau(\\tilde z)$).
It reports the variance of one estimate (summed over the logits) relative to REINFORCE-RLOO's,
each estimator's bias check against a high-sample reference, and the time per estimate.

    .venv/bin/python benchmarks/bench_arm.py            # about a minute on 2 CPU cores
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.distributions import Bernoulli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_discrete import interleaved_medians, pretrain  # noqa: E402
from gradlab import REBAR, RELAX, expectation_grad  # noqa: E402
from gradlab.data import load_binarized_digits  # noqa: E402
from gradlab.latent import DiscreteVAE, PerItemSurrogate  # noqa: E402

EVALS_PER_SAMPLE = {"REINFORCE (RLOO, per image)": 1, "ARM": 2, "DisARM": 2, "REBAR (adapted)": 3, "RELAX (adapted)": 3}


def per_image_cost(vae: DiscreteVAE, x: torch.Tensor):
    """``(S, batch, K) -> (S, batch)``: one cost per sample and image, the decoder frozen."""
    w, c = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    return lambda b: -Bernoulli(logits=b @ w.T + c, validate_args=False).log_prob(x).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=48, help="evaluations of f per gradient estimate")
    parser.add_argument("--estimates", type=int, default=100, help="estimates used for each variance")
    parser.add_argument("--adapt", type=int, default=200, help="adaptation steps for REBAR/RELAX")
    parser.add_argument("--pretrain", type=int, default=300, help="Gumbel-softmax training steps before measuring")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    x_train, _ = load_binarized_digits(test_size=0.2, seed=0)
    x = x_train[:64]
    vae = DiscreteVAE(64, 16, data_mean=x_train.mean(0))
    pretrain(vae, x_train, args.pretrain)
    f, logits = per_image_cost(vae, x), vae.encoder(x).detach()

    def make_dist(lam):
        return Bernoulli(logits=lam)

    def joint(b):  # REBAR/RELAX's relaxation and surrogate see the whole minibatch
        return f(b).sum(-1)

    rebar, relax = REBAR(), RELAX(PerItemSurrogate(16))
    for est in (rebar, relax):
        opt, gen = torch.optim.Adam(est.parameters(), lr=1e-2), torch.Generator().manual_seed(2)
        for _ in range(args.adapt):
            est.adapt_step(opt, joint, make_dist, logits, num_samples=max(2, args.evals // 3), generator=gen)

    def estimate(name, seed):
        gen = torch.Generator().manual_seed(seed)
        n = args.evals // EVALS_PER_SAMPLE[name]
        if name.startswith("REINFORCE"):
            return lambda: expectation_grad(f, make_dist, logits, estimator="score", baseline="rloo", num_samples=n,
                                            generator=gen).mean(0)
        if name in ("ARM", "DisARM"):
            key = name.lower()
            return lambda: expectation_grad(f, make_dist, logits, estimator=key, num_samples=n, generator=gen).mean(0)
        est = rebar if name.startswith("REBAR") else relax
        return lambda: expectation_grad(joint, make_dist, logits, estimator=est, num_samples=n, generator=gen).mean(0)

    ref_gen = torch.Generator().manual_seed(3)
    reference = torch.stack([
        expectation_grad(f, make_dist, logits, estimator="score", baseline="rloo", num_samples=20_000,
                         generator=ref_gen).mean(0)
        for _ in range(5)
    ]).mean(0)
    contenders = {name: estimate(name, 10 + i) for i, name in enumerate(EVALS_PER_SAMPLE)}
    medians = interleaved_medians(contenders, 20)
    rows = {}
    for name, fn in contenders.items():
        means = torch.stack([fn() for _ in range(args.estimates)])
        variance = means.var(0).sum().item()
        noise = variance / args.estimates
        bias2 = ((means.mean(0) - reference) ** 2).sum().item()
        rows[name] = dict(ms=1e3 * medians[name], variance=variance, bias_ratio=bias2 / noise)
        print(f"{name:30s} {rows[name]['ms']:7.2f} ms  variance {variance:.3e}  bias²/noise {bias2 / noise:.2f}", flush=True)

    base = rows["REINFORCE (RLOO, per image)"]
    lines = [
        "# ARM and DisARM on the discrete VAE, at an equal number of evaluations of f",
        "",
        f"2 CPU cores, no GPU. Encoder logits of 64 binarized digits x 16 latents; {args.evals} evaluations of the "
        f"per-image cost per estimate; variance over {args.estimates} estimates, summed over the logits; REBAR and "
        f"RELAX adapted for {args.adapt} steps first. Bias check: squared distance of the mean of the estimates from a "
        "100 000-sample REINFORCE reference over the noise of that mean (about 1 when unbiased).",
        "",
        "| estimator | samples per estimate | ms per estimate | variance vs REINFORCE-RLOO | bias² / noise |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {args.evals // EVALS_PER_SAMPLE[name]} | {row['ms']:.2f} | {row['variance'] / base['variance']:.3f} "
            f"| {row['bias_ratio']:.1f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arm_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
