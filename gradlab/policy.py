r"""Policy gradients for episodic tasks, vectorised over episodes.

The objective is $J(\theta) = \mathbb E\big[\sum_{t<T}\gamma^t r_t\big]$ over episodes of a policy
$\pi_\theta(a\mid s)$. Every estimator is the score function of the whole trajectory, with a
different weight $\Psi_t$ on each step's $\nabla_\theta\log\pi_\theta(a_t\mid s_t)$:

$$
\begin{gathered}
\hat g = \sum_{t} \nabla_\theta \log \pi_\theta(a_t\mid s_t)\ \Psi_t, \\
\Psi_t = \begin{cases}
\sum_{l} \gamma^l r_l & \text{``total''}\\
\gamma^t G_t & \text{``reward\_to\_go''}\\
\gamma^t (G_t - V(s_t, t)) & \text{``baseline''}\\
\gamma^t \hat A_t^{\mathrm{GAE}(\gamma,\lambda)} & \text{``gae''}
\end{cases} \\
G_t = \sum_{l\ge t}\gamma^{l-t} r_l, \qquad \hat A_t = \sum_{l\ge t}(\gamma\lambda)^{l-t}\delta_l, \\
\delta_t = r_t + \gamma V_{t+1} - V_t.
\end{gathered}
$$

Reward-to-go drops the rewards earned *before* step $t$, whose products with the score of $a_t$
have mean zero (causality); a baseline that depends on $(s_t, t)$ only keeps the estimate
unbiased; GAE (Schulman et al. 2016) equals the baseline form at $\lambda = 1$ and trades bias
(unless $V$ is exact) for variance as $\lambda$ decreases. The factor $\gamma^t$ makes every form
unbiased for the *discounted* $J$; it is 1 for $\gamma = 1$.

Episodes are stored padded to the horizon $T$ with a mask (1 while the episode runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import distributions as D

from .checks import check_callable, check_choice, check_count, check_positive
from .envs import check_gamma

__all__ = [
    "PG_METHODS",
    "Episodes",
    "rollout",
    "discounted_returns",
    "gae_advantages",
    "policy_weights",
    "policy_loss",
    "fit_linear_value",
    "LinearPolicy",
    "train_policy",
]

PG_METHODS = ("total", "reward_to_go", "baseline", "gae")


@dataclass
class Episodes:
    """A batch of N episodes padded to T steps: states (N, T, ...), actions, rewards, mask (N, T)."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, (N,)."""
        return (self.rewards * self.mask).sum(1)


def rollout(env, policy: Callable[[torch.Tensor], torch.Tensor], num_episodes: int, *,
            generator: Optional[torch.Generator] = None) -> Episodes:
    """Run ``num_episodes`` episodes at once; ``policy(states) -> logits (N, num_actions)``. No autograd."""
    check_callable(policy, "policy")
    num_episodes = check_count(num_episodes, "num_episodes")
    state = env.reset(num_episodes, generator=generator)
    alive = torch.ones(num_episodes, dtype=torch.bool, device=state.device)
    states, actions, rewards, masks = [], [], [], []
    with torch.no_grad():
        for _ in range(env.horizon):  # time is sequential; episodes are the vectorised dimension
            logits = policy(state)
            cdf = torch.softmax(logits, -1).cumsum(-1)
            u = torch.rand(cdf.shape[:1] + (1,), generator=generator, dtype=cdf.dtype, device=cdf.device)
            action = (u > cdf[:, :-1]).sum(-1)  # inverse CDF: one uniform per episode
            next_state, reward, done = env.step(state, action, generator=generator)
            states.append(state), actions.append(action), masks.append(alive)
            rewards.append(torch.where(alive, reward, torch.zeros_like(reward)))
            alive = alive & ~done
            state = next_state
            if not alive.any():
                break
    pad = env.horizon - len(states)  # every episode ended early: pad with masked steps
    states += [state] * pad
    actions += [torch.zeros_like(actions[0])] * pad
    rewards += [torch.zeros_like(rewards[0])] * pad
    masks += [alive] * pad
    mask = torch.stack(masks, 1).to(rewards[0].dtype)
    return Episodes(torch.stack(states, 1), torch.stack(actions, 1), torch.stack(rewards, 1), mask)


