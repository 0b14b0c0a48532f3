r"""Statistical grading for stochastic answers (used by the lab test cells through :mod:`gradlab.labcheck`).

A stochastic answer is graded by what its task states, never by equality with one random-number
convention: a correct answer that draws its Gumbel noise as $-\log(-\log(1-u))$, or its bits as
$\mathbb 1[u > 1-p]$, passes.

* :func:`check_unbiased`: the mean of per-sample estimates lies in a confidence interval around the truth
  built from their own variance, at a stated level ``alpha`` for all coordinates together (Bonferroni);
  with ``detect=`` it also asserts the power of the check: a bias of that size would fail with probability
  at least 0.9 (else the sample is too noisy to grade).
* :func:`check_mean_bound`: a one-sided claim on a mean (at most a bound, e.g. a lower bound in expectation;
  or at least one), from the values' own standard error, with the same power check.
* :func:`check_variance_ratio`: the total variance is within a stated factor of the reference's.
* :func:`check_variance_below`: the variance of an average at an equal cost (per-sample variance times
  the cost of a sample) is below a stated factor of the reference's, with a one-sided confidence bound.
* :func:`check_same_law`: equal in distribution, per coordinate, to reference draws or to a stated CDF
  (Kolmogorov-Smirnov, Bonferroni over coordinates).
* :func:`check_frequencies`: categorical (or Bernoulli) draws have the stated probabilities (chi-square).

Each helper prints what it expected and what it got, then asserts; a correct answer fails at most at rate
``alpha`` (the size; the default is 1e-3, so a class of 300 students sees a false failure in a few tasks a
decade).
"""
from __future__ import annotations

import builtins as _b
import math
from typing import Callable, Union

import torch

__all__ = ["check_unbiased", "check_mean_bound", "check_variance_ratio", "check_variance_below", "check_same_law", "check_frequencies"]

POWER_Z = 1.2815515655446004  # the 0.9 quantile of the standard normal


def _normal_quantile(q: float) -> float:
    return _b.float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))


def _as_samples(what: str, samples, name: str = "samples") -> torch.Tensor:
    assert _b.isinstance(samples, torch.Tensor), f"{what}: expected a tensor of {name}, got {_b.type(samples).__name__}"
    assert samples.dim() >= 1 and samples.shape[0] >= 2, f"{what}: expected at least 2 {name}, got shape {_b.tuple(samples.shape)}"
    return samples.detach().to(torch.float64).reshape(samples.shape[0], -1)


def check_unbiased(what: str, samples: torch.Tensor, truth, *, alpha: float = 1e-3, detect=None) -> torch.Tensor:
    r"""Assert that the mean of ``samples`` (per-sample estimates, dim 0) is ``truth`` within its own error.

    Each coordinate's $z = (\bar g - g)/(s/\sqrt N)$ must satisfy $|z| < z_{1-\alpha/(2m)}$ for $m$
    coordinates. ``detect`` (a bias size, absolute, scalar or per coordinate): also assert that a bias of
    that size would be detected with probability at least 0.9. Returns the z-scores.
    """
    flat = _as_samples(what, samples, "per-sample estimates")
    truth = torch.as_tensor(truth, dtype=torch.float64).to(flat.device)
    expected_shape = samples.shape[1:]
    assert truth.shape == expected_shape or truth.numel() == 1, (
        f"{what}: expected estimates of shape {_b.tuple(truth.shape)}, got {_b.tuple(expected_shape)}")
    truth = truth.expand(expected_shape).reshape(-1)
    n, m = flat.shape
    mean = flat.mean(0)
    se = flat.std(0) / math.sqrt(n)
    crit = _normal_quantile(1 - alpha / (2 * m))
    z = torch.where(se > 0, (mean - truth) / se.clamp(min=1e-300), (mean - truth).abs() * math.inf)
    z = torch.nan_to_num(z, nan=0.0)
    _b.print(f"{what}\n  expected mean: {truth.reshape(expected_shape)}\n  your mean:     {mean.reshape(expected_shape)}"
             f"\n  in standard errors: {z.reshape(expected_shape)} (want |z| < {crit:.2f}: level {alpha:g})")
    if detect is not None:
        bias = torch.as_tensor(detect, dtype=torch.float64).to(flat.device).expand(expected_shape).reshape(-1)
        worst = (se * (crit + POWER_Z) / bias).max().item()
        assert worst <= 1.0, (f"{what}: the estimates are too noisy to tell a bias of {detect} from none "
                              f"(standard errors {se.reshape(expected_shape)}); the estimator's variance is too large")
    assert (z.abs() < crit).all(), f"{what}: the mean is {z.abs().max().item():.1f} standard errors from the truth (biased)"
    return z.reshape(expected_shape)


