"""gradlab.labcheck_stats: the statistics themselves (degrees of freedom, p-values, critical values, power).

tests/test_labcheck.py checks size and power of the graders over seeds; here every reported number is
compared with an independent computation (scipy.stats), in settings where a wrong convention changes it:
several positions, categories of probability 0, many coordinates, one-sided ratios.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from gradlab.labcheck_stats import POWER_Z, check_frequencies, check_same_law, check_unbiased, check_variance_ratio

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chi_square(draws: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic summed over positions and its degrees of freedom, sum_j (K_j - 1) over the
    categories of non-zero probability K_j of position j."""
    stat, df = 0.0, 0
    for j in range(probs.shape[0]):
        counts = torch.bincount(draws[:, j], minlength=probs.shape[1]).double()
        expected = draws.shape[0] * probs[j]
        keep = expected > 0
        stat += float(((counts - expected)[keep] ** 2 / expected[keep]).sum())
        df += int(keep.sum()) - 1
    return stat, df


def test_check_frequencies_p_value_is_the_chi_square_one_with_the_right_degrees_of_freedom(capsys):
    """Three positions with 4, 3 and 2 categories of non-zero probability (of 4 each): df = 3 + 2 + 1 = 6."""
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.3, 0.2], [0.6, 0.4, 0.0, 0.0]], dtype=F64)
    draws = torch.multinomial(probs, 500, replacement=True, generator=gen(3)).T  # (500, 3)
    stat, df = chi_square(draws, probs)
    assert df == 6
    p = check_frequencies("categories", draws, probs, alpha=1e-6)
    assert math.isclose(p, stats.chi2.sf(stat, df), rel_tol=1e-9), (p, stats.chi2.sf(stat, df))
    assert "on 6 degrees of freedom" in capsys.readouterr().out
    # power of the comparison: one degree of freedom more or less moves p by far more than the tolerance
    assert abs(stats.chi2.sf(stat, df + 1) - p) > 1e-3 and abs(stats.chi2.sf(stat, df - 1) - p) > 1e-3


def test_check_frequencies_for_bits_has_one_degree_of_freedom_per_position():
    p_bits = torch.tensor([0.2, 0.55, 0.9, 0.35], dtype=F64)
    u = torch.rand(300, 4, generator=gen(4), dtype=F64)
    bits = (u < p_bits).double()
    stat, df = chi_square(bits.long(), torch.stack([1 - p_bits, p_bits], -1))
    assert df == 4
    p = check_frequencies("bits", bits, p_bits, alpha=1e-6)
    assert math.isclose(p, stats.chi2.sf(stat, df), rel_tol=1e-9)


def test_check_frequencies_has_its_size_at_a_loose_level(capsys):
    """At alpha = 0.2 a correct sampler fails in about 20% of the seeds: not far fewer (a test with too many
    degrees of freedom is conservative and would hardly ever fail), not far more. Binomial(150, 0.2):
    mean 30, sd 4.9."""
    probs = torch.tensor([[0.15, 0.35, 0.5], [0.3, 0.3, 0.4]], dtype=F64)
    failures = 0
    for seed in range(150):
        draws = torch.multinomial(probs, 200, replacement=True, generator=gen(100 + seed)).T
        try:
            check_frequencies("size", draws, probs, alpha=0.2)
        except AssertionError:
            failures += 1
    capsys.readouterr()
    assert 30 - 3 * 4.9 <= failures <= 30 + 3 * 4.9, failures


def test_check_unbiased_critical_value_is_bonferroni_over_the_coordinates(capsys):
    """Ten coordinates at level alpha: |z| must stay below z_{1 - alpha/20}. A sample whose largest |z| lies
    between z_{1 - alpha/2} and z_{1 - alpha/20} passes; one beyond z_{1 - alpha/20} fails."""
    m, n, alpha = 10, 400, 0.01
    base = torch.randn(n, m, generator=gen(6), dtype=F64)
    base = (base - base.mean(0)) / base.std(0)  # mean 0 and standard error 1/sqrt(n) exactly
    low, high = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(1 - alpha / (2 * m))
    shift = torch.zeros(m, dtype=F64)
    shift[3] = 0.5 * (low + high) / math.sqrt(n)
    z = check_unbiased("between", base + shift, torch.zeros(m), alpha=alpha)
    assert math.isclose(float(z[3]), 0.5 * (low + high), rel_tol=1e-9)
    shift[3] = 1.05 * high / math.sqrt(n)
    with pytest.raises(AssertionError, match="biased"):
        check_unbiased("beyond", base + shift, torch.zeros(m), alpha=alpha)
    capsys.readouterr()


def test_check_unbiased_power_requirement_includes_the_power_quantile(capsys):
    """detect=d passes only when se (z_crit + z_0.9) <= d: a d between se z_crit and se (z_crit + z_0.9)
    is refused as too noisy, a d above it accepted."""
    n, m, alpha = 100, 2, 0.05
    base = torch.randn(n, m, generator=gen(8), dtype=F64)
    base = (base - base.mean(0)) / base.std(0)
    se = 1 / math.sqrt(n)
    crit = stats.norm.ppf(1 - alpha / (2 * m))
    with pytest.raises(AssertionError, match="too noisy"):
        check_unbiased("noisy", base, torch.zeros(m), alpha=alpha, detect=se * (crit + 0.5 * POWER_Z))
    check_unbiased("enough", base, torch.zeros(m), alpha=alpha, detect=1.01 * se * (crit + POWER_Z))
    capsys.readouterr()


def test_check_same_law_reports_the_bonferroni_p_value(capsys):
    """Against a CDF: the returned value is m times the smallest per-coordinate p-value (Stephens' form
    of the Kolmogorov distribution), here compared with scipy's asymptotic Kolmogorov law."""
    m, n = 4, 3000
    x = torch.randn(n, m, generator=gen(10), dtype=F64)
    normal_cdf = lambda v: 0.5 * torch.erfc(-v / math.sqrt(2))  # noqa: E731
    worst = check_same_law("normal", x, normal_cdf, alpha=1e-6)
    d = [stats.kstest(x[:, j].numpy(), "norm").statistic for j in range(m)]
    p = [stats.kstwobign.sf((math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * dj) for dj in d]
    assert math.isclose(worst, m * min(p), rel_tol=1e-6), (worst, m * min(p))
    capsys.readouterr()


def test_check_variance_ratio_upper_only_accepts_any_smaller_variance(capsys):
    g = gen(12)
    a, b = torch.randn(2000, 3, generator=g, dtype=F64), torch.randn(2000, 3, generator=g, dtype=F64)
    ratio = check_variance_ratio("much smaller", 0.1 * a, b, factor=2.0, upper_only=True)
    assert math.isclose(ratio, float(0.01 * a.var(0).sum() / b.var(0).sum()), rel_tol=1e-12)
    with pytest.raises(AssertionError, match="outside"):
        check_variance_ratio("two-sided", 0.1 * a, b, factor=2.0)
    with pytest.raises(AssertionError, match="outside"):
        check_variance_ratio("too large", 3 * a, b, factor=2.0, upper_only=True)
    capsys.readouterr()