def _discount_matrix(horizon: int, factor: float, like: torch.Tensor) -> torch.Tensor:
    """U[l, t] = factor^(l - t) for l >= t, else 0 (so X @ U sums the future of each step)."""
    t = torch.arange(horizon, device=like.device)
    power = (t[:, None] - t[None, :]).to(like.dtype)
    return torch.where(power >= 0, torch.as_tensor(factor, dtype=like.dtype) ** power.clamp_min(0),
                       torch.zeros((), dtype=like.dtype, device=like.device))


def _check_batch(rewards: torch.Tensor, mask: torch.Tensor, values: Optional[torch.Tensor] = None) -> None:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2 or not rewards.is_floating_point():
        raise ValueError("rewards must be a floating tensor of shape (num_episodes, horizon)")
    if not isinstance(mask, torch.Tensor) or mask.shape != rewards.shape:
        raise ValueError(f"mask must be a tensor of shape {tuple(rewards.shape)}")
    if values is not None and (not isinstance(values, torch.Tensor) or values.shape != rewards.shape):
        raise ValueError(f"values must be a tensor of shape {tuple(rewards.shape)} (V(s_t, t))")


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    r"""Reward-to-go $G_t = \sum_{l\ge t}\gamma^{l-t} r_l m_l$, shape (N, T)."""
    _check_batch(rewards, mask)
    gamma = check_gamma(gamma)
    return (rewards * mask) @ _discount_matrix(rewards.shape[1], gamma, rewards)


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
                   lam: float = 0.95) -> torch.Tensor:
    r"""$\hat A_t = \sum_{l\ge t}(\gamma\lambda)^{l-t}\delta_l$, $\delta_t = r_t + \gamma V_{t+1}m_{t+1} - V_t$ (masked).

    ``values[:, t]`` is $V(s_t, t)$; the value after the last step of an episode is 0.
    ``lam = 1`` gives $G_t - V_t$, ``lam = 0`` the one-step TD error.
    """
    _check_batch(rewards, mask, values)
    gamma = check_gamma(gamma)
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not 0 <= lam <= 1:
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")
    v = values * mask
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    delta = (rewards + gamma * v_next - v) * mask
    return delta @ _discount_matrix(rewards.shape[1], gamma * lam, rewards)


def policy_weights(rewards: torch.Tensor, mask: torch.Tensor, *, method: str, values: Optional[torch.Tensor] = None,
                   gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    r"""The weights $\Psi_t$ of the module table, shape (N, T), zero after each episode's end."""
    check_choice(method, "method", PG_METHODS)
    _check_batch(rewards, mask, values)
    gamma = check_gamma(gamma)
    if method in ("baseline", "gae") and values is None:
        raise ValueError(f"method {method!r} needs values (N, T)")
    horizon = rewards.shape[1]
    discount = gamma ** torch.arange(horizon, dtype=rewards.dtype, device=rewards.device)
    if method == "total":
        psi = ((rewards * mask) @ discount)[:, None].expand_as(rewards)
    elif method == "reward_to_go":
        psi = discount * discounted_returns(rewards, mask, gamma)
    elif method == "baseline":
        psi = discount * (discounted_returns(rewards, mask, gamma) - values)
    else:
        psi = discount * gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)
    return psi * mask


def policy_loss(log_probs: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, *, method: str,
                values: Optional[torch.Tensor] = None, gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    r"""A scalar to *minimise*: value $-\frac1N\sum_n\sum_t\gamma^t r_{nt}$, gradient $-\frac1N\sum_n \hat g_n$.

    ``log_probs`` (N, T): $\log\pi_\theta(a_t\mid s_t)$ with autograd; the weights $\Psi_t$
    (:func:`policy_weights`) are treated as constants.
    """
    if not isinstance(log_probs, torch.Tensor) or log_probs.shape != rewards.shape:
        raise ValueError(f"log_probs must be a tensor of shape {tuple(rewards.shape)}")
    psi = policy_weights(rewards, mask, method=method, values=values, gamma=gamma, lam=lam).detach()
    discount = check_gamma(gamma) ** torch.arange(rewards.shape[1], dtype=rewards.dtype, device=rewards.device)
    score_term = (log_probs * mask * psi).sum(1).mean()
    return -((rewards * mask) @ discount).mean() - (score_term - score_term.detach())


def fit_linear_value(features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *,
                     ridge: float = 1e-3) -> torch.Tensor:
    r"""Ridge regression of the targets (e.g. returns $G_t$) on features over the live steps.

    ``features`` (..., N, T, F), ``targets`` and ``mask`` (..., N, T); leading dims are independent
    problems (one per run). Returns weights (..., F).
    """
    if features.dim() < 3 or features.shape[:-1] != targets.shape or targets.shape != mask.shape:
        raise ValueError("features must be (..., N, T, F) and targets, mask (..., N, T)")
    ridge = check_positive(ridge, "ridge")
    w = mask.flatten(-2).unsqueeze(-1)
    x = features.flatten(-3, -2) * w
    gram = x.transpose(-1, -2) @ x + ridge * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.transpose(-1, -2) @ (targets.flatten(-2).unsqueeze(-1) * w)).squeeze(-1)


