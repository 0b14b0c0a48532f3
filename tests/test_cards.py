"""The generated properties table follows the registry and each estimator's own checks."""
from __future__ import annotations

import torch

import gradlab
from gradlab.cards import FAMILIES, accepted_families, properties_table
from gradlab.estimator import Estimate, Estimator, register_estimator, ESTIMATORS


def rows_by_name():
    return {row["estimator"]: row for row in properties_table()}


def test_one_row_per_registered_estimator_in_the_books_order():
    names = [row["estimator"] for row in properties_table()]
    assert sorted(names) == sorted(ESTIMATORS)
    assert names[:3] == ["score", "pathwise", "measure_valued"] and names.index("arm") < names.index("disarm")


def test_families_come_from_each_estimators_check():
    rows = rows_by_name()
    assert "Bernoulli" not in rows["pathwise"]["distributions"]  # no rsample
    assert "Normal" in rows["pathwise"]["distributions"]
    assert "Poisson" in rows["measure_valued"]["distributions"] and "Beta" not in rows["measure_valued"]["distributions"]
    assert rows["disarm"]["distributions"] == "Bernoulli"
    assert set(rows["score"]["distributions"].split(", ")) == set(FAMILIES)  # every family has a log_prob
    assert rows["score"]["baseline"] and not rows["pathwise"]["baseline"]
    assert rows["concrete"]["unbiased"] is False and "relaxed" in rows["concrete"]["targets"]


def test_a_new_estimator_is_a_new_row():
    class OnlyPoisson(Estimator):
        name = "only_poisson_test"
        cost = "nothing"

        def check(self, dist):
            if not isinstance(dist, torch.distributions.Poisson):
                raise self.unsupported(dist, "a Poisson")

        def param_grads(self, f, dist, lam, **_):
            return Estimate(torch.zeros(1), torch.zeros(1, 1))

    est = register_estimator("only_poisson_test", OnlyPoisson())
    try:
        row = rows_by_name()["only_poisson_test"]
        assert row["distributions"] == "Poisson" and row["cost per sample"] == "nothing"
        assert accepted_families(est) == ["Poisson"]
    finally:
        del ESTIMATORS["only_poisson_test"]
    assert "only_poisson_test" not in rows_by_name()
    assert gradlab.ESTIMATORS is ESTIMATORS
