r"""Reference answers that lab tests substitute for a student's earlier answer (not for the book).

When a task uses an earlier one (``train_bandit`` calls ``reinforce_loss``), its test runs it with the
reference below in place of the student's earlier function, through :class:`gradlab.labcheck.substituted`,
so that a missing or broken earlier answer costs only its own points. They are written with torch alone,
so they keep working while a test has gradlab's estimators disabled; each is in
:data:`gradlab.labcheck.TASK_REFERENCES` for its own task, so calling it from that task earns nothing.
"""
from __future__ import annotations

import builtins as _b
import math

import torch

__all__ = ["dv_standard_error", "equal_cost_variance_ratio", "es_grad_model", "es_step", "estimate_mi",
           "infonce_batch_values", "infonce_bound", "reinforce_grad_samples", "reinforce_loss", "relax_grad_samples",
           "st_bernoulli", "train_step"]


def es_grad_model(model, loss_fn, inputs, targets, *, sigma, num_samples, generator):
    """Lab 2: gradlab's antithetic ES estimate for all parameters, drawing the noise in one call."""
    from .es import es_grad_model as estimate

    return estimate(model, loss_fn, inputs, targets, sigma=sigma, num_samples=num_samples,
                    chunk_size=num_samples, generator=generator)


def es_step(model, loss_fn, inputs, targets, optimizer, *, sigma, num_samples, generator):
    """Lab 2: the loss before the step, then one optimizer step on :func:`es_grad_model`'s estimate."""
    from .params import assign_grads

    with torch.no_grad():
        before = _b.float(loss_fn(model(inputs), targets))
    optimizer.zero_grad()
    assign_grads(model, es_grad_model(model, loss_fn, inputs, targets, sigma=sigma, num_samples=num_samples,
                                      generator=generator))
    optimizer.step()
    return before


def reinforce_loss(logits, labels, *, num_samples, generator):
    r"""Lab 3: $-\frac1{BK}\sum_{ij}(r_{ij} - b_{ij})\log\pi(a_{ij}\mid i)$ with a per-image leave-one-out
    baseline, the draws taken with one ``torch.multinomial`` call of shape ``(B, K)``."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    draws = torch.multinomial(torch.softmax(logits, -1).detach(), num_samples, replacement=True, generator=generator)
    rewards = (draws == labels[:, None]).to(logits.dtype)
    others = (rewards.sum(1, keepdim=True) - rewards) / (num_samples - 1)
    return -((rewards - others) * torch.log_softmax(logits, -1).gather(1, draws)).mean()


def st_bernoulli(probs, generator):
    r"""Lab 4: $b = \mathbb 1[u < p]$ forward, the identity backward."""
    u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
    return (u < probs).to(probs.dtype) - probs.detach() + probs


def reinforce_grad_samples(f, theta, *, num_samples, generator):
    r"""Lab 4: per-sample REINFORCE estimates $f(b)\,(b - p)$ for bits with logits theta (no baseline)."""
    p = torch.sigmoid(theta.detach())
    b = torch.bernoulli(p.expand(num_samples, *p.shape), generator=generator)
    return f(b)[:, None] * (b - p)


def relax_grad_samples(f, theta, surrogate, *, num_samples, generator):
    r"""Lab 4: per-sample RELAX estimates $[f(b) - c(\tilde z)](b - p) + \nabla c(z) - \nabla c(\tilde z)$,
    differentiable in the surrogate's parameters (``create_graph=True``)."""
    lam = theta.detach().expand(num_samples, *theta.shape).clone().requires_grad_(True)
    tiny = torch.finfo(theta.dtype).tiny
    u, v = (torch.rand(lam.shape, generator=generator, dtype=theta.dtype, device=theta.device).clamp(min=tiny)
            for _ in _b.range(2))
    p = torch.sigmoid(lam)
    logistic = lambda w: lam + torch.log(w) - torch.log1p(-w)  # noqa: E731
    z = logistic(u)
    b = (z > 0).detach().to(theta.dtype)
    z_tilde = logistic(b * (1 - p + v * p) + (1 - b) * (1 - p) * (1 - v))
    c_tilde = surrogate(z_tilde)
    with torch.enable_grad():
        (grad_c,) = torch.autograd.grad((surrogate(z) - c_tilde).sum(), lam, create_graph=True)
    return (f(b) - c_tilde)[:, None] * (b - p.detach()) + grad_c