class LinearPolicy(torch.nn.Module):
    r"""Softmax policy with logits $W^\top s + b$, for ``num_runs`` independent runs at once.

    States (R * N, obs_dim) are split into R consecutive groups of N, group r uses weights r:
    training R seeds costs one batched rollout instead of R.
    """

    def __init__(self, obs_dim: int, num_actions: int, *, num_runs: int = 1, seed: int = 0,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.num_runs = check_count(num_runs, "num_runs")
        g = torch.Generator().manual_seed(seed)
        shape = (self.num_runs, check_count(obs_dim, "obs_dim") + 1, check_count(num_actions, "num_actions"))
        self.weight = torch.nn.Parameter(init_scale * torch.randn(shape, generator=g))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        runs = states.reshape(self.num_runs, -1, states.shape[-1]).to(self.weight.dtype)
        logits = runs @ self.weight[:, :-1] + self.weight[:, -1:]
        return logits.reshape(states.shape[0], -1)


def train_policy(env, policy: torch.nn.Module, *, method: str, num_steps: int, num_episodes: int,
                 lr: float = 0.02, gamma: float = 1.0, lam: float = 0.95, seed: int = 0,
                 progress: bool = False) -> Dict[str, torch.Tensor]:
    r"""Adam on ``policy`` (states -> logits) with the chosen estimator; returns ``{"returns": (num_steps, R)}``.

    ``num_episodes`` per run and step; ``R = policy.num_runs`` (1 if absent) independent runs share
    each batched rollout (each run's loss is its own mean, so Adam trains them independently).
    The value baseline of ``"baseline"`` and ``"gae"`` is linear in ``env.value_features``, fitted
    by ridge regression on the run's *previous* batch: independent of the current episodes, so
    ``"baseline"`` stays unbiased. ``returns[k, r]``: mean undiscounted return of run r's batch k.
    """
    check_choice(method, "method", PG_METHODS)
    num_steps, num_episodes = check_count(num_steps, "num_steps"), check_count(num_episodes, "num_episodes")
    if not isinstance(policy, torch.nn.Module):
        raise TypeError(f"policy must be a torch.nn.Module, got {type(policy).__name__}")
    runs = getattr(policy, "num_runs", 1)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=check_positive(lr, "lr"))
    weights, history = None, []
    from tqdm import tqdm  # text bar, imported on first use (import gradlab loads no tqdm)
    for _ in tqdm(range(num_steps), desc=f"policy gradient ({method})", disable=not progress, mininterval=5):
        batch = rollout(env, policy, runs * num_episodes, generator=generator)
        feats = env.value_features(batch.states, torch.arange(env.horizon)).to(batch.rewards.dtype)
        feats = feats.reshape(runs, num_episodes, *feats.shape[1:])
        values = None
        if method in ("baseline", "gae"):
            values = (feats @ weights[:, None, :, None]).squeeze(-1) if weights is not None else \
                torch.zeros(feats.shape[:-1], dtype=feats.dtype)
            values = values.reshape(batch.rewards.shape)
        flat = batch.states.reshape(-1, *batch.states.shape[2:])
        logits = policy(flat)  # episode-major: run r's steps are one contiguous block, as in the rollout
        log_probs = D.Categorical(logits=logits).log_prob(batch.actions.reshape(-1)).reshape(batch.mask.shape)
        loss = runs * policy_loss(log_probs, batch.rewards, batch.mask, method=method, values=values, gamma=gamma,
                                  lam=lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if method in ("baseline", "gae"):
            targets = discounted_returns(batch.rewards, batch.mask, gamma).reshape(runs, num_episodes, -1)
            weights = fit_linear_value(feats, targets, batch.mask.reshape(runs, num_episodes, -1))
        history.append(batch.returns.reshape(runs, num_episodes).mean(1))
    return {"returns": torch.stack(history)}
