r"""LAX (Grathwohl et al. 2018, section 3): a learned control variate for a black-box $f$ of a continuous $x$.

For a reparameterisable $p_\lambda$ ($x = x(\varepsilon, \lambda)$, ``rsample``) and any differentiable
$c_\phi$,

.. math::

    \hat g_{\mathrm{LAX}} = \big[f(x) - c_\phi(x)\big]\,\nabla_\lambda \log p_\lambda(x)
                            + \nabla_\lambda c_\phi\big(x(\varepsilon, \lambda)\big)

is unbiased for $\nabla_\lambda\,\mathbb E[f(x)]$ whatever $c_\phi$ is: the score-function estimate of
$\nabla\mathbb E[c_\phi(x)]$ is subtracted and the pathwise estimate of the same gradient added back.
$f$ is only evaluated (a black box: it may be non-differentiable, even piecewise constant); $c_\phi$
is differentiated. Since $\mathbb E\hat g$ does not depend on $\phi$,
$\nabla_\phi\,\mathbb E\|\hat g\|^2 = \nabla_\phi\operatorname{Var}\hat g$, and :meth:`LAX.adapt_step`
takes one optimizer step on the single-batch estimate of it, as RELAX's
(:meth:`gradlab.relax.ControlVariateEstimator.adapt_step`). With $c_\phi = f$ (for a differentiable $f$)
the score term vanishes and LAX is the pathwise estimator; with $c_\phi = 0$ it is the score function.

Registered as ``"lax"`` with a fixed :class:`~gradlab.relax.CoordinateSurrogate` (never adapted).
Cost per sample: one evaluation of $f$, two of $c_\phi$'s forward pass (one shared) and one batched
backward pass through $c_\phi$ and the sampler.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .checks import check_count
from .distributions import draw, evaluate_costs, item_count, per_sample_param_grads, rebuild, repeat_params
from .estimator import Estimate, Estimator, register_estimator
from .relax import CoordinateSurrogate, module_dtype

__all__ = ["LAX"]


class LAX(Estimator, nn.Module):
    r"""LAX for a reparameterisable $p$ (``has_rsample``) and a black-box $f$; ``c_phi`` is the attribute ``c_phi``.

    ``c_phi``: a module (or callable) mapping samples ``(num_samples, *event)`` to ``(num_samples,)`` or
    ``(num_samples, 1)``. ``None`` builds a one-hidden-layer network with ``hidden`` ELU units on the
    flattened sample (``num_inputs`` features) whose output layer starts at zero: LAX then starts as the
    score-function estimator and :meth:`adapt_step` moves it away.
    """

    name = "lax"
    unbiased = True
    needs_f = "black box"
    cost = ("1 evaluation of f and of c_phi per sample, and one batched backward pass "
            "through c_phi and the sampler")

    def __init__(self, c_phi: Optional[Callable] = None, *, num_inputs: Optional[int] = None, hidden: int = 16):
        nn.Module.__init__(self)
        if c_phi is None:
            check_count(hidden, "hidden")
            first = nn.Linear(check_count(num_inputs, "num_inputs"), hidden) if num_inputs is not None \
                else nn.LazyLinear(hidden)
            last = nn.Linear(hidden, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            c_phi = nn.Sequential(nn.Flatten(), first, nn.ELU(), last)
        elif not callable(c_phi):
            raise TypeError(f"c_phi must be an nn.Module or callable, got {type(c_phi).__name__}")
        self.c_phi = c_phi

    def check(self, dist) -> None:
        if not dist.has_rsample:
            raise self.unsupported(
                dist, "a reparameterizable distribution (has_rsample): for discrete ones use 'relax' or 'rebar'"
            )

    def control_variate(self, x: torch.Tensor) -> torch.Tensor:
        """$c_\\phi(x)$ for a batch of samples, shape ``(num_samples,)`` in ``x``'s dtype."""
        out = self.c_phi(x.to(module_dtype(self.c_phi, x.dtype)))
        return out.to(x.dtype).reshape(x.shape[0])

    def param_grads(self, f, dist, lam, *, num_samples, baseline, generator, create_graph=False) -> Estimate:
        copies = repeat_params(lam, num_samples)
        with torch.enable_grad():
            rep = rebuild(dist, copies)
            x = draw(rep, (), generator=generator, reparameterized=True)
            values = evaluate_costs(f, x.detach(), num_samples, items=item_count(dist)).detach()
            total = values.sum(1) if values.dim() == 2 else values
            log_p = rep.log_prob(x.detach()).reshape(num_samples, -1).sum(1)
            score = per_sample_param_grads(log_p.sum(), copies)
            c = self.control_variate(x)
            grads = torch.autograd.grad(c.sum(), list(copies.values()), create_graph=create_graph, allow_unused=True)
            pathwise = torch.cat([(torch.zeros_like(v) if g is None else g).reshape(num_samples, -1)
                                  for v, g in zip(copies.values(), grads)], dim=1)
            g = (total - c).unsqueeze(1) * score + pathwise
        return Estimate(values, g if create_graph else g.detach())

    def estimate(self, f, make_dist, theta, *, num_samples, generator=None, create_graph=False) -> torch.Tensor:
        """Per-sample estimates ``(N, *theta.shape)``; with ``create_graph`` differentiable in $\\phi$."""
        return self.theta_estimate(
            f, make_dist, theta, num_samples=num_samples, generator=generator, create_graph=create_graph
        ).grads

    def grads_and_variance(
        self, f, make_dist, theta, *, num_samples: int, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Per-sample estimates (detached) and $\frac1N\sum_n\|\hat g_n\|^2$, differentiable in $\phi$."""
        g = self.estimate(f, make_dist, theta, num_samples=num_samples, generator=generator, create_graph=True)
        return g.detach(), g.reshape(num_samples, -1).pow(2).sum(dim=1).mean()

    def adapt_step(self, optimizer: torch.optim.Optimizer, f, make_dist, theta, *, num_samples: int, generator=None):
        """One variance-minimising step of ``optimizer`` over $\\phi$; returns that step's (detached) estimates."""
        g, loss = self.grads_and_variance(f, make_dist, theta, num_samples=num_samples, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return g


register_estimator("lax", LAX(CoordinateSurrogate(8, seed=0)))
