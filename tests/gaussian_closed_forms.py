r"""Closed forms for $x\sim\mathcal N(\mu,\sigma^2)$, $f(x) = (x-k)^2$, shared by the estimator tests.

Write $x = \mu + \sigma\varepsilon$, $a = \mu - k$, so $f = a^2 + 2a\sigma\varepsilon + \sigma^2\varepsilon^2$,
$\mathbb E f = a^2 + \sigma^2$, and the true gradient is $(\partial_\mu, \partial_\sigma) = (2a, 2\sigma)$.
Moments used: $\mathbb E\varepsilon^{2j} = 1, 3, 15, 105$ for $j = 1..4$, odd moments vanish.

* Score function, $\hat g = (f - b)\,s$ with $s_\mu = \varepsilon/\sigma$, $s_\sigma = (\varepsilon^2-1)/\sigma$:
  $\operatorname{Var} = \big(A - 2bB + b^2C\big)/\sigma^2 - g^2$ where, expanding $f^2 = a^4 + 4a^3\sigma\varepsilon
  + 6a^2\sigma^2\varepsilon^2 + 4a\sigma^3\varepsilon^3 + \sigma^4\varepsilon^4$,
  for $\mu$: $A = \mathbb E[f^2\varepsilon^2] = a^4 + 18a^2\sigma^2 + 15\sigma^4$, $B = \mathbb E[f\varepsilon^2] = a^2 + 3\sigma^2$, $C = 1$;
  for $\sigma$: $A = \mathbb E[f^2(\varepsilon^2-1)^2] = 2a^4 + 60a^2\sigma^2 + 78\sigma^4$,
  $B = \mathbb E[f(\varepsilon^2-1)^2] = 2a^2 + 10\sigma^2$, $C = \mathbb E(\varepsilon^2-1)^2 = 2$.
  With $b = 0$: $a^4/\sigma^2 + 14a^2 + 15\sigma^2$ and $2a^4/\sigma^2 + 60a^2 + 74\sigma^2$. The optimal
  constant is $b^\star = B/C$: $a^2 + 3\sigma^2$ for $\mu$, $a^2 + 5\sigma^2$ for $\sigma$.
* Pathwise, $\hat g = f'(x)\,(1, \varepsilon)$ with $f'(x) = 2(a + \sigma\varepsilon)$:
  $\operatorname{Var}_\mu = 4\sigma^2$, $\operatorname{Var}_\sigma = \operatorname{Var}(2a\varepsilon + 2\sigma\varepsilon^2) = 4a^2 + 8\sigma^2$.
* Measure-valued, coupled. Mean: $\frac{1}{\sigma\sqrt{2\pi}}\big(f(\mu+\sigma W) - f(\mu-\sigma W)\big)
  = \frac{4aW}{\sqrt{2\pi}}$ with $\mathbb E W = \sqrt{\pi/2}$, $\mathbb E W^2 = 2$:
  $\operatorname{Var}_\mu = \frac{16a^2}{2\pi}(2 - \frac{\pi}{2}) = a^2(16 - 4\pi)/\pi$.
  Scale: $\frac1\sigma\big(f(\mu+\sigma M) - f(\mu+\sigma MU)\big) = 2aM(1-U) + \sigma M^2(1-U^2)$ with
  $\mathbb E M^2 = 3$, $\mathbb E M^4 = 15$, $\mathbb E(1-U)^2 = 1/3$, $\mathbb E(1-U^2)^2 = 8/15$ and
  $\mathbb E M^3 = 0$: $\operatorname{Var}_\sigma = 4a^2 + 8\sigma^2 - 4\sigma^2 = 4a^2 + 4\sigma^2$.
* Delta-method control variate: $f - h = \sigma^2\varepsilon^2$ exactly, so
  $\hat g_\mu = \sigma\varepsilon^3 + 2a$ ($\operatorname{Var} = 15\sigma^2$) and
  $\hat g_\sigma = \sigma(\varepsilon^4 - \varepsilon^2)$ ($\operatorname{Var} = (105 - 30 + 3 - 4)\sigma^2 = 74\sigma^2$).

Tolerances: the sample mean is within 5 standard errors ($\sqrt{s^2/n}$) and the sample
variance within 5 of its standard errors $\sqrt{(m_4 - s^4)/n}$ ($m_4$ the fourth central
sample moment): a false alarm has probability below $10^{-5}$ per check.
"""
from __future__ import annotations

import math

import torch
from torch import distributions as D

MU, SIGMA = 1.0, 0.7
CASES = [0.3, 2.5, -1.0]  # values of k: a = 0.7, -1.5, 2.0


def make_normal(theta: torch.Tensor) -> D.Normal:
    return D.Normal(theta[0], theta[1])


def cost(k: float):
    return lambda x: (x - k) ** 2


def theta() -> torch.Tensor:
    return torch.tensor([MU, SIGMA], dtype=torch.float64)


def true_grad(k: float) -> torch.Tensor:
    return torch.tensor([2 * (MU - k), 2 * SIGMA], dtype=torch.float64)


def score_variance(k: float, b_mu: float = 0.0, b_sigma: float = 0.0) -> tuple[float, float]:
    a, s = MU - k, SIGMA
    var_mu = (a**4 + 18 * a**2 * s**2 + 15 * s**4 - 2 * b_mu * (a**2 + 3 * s**2) + b_mu**2) / s**2 - 4 * a**2
    a_sig = 2 * a**4 + 60 * a**2 * s**2 + 78 * s**4
    var_sigma = (a_sig - 2 * b_sigma * (2 * a**2 + 10 * s**2) + 2 * b_sigma**2) / s**2 - 4 * s**2
    return var_mu, var_sigma


def optimal_baseline(k: float) -> tuple[float, float]:
    a, s = MU - k, SIGMA
    return a**2 + 3 * s**2, a**2 + 5 * s**2


def pathwise_variance(k: float) -> tuple[float, float]:
    a, s = MU - k, SIGMA
    return 4 * s**2, 4 * a**2 + 8 * s**2


def measure_valued_variance(k: float) -> tuple[float, float]:
    a, s = MU - k, SIGMA
    return a**2 * (16 - 4 * math.pi) / math.pi, 4 * a**2 + 4 * s**2


def delta_variance(k: float) -> tuple[float, float]:
    return 15 * SIGMA**2, 74 * SIGMA**2


def assert_mean(samples: torch.Tensor, expected: torch.Tensor, num_se: float = 5.0) -> None:
    """Column means within ``num_se`` standard errors of ``expected``."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    print("mean", mean.tolist(), "expected", expected.tolist(), "se", se.tolist())
    assert torch.all((mean - expected).abs() <= num_se * se + 1e-12), (mean, expected, se)


def assert_variance(samples: torch.Tensor, expected, num_se: float = 5.0) -> None:
    """Column sample variances within ``num_se`` standard errors of ``expected``."""
    count = samples.shape[0]
    centered = samples - samples.mean(0)
    var = centered.pow(2).mean(0)
    se = ((centered.pow(4).mean(0) - var**2) / count).sqrt()
    expected = torch.as_tensor(expected, dtype=samples.dtype)
    print("variance", var.tolist(), "expected", expected.tolist(), "se", se.tolist())
    assert torch.all((var - expected).abs() <= num_se * se), (var, expected, se)
