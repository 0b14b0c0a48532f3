"""Belghazi et al. (2018), Figure 1 (d = 2): MINE on correlated Gaussians over rho, against the truth.

X, Y in R^2 with corr(X_k, Y_k) = rho. MINE (the DV bound with the moving-average gradient) is trained by
gradlab.DVTrainer on n pairs with a fresh reference shuffle every epoch, a critic with two hidden ELU layers of 64
units, Adam 3e-3; the estimate is taken on n new pairs (held-out). Full size: n = 10,000, 11 values of rho, 40
epochs of 20 minibatches; ``--quick``: n = 2,000, 5 values of rho, 12 epochs of 10.
Usage: python benchmarks/reproduce_belghazi.py [--quick] [--threads 1]
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

import reproduce_common as common
from gradlab.data import correlated_gaussians, product_of_marginals
from gradlab.dv import DVTrainer

PUBLISHED = {"source": "belghazi2018mine (Figure 1, left: d = 2)",
             "claims": ["MINE's estimate follows the true mutual information across rho in (-1, 1) for d = 2"]}


def critic(dim: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2 * dim, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU(), nn.Linear(64, 1))


def run(rhos: List[float], n: int, epochs: int, iters: int, dim: int = 2) -> Dict[str, List[float]]:
    out = {"rho": rhos, "truth": [], "mine_heldout": [], "mine_train": []}
    for k, rho in enumerate(rhos):
        Z, Z_ref, mi = correlated_gaussians(n, rho, dim=dim, seed=100 + k)
        held = correlated_gaussians(n, rho, dim=dim, seed=200 + k)[:2]
        trainer = DVTrainer(Z, Z_ref, critic(dim, k), iters, bound="mine", validation=held, seed=k, lr=3e-3,
                            ref_sampler=lambda g, Z=Z: product_of_marginals(Z, dim, g))
        trainer.step(epochs)
        out["truth"].append(round(mi, 4))
        out["mine_heldout"].append(round(trainer.history["val_estimate"][-1], 4))
        out["mine_train"].append(round(trainer.history["train_estimate"][-1], 4))
        print(f"rho={rho:+.2f}: truth {mi:.3f}, MINE held-out {out['mine_heldout'][-1]:.3f}", flush=True)
    return out


if __name__ == "__main__":
    args = common.parse(__doc__)
    if args.quick:
        rhos, n, epochs, iters = [-0.9, -0.5, 0.0, 0.5, 0.9], 2000, 12, 10
    else:
        rhos, n, epochs, iters = [round(-0.99 + 0.198 * i, 3) for i in range(11)], 10_000, 40, 20
    results = run(rhos, n, epochs, iters)
    worst = max(abs(a - b) for a, b in zip(results["mine_heldout"], results["truth"]))
    common.save("belghazi", {"setup": {"dim": 2, "n": n, "epochs": epochs, "minibatches": iters, "hidden": 64},
                             "published": PUBLISHED, "results": results, "max_abs_error": round(worst, 4)}, args)
    print(f"largest |error| {worst:.3f} nats ({math.log(n):.1f} = log n)")