def check_mean_bound(what: str, samples: torch.Tensor, bound: float, *, side: str = "at most",
                     alpha: float = 1e-3, detect=None) -> float:
    r"""Assert a one-sided claim on the mean of ``samples`` (independent values, dim 0), within its own error.

    ``side="at most"``: the expectation is at most ``bound`` (a lower bound in expectation, say), so the check
    fails only if $\bar x > \text{bound} + z_{1-\alpha}\,s/\sqrt N$; ``side="at least"`` mirrors it.
    ``detect``: also assert that a mean off by ``detect`` on the wrong side of ``bound`` fails with probability
    at least 0.9, $(z_{1-\alpha} + z_{0.9})\,s/\sqrt N \le$ ``detect``. Returns the z-score.
    """
    assert side in ("at most", "at least"), f"side must be 'at most' or 'at least', got {side!r}"
    flat = _as_samples(what, samples, "values")
    assert flat.shape[1] == 1, f"{what}: expected one value per sample, got shape {_b.tuple(samples.shape)}"
    values = flat[:, 0]
    n = values.numel()
    mean, se = values.mean().item(), (values.std() / math.sqrt(n)).item()
    sign = 1.0 if side == "at most" else -1.0
    z = sign * (mean - bound) / se if se > 0 else (0.0 if sign * (mean - bound) <= 0 else math.inf)
    crit = _normal_quantile(1 - alpha)
    _b.print(f"{what}\n  expected mean: {side} {bound:.4f}\n  your mean:     {mean:.4f} (standard error {se:.4f}, "
             f"{n} values)\n  beyond the bound in standard errors: {z:.2f} (want < {crit:.2f}: level {alpha:g})")
    if detect is not None:
        assert (crit + POWER_Z) * se <= detect, (
            f"{what}: the values are too noisy to tell a mean {detect} {'above' if sign > 0 else 'below'} "
            f"{bound:.4f} from one that meets it (standard error {se:.4f})")
    assert z < crit, f"{what}: the mean {mean:.4f} is {z:.1f} standard errors {'above' if sign > 0 else 'below'} {bound:.4f}"
    return z


def check_variance_ratio(what: str, samples: torch.Tensor, reference: torch.Tensor, *, factor: float,
                         upper_only: bool = False) -> float:
    """Assert that the total variance of ``samples`` is within ``factor`` of the reference's (at most
    ``factor`` times it with ``upper_only``). Returns the ratio."""
    flat, ref = _as_samples(what, samples, "per-sample estimates"), _as_samples(what, reference)
    assert flat.shape[1] == ref.shape[1], f"{what}: expected {ref.shape[1]} coordinates per estimate, got {flat.shape[1]}"
    ratio = (flat.var(0).sum() / ref.var(0).sum().clamp(min=1e-300)).item()
    low = 0.0 if upper_only else 1 / factor
    _b.print(f"{what}\n  variance: reference {ref.var(0).sum().item():.4g}, yours {flat.var(0).sum().item():.4g} "
             f"(ratio {ratio:.3f}, want {'at most' if upper_only else 'between ' + f'{low:.3f} and'} {factor:g})")
    assert low <= ratio <= factor, f"{what}: variance ratio {ratio:.3f} outside [{low:.3f}, {factor:g}]"
    return ratio


def _total_variance(flat: torch.Tensor) -> tuple[float, float]:
    """The total variance (trace of the covariance) of per-sample rows, and the standard error of that
    estimate: it is the mean of $q_i = \\|x_i - \\bar x\\|^2$ (times $n/(n-1)$), so $s_q/\\sqrt n$."""
    n = flat.shape[0]
    q = (flat - flat.mean(0)).pow(2).sum(1) * (n / (n - 1))
    return q.mean().item(), (q.std() / math.sqrt(n)).item()


def check_variance_below(what: str, samples: torch.Tensor, reference: torch.Tensor, *, cost: float = 1.0,
                         reference_cost: float = 1.0, factor: float = 1.0, alpha: float = 1e-3) -> tuple[float, float]:
    r"""Assert that averaging ``samples`` beats averaging ``reference`` at an equal budget, with confidence.

    With a budget of $M$ cost units an average of $M/c$ samples has variance $c\,V/M$ ($V$ the total
    per-sample variance, $c$ the cost of one sample), so the ratio at equal cost is
    $R = c\,V / (c_{\mathrm{ref}} V_{\mathrm{ref}})$. Its one-sided upper confidence bound at level
    ``alpha`` (delta method on $\log R$, the two samples independent) must be below ``factor``: a true
    ratio of ``factor`` or more passes with probability at most ``alpha``. Returns ``(ratio, upper bound)``.
    """
    flat, ref = _as_samples(what, samples, "per-sample estimates"), _as_samples(what, reference)
    assert flat.shape[1] == ref.shape[1], f"{what}: expected {ref.shape[1]} coordinates per estimate, got {flat.shape[1]}"
    (v, se), (v_ref, se_ref) = _total_variance(flat), _total_variance(ref)
    assert v_ref > 0, f"{what}: the reference has no variance"
    if v <= 0:
        ratio = upper = 0.0
    else:
        ratio = cost * v / (reference_cost * v_ref)
        upper = ratio * math.exp(_normal_quantile(1 - alpha) * math.sqrt((se / v) ** 2 + (se_ref / v_ref) ** 2))
    _b.print(f"{what}\n  per-sample variance: reference {v_ref:.4g} at cost {reference_cost:g}, yours {v:.4g} at cost "
             f"{cost:g}\n  variance ratio at equal cost {ratio:.3f}, upper confidence bound {upper:.3f} "
             f"(level {alpha:g}; want below {factor:g})")
    assert upper < factor, (f"{what}: at equal cost the variance ratio is {ratio:.3f} (upper bound {upper:.3f}), "
                            f"not below {factor:g}")
    return ratio, upper


