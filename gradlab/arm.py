r"""ARM and DisARM: antithetic estimators for binary latent variables.

For $b_i \sim \mathrm{Bernoulli}(\sigma(\alpha_i))$ independent, written through one uniform
$u_i$ as $b_i = \mathbb 1[u_i < \sigma(\alpha_i)]$, the *antithetic* sample
$\tilde b_i = \mathbb 1[1 - u_i < \sigma(\alpha_i)]$ (the same $u$ reflected) has the same
law. Both estimators below use the pair $(b, \tilde b)$: two evaluations of $f$ per draw of
$u$, and they estimate the gradient with respect to the **logits** $\alpha$.

**ARM** (Yin & Zhou 2019), the augment-REINFORCE-merge estimator:

$$\hat g^{\mathrm{ARM}}_i = \big(f(\tilde b) - f(b)\big)\,\big(u_i - \tfrac12\big).$$

**DisARM** (Dong, Mnih & Tucker 2020) integrates $u$ out given the pair $(b, \tilde b)$
(a Rao-Blackwellisation of ARM), so its variance is never larger:

$$\hat g^{\mathrm{DisARM}}_i = \tfrac12\big(f(b) - f(\tilde b)\big)\,
(-1)^{\tilde b_i}\,\mathbb 1[b_i \ne \tilde b_i]\,\sigma(|\alpha_i|).$$

Both are unbiased for $\nabla_\alpha \mathbb E[f(b)]$ for any $f$ (a black box: never
differentiated). When the two samples agree ($f(b) = f(\tilde b)$) the estimate is exactly 0.

With per-item costs ``f(b)`` of shape ``(N, B)`` (B independent items, the logits batched as
``(B, ...)``), item $j$'s logits are multiplied by item $j$'s cost difference only.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .estimator import Estimate, register_estimator
from .relax import DiscreteEstimator, costs, discrete_kind

__all__ = ["antithetic_pair", "arm_logit_grads", "disarm_logit_grads", "ARM", "DisARM"]


def antithetic_pair(
    logits: torch.Tensor, num_samples: int, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""$(u, b, \tilde b)$, each of shape ``(num_samples, *logits.shape)``, with $b, \tilde b$ as floats."""
    shape = (num_samples, *logits.shape)
    u = torch.rand(shape, generator=generator, dtype=logits.dtype, device=logits.device)
    p = torch.sigmoid(logits.detach())
    b = (u < p).to(logits.dtype)
    b_tilde = (1.0 - u < p).to(logits.dtype)
    return u, b, b_tilde


def _cost_difference(values: torch.Tensor, values_tilde: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``f(b) - f(b~)`` shaped to broadcast against ``(N, *logits.shape)`` (per item when costs are (N, B))."""
    diff = values - values_tilde
    extra = logits.dim() - (diff.dim() - 1)
    return diff.reshape(*diff.shape, *([1] * extra))


def _evaluate(f: Callable, b: torch.Tensor, b_tilde: torch.Tensor, evaluate: Callable):
    both = evaluate(f, torch.cat([b, b_tilde]))
    return both[: b.shape[0]], both[b.shape[0]:]


def arm_logit_grads(
    f: Callable, logits: torch.Tensor, num_samples: int, *, generator=None, evaluate: Callable
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""``(costs, grads)``: the mean cost of each pair and $\hat g^{\mathrm{ARM}}$ per draw, ``(N, *logits.shape)``.

    ``evaluate(f, x)`` evaluates ``f`` on a batch and checks its output (one call for both samples).
    """
    u, b, b_tilde = antithetic_pair(logits, num_samples, generator)
    values, values_tilde = _evaluate(f, b, b_tilde, evaluate)
    grads = -_cost_difference(values, values_tilde, logits) * (u - 0.5)
    return 0.5 * (values + values_tilde), grads


def disarm_logit_grads(
    f: Callable, logits: torch.Tensor, num_samples: int, *, generator=None, evaluate: Callable
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""``(costs, grads)``: the mean cost of each pair and $\hat g^{\mathrm{DisARM}}$ per draw."""
    _, b, b_tilde = antithetic_pair(logits, num_samples, generator)
    values, values_tilde = _evaluate(f, b, b_tilde, evaluate)
    sign = 1.0 - 2.0 * b_tilde  # (-1)^{b~}
    weight = sign * (b != b_tilde).to(logits.dtype) * torch.sigmoid(logits.detach().abs())
    grads = 0.5 * _cost_difference(values, values_tilde, logits) * weight
    return 0.5 * (values + values_tilde), grads


# --------------------------------------------------------------------------- in the one estimator protocol
class AntitheticBernoulli(DiscreteEstimator):
    """Common frame of ARM and DisARM: Bernoulli logits only, ``f`` a black box, 2 evaluations per sample."""

    relaxes = False
    needs_f = "black box"
    cost = "2 evaluations of f per sample (an antithetic pair), no backward pass"
    rule: Callable = staticmethod(arm_logit_grads)

    def check(self, dist) -> None:
        if discrete_kind(dist) != "bernoulli":
            raise self.unsupported(dist, "a Bernoulli distribution (or an Independent product of them)")

    def lambda_grads(self, f, kind, lam, *, generator, create_graph, items=None) -> Estimate:
        count = lam.shape[0]

        def evaluate(fn, x):
            return costs(fn, x, x.shape[0], items=items).detach()

        values, grads = self.rule(f, lam[0].detach(), count, generator=generator, evaluate=evaluate)
        return Estimate(values, grads)


class ARM(AntitheticBernoulli):
    r"""ARM (Yin & Zhou 2019): $(f(\tilde b) - f(b))(u - \frac12)$; registered as ``"arm"``."""

    name = "arm"
    rule = staticmethod(arm_logit_grads)


class DisARM(AntitheticBernoulli):
    r"""DisARM (Dong et al. 2020): ARM with $u$ integrated out given the pair; registered as ``"disarm"``."""

    name = "disarm"
    rule = staticmethod(disarm_logit_grads)


register_estimator("arm", ARM())
register_estimator("disarm", DisARM())
