r"""The estimator cards as data: one row of properties per registered estimator.

:func:`properties_table` reads every estimator of :data:`gradlab.ESTIMATORS` and reports what
its class declares (what it targets, whether it is unbiased, what it needs of $f$, its cost per
sample, whether it takes a baseline) and what it *accepts*, found by asking its ``check`` about
one small distribution of each family. A chapter renders the rows as a table, so the table
cannot drift from the code: a new estimator is a new row, a new family it accepts a new entry.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import distributions as D

from .estimator import ESTIMATORS, Estimator, UnsupportedDistribution

__all__ = ["FAMILIES", "BOOK_ORDER", "accepted_families", "properties_table"]

# The order the book introduces them in (Chapters 4 and 6); estimators registered later follow.
BOOK_ORDER = ("score", "pathwise", "measure_valued", "concrete", "st", "rebar", "relax", "arm", "disarm")


def _vector(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


FAMILIES: Dict[str, Callable[[], D.Distribution]] = {
    "Normal": lambda: D.Normal(_vector(0.0, 1.0), _vector(1.0, 2.0)),
    "Bernoulli": lambda: D.Bernoulli(logits=_vector(0.3, -0.2)),
    "Categorical": lambda: D.Categorical(logits=_vector(0.1, 0.2, -0.3)),
    "OneHotCategorical": lambda: D.OneHotCategorical(logits=_vector(0.1, 0.2, -0.3)),
    "Poisson": lambda: D.Poisson(_vector(1.0, 2.0)),
    "Exponential": lambda: D.Exponential(_vector(1.0, 2.0)),
    "Gamma": lambda: D.Gamma(_vector(2.0, 3.0), _vector(1.0, 0.5)),
    "Beta": lambda: D.Beta(_vector(2.0, 3.0), _vector(1.0, 0.5)),
}


def accepted_families(estimator: Estimator) -> List[str]:
    """The names of :data:`FAMILIES` whose example distribution ``estimator.check`` accepts."""
    accepted = []
    for name, make in FAMILIES.items():
        try:
            estimator.check(make())
        except UnsupportedDistribution:
            continue
        accepted.append(name)
    return accepted


def properties_table(estimators: Optional[Dict[str, Estimator]] = None) -> List[Dict[str, object]]:
    """One dict per estimator (default: the whole registry): the book's order, then registration order."""
    chosen = ESTIMATORS if estimators is None else estimators
    rank = {key: i for i, key in enumerate(BOOK_ORDER)}
    rows = []
    for key in sorted(chosen, key=lambda k: rank.get(k, len(rank))):
        est = chosen[key]
        rows.append({
            "estimator": key,
            "class": type(est).__name__,
            "targets": "the true gradient" if est.unbiased else "the gradient of a relaxed objective",
            "unbiased": bool(est.unbiased),
            "needs of f": est.needs_f,
            "distributions": ", ".join(accepted_families(est)),
            "baseline": bool(est.uses_baseline),
            "cost per sample": est.cost,
        })
    return rows
