"""Poole et al. (2019), Figure 2: the staircase. X, Y in R^20, I(X;Y) = 2, 4, 6, 8, 10 nats, a separable
critic g(x)^T h(y) (two hidden ReLU layers, 32-d embedding), K = 64 fresh pairs per step, Adam 5e-4.

Full size: 4,000 steps per level and hidden layers of 256 units, as in the paper; ``--quick``: 60 steps per
level, 64 units. Writes benchmarks/results/reproduce_poole.json: per bound the per-step estimates (each on a
fresh batch before the step) and, per level, the mean and standard deviation over the second half of the level.
The per-step estimates and their moving average (span 200) are stored every ``steps_per_level // 100`` steps.
Usage: python benchmarks/reproduce_poole.py [--quick] [--steps-per-level 4000] [--hidden 256] [--threads 1]
(a run with other sizes is stored with its sizes and labelled "custom").
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np
import torch
from torch import nn

import reproduce_common as common
from gradlab.dv import CorrelatedGaussianSampler, DVTrainer, SeparableCritic

LEVELS = [2.0, 4.0, 6.0, 8.0, 10.0]
BOUNDS = {"DV": "dv", "MINE": "mine", "NWJ": "nwj", "InfoNCE": "infonce", "I_alpha (0.01)": "interpolated",
          "SMILE (tau = 5)": "smile"}
PUBLISHED = {
    "source": "poole2019variational (Figure 2) and its notebook poole2019vbmi",
    "InfoNCE_cap": float(np.log(64)),
    "claims": ["InfoNCE is capped at log 64 = 4.16 nats and never exceeds it",
               "NWJ and TUBA track the steps but their variance grows with the mutual information",
               "I_alpha with small alpha trades some of InfoNCE's bias for variance"],
}


def relu_mlp(inputs: int, hidden: int, outputs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def run_bound(bound: str, steps_per_level: int, hidden: int, seed: int = 0, device: str = "cpu") -> np.ndarray:
    sampler = CorrelatedGaussianSampler(20, mi=LEVELS[0], device=device)
    critic = SeparableCritic(relu_mlp(20, hidden, 32, seed), relu_mlp(20, hidden, 32, seed + 1), x_dim=20).to(device)
    trainer = DVTrainer(None, None, critic, steps_per_level, sampler=sampler, batch_size=64, bound=bound, alpha=0.01,
                        clip=5.0, num_eval=64, seed=seed, lr=5e-4, progress=steps_per_level >= 1000)
    for level in LEVELS:
        sampler.mi = level
        trainer.step(1)
    return np.array(trainer.history["batch_estimate"])


def ema(values: np.ndarray, span: int = 200) -> np.ndarray:
    """Exponential moving average (the paper's plots smooth the per-step estimates this way)."""
    out, level, rate = np.empty_like(values), values[0], 2 / (span + 1)
    for i, v in enumerate(values):  # sequential by nature: each value depends on the previous one
        level = (1 - rate) * level + rate * v
        out[i] = level
    return out


def run(steps_per_level: int, hidden: int, device: str = "cpu") -> Dict[str, Dict]:
    out = {}
    for name, bound in BOUNDS.items():
        start = time.perf_counter()
        values = run_bound(bound, steps_per_level, hidden, device=device)
        late = values.reshape(len(LEVELS), steps_per_level)[:, steps_per_level // 2:]
        stride = max(1, steps_per_level // 100)  # 100 points per level keep the file small
        out[name] = {"stride": stride, "estimates": [round(float(v), 4) for v in values[::stride]],
                     "ema": [round(float(v), 4) for v in ema(values)[::stride]], "level_mean": late.mean(1).round(4).tolist(),
                     "level_sd": late.std(1).round(4).tolist(), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: level means {out[name]['level_mean']}, sd {out[name]['level_sd']}", flush=True)
    return out


if __name__ == "__main__":
    args = common.parse(__doc__, extra=[("--steps-per-level", int, 4000), ("--hidden", int, 256)])
    steps, hidden = (60, 64) if args.quick else (args.steps_per_level, args.hidden)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = run(steps, hidden, device)
    size = "full" if (steps, hidden) == (4000, 256) else "custom"
    common.save("poole", {"size": size, "setup": {"levels": LEVELS, "steps_per_level": steps, "hidden": hidden, "batch": 64,
                                    "lr": 5e-4, "embedding": 32}, "published": PUBLISHED, "results": results}, args)