def equal_cost_variance_ratio(f, theta, eta, tau, *, num_evaluations, generator):
    r"""Lab 4: $\rho = \dfrac{V_{\mathrm{REBAR}}/\lfloor M/3\rfloor}{V_{\mathrm{REINFORCE}}/M}$ for $M$ evaluations of $f$
    on each (REBAR evaluates $f$ at $b$, $\sigma(z/\tau)$ and $\sigma(\tilde z/\tau)$), $V$ the total per-sample variance."""
    num_rebar = num_evaluations // 3
    reinforce = reinforce_grad_samples(f, theta, num_samples=num_evaluations, generator=generator)
    rebar = relax_grad_samples(f, theta, lambda z: eta * f(torch.sigmoid(z / tau)), num_samples=num_rebar,
                               generator=generator).detach()
    return (rebar.var(0).sum() / num_rebar / (reinforce.var(0).sum() / num_evaluations)).item()


def train_step(net, optimizer, Z_batch, Z_ref_batch):
    """Lab 5: one gradient-ascent step on the DV bound; returns the bound before the step."""
    from .dv import DV

    optimizer.zero_grad()
    value = DV(Z_batch, Z_ref_batch, net)
    (-value).backward()
    optimizer.step()
    return value.item()


def dv_standard_error(Z, Z_ref, net):
    r"""Lab 5: the delta-method standard error of the sample DV bound of ``net`` on ``Z``, ``Z_ref``:
    $\sqrt{\widehat{\operatorname{Var}}(t)/n + \widehat{\operatorname{Var}}(e^{t'}/\overline{e^{t'}})/n'}$, the two
    means treated as independent."""
    with torch.no_grad():
        t = net(Z).reshape(-1).to(torch.float64)
        t_ref = net(Z_ref).reshape(-1).to(torch.float64)
        w = torch.exp(t_ref - t_ref.max())
        w = w / w.mean()
        return _b.float((t.var() / t.numel() + w.var() / w.numel()).sqrt())


def estimate_mi(Z, Z_ref, Z_test, Z_ref_test, epochs, seed=0, holdout=None):
    """Lab 5: a fresh critic (two hidden ELU layers of 64, seeded) trained by gradlab's DVTrainer on the training
    pair (its default held-out split, or ``holdout``); returns ``(bound on the held-out pair Z_test, Z_ref_test,
    bound on the training pair, the trained critic)``."""
    from torch import nn

    from .dv import DV, DVTrainer
    from .training import build_mlp

    with torch.random.fork_rng(devices=[]):  # seeded critic, and the global random state left as it was
        torch.manual_seed(seed)
        net = build_mlp(Z.shape[1], [64, 64], 1, nn.ELU).to(device=Z.device, dtype=Z.dtype)
    options = {} if holdout is None else {"holdout": holdout}
    DVTrainer(Z, Z_ref, net, n_iters_per_epoch=5, seed=seed, lr=3e-3, **options).step(epochs)
    with torch.no_grad():
        return DV(Z_test, Z_ref_test, net).item(), DV(Z, Z_ref, net).item(), net


def infonce_bound(scores):
    r"""Lab 5: $\frac1K\sum_i\big(S_{ii} - \log\frac1K\sum_j e^{S_{ij}}\big)$ for a $K\times K$ score matrix
    ``scores[i, j]`` $= f(x_i, y_j)$ (each $x_i$'s partner $y_i$ against all $K$ $y$'s); at most $\log K$."""
    K = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(K)


def infonce_batch_values(critic, Z, x_dim, K):
    """Lab 5: :func:`infonce_bound` of ``critic(x, y)`` on each of the ``len(Z) // K`` consecutive batches of
    ``K`` rows of ``Z`` (the remainder dropped), without gradient tracking: a 1-d float64 tensor."""
    m = Z.shape[0] // K
    with torch.no_grad():
        batches = Z[: m * K].reshape(m, K, Z.shape[1])
        return torch.stack([infonce_bound(critic(b[:, :x_dim], b[:, x_dim:])) for b in batches]).to(torch.float64)