def _kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution (the asymptotic law of sqrt(n) D)."""
    if lam < 0.2:
        return 1.0
    total = _b.sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in _b.range(1, 101))
    return _b.min(_b.max(2 * total, 0.0), 1.0)


def check_same_law(what: str, samples: torch.Tensor, law: Union[torch.Tensor, Callable], *,
                   alpha: float = 1e-3) -> float:
    """Assert that every coordinate of ``samples`` (draws along dim 0) follows ``law``: reference draws of
    the same shape (two-sample Kolmogorov-Smirnov), or a CDF applied elementwise to a tensor. Returns the
    smallest p-value (Bonferroni over coordinates)."""
    flat = _as_samples(what, samples, "draws")
    n, m = flat.shape
    if callable(law):
        values = flat.sort(0).values
        cdf = law(values).to(torch.float64)
        grid = torch.arange(1, n + 1, dtype=torch.float64, device=flat.device)[:, None] / n
        stat = torch.maximum((grid - cdf).abs(), (grid - 1 / n - cdf).abs()).max(0).values
        ne = torch.full((m,), n, dtype=torch.float64)
    else:
        ref = _as_samples(what, law, "reference draws")
        assert ref.shape[1] == m, f"{what}: expected {ref.shape[1]} coordinates per draw, got {m}"
        stat = torch.stack([_ks_two_sample(flat[:, j], ref[:, j]) for j in _b.range(m)])
        ne = torch.full((m,), n * ref.shape[0] / (n + ref.shape[0]), dtype=torch.float64)
    p = [_kolmogorov_sf((math.sqrt(e) + 0.12 + 0.11 / math.sqrt(e)) * d) for e, d in _b.zip(ne.tolist(), stat.tolist())]
    worst = _b.min(p) * m
    _b.print(f"{what}\n  Kolmogorov-Smirnov distance per coordinate: {[_b.round(d, 4) for d in stat.tolist()]}"
             f"\n  smallest p-value x {m} coordinates: {worst:.3g} (want > {alpha:g})")
    assert worst > alpha, f"{what}: the draws do not follow the stated law (p = {worst:.2g})"
    return worst


def _ks_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    both = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values.contiguous(), both, right=True).to(torch.float64) / a.numel()
    cdf_b = torch.searchsorted(b.sort().values.contiguous(), both, right=True).to(torch.float64) / b.numel()
    return (cdf_a - cdf_b).abs().max()


def check_frequencies(what: str, draws: torch.Tensor, probs: torch.Tensor, *, alpha: float = 1e-3) -> float:
    """Assert that categorical ``draws`` (integers, shape ``(N, *batch)``) have probabilities ``probs``
    (shape ``(*batch, K)``), or that 0/1 ``draws`` have success probabilities ``probs`` (shape ``batch``):
    one chi-square test over all positions. Returns the p-value."""
    assert _b.isinstance(draws, torch.Tensor), f"{what}: expected a tensor of draws, got {_b.type(draws).__name__}"
    draws = draws.detach()
    probs = torch.as_tensor(probs, dtype=torch.float64).to(draws.device)
    if probs.shape == draws.shape[1:]:  # Bernoulli
        values = draws.to(torch.float64)
        assert ((values == 0) | (values == 1)).all(), f"{what}: Bernoulli draws must be 0 or 1"
        draws, probs = values.long(), torch.stack([1 - probs, probs], -1)
    assert probs.shape[:-1] == draws.shape[1:], (
        f"{what}: expected draws of shape (N, {', '.join(map(str, probs.shape[:-1]))}), got {_b.tuple(draws.shape)}")
    k, n = probs.shape[-1], draws.shape[0]
    flat = draws.reshape(n, -1).long()
    assert ((flat >= 0) & (flat < k)).all(), f"{what}: draws must be categories 0..{k - 1}"
    counts = torch.stack([torch.bincount(flat[:, j], minlength=k) for j in _b.range(flat.shape[1])]).to(torch.float64)
    expected = n * probs.reshape(-1, k)
    impossible = (expected == 0) & (counts > 0)
    assert not impossible.any(), f"{what}: a category of probability 0 was drawn"
    keep = expected > 0
    stat = ((counts - expected) ** 2 / expected.clamp(min=1e-300))[keep].sum()
    df = keep.sum().item() - flat.shape[1]
    p = torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat.cpu() / 2).item()
    _b.print(f"{what}\n  expected frequencies: {(expected / n).reshape(probs.shape)}\n  your frequencies:     "
             f"{(counts / n).reshape(probs.shape)}\n  chi-square {stat.item():.1f} on {df} degrees of freedom, "
             f"p = {p:.3g} (want > {alpha:g})")
    assert p > alpha, f"{what}: the draws do not have the stated probabilities (p = {p:.2g})"
    return p
