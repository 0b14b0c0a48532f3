r"""Small episodic environments written in torch, vectorised over episodes.

Both share one functional interface (``state`` is a batch over episodes):

* ``env.reset(num_episodes, generator=None) -> state``
* ``env.step(state, action, generator=None) -> (next_state, reward (N,), done (N,) bool)``
* ``env.num_actions``, ``env.horizon`` (episodes are cut after ``horizon`` steps; the horizon is
  part of the task, so the objective is $J = \mathbb E\big[\sum_{t<T}\gamma^t r_t\big]$).
* ``env.value_features(states (N, T, ...), times (T,)) -> (N, T, F)``: features of a linear value baseline.

:class:`ChainMDP` is tabular and small enough that :meth:`ChainMDP.exact_objective` solves the
finite-horizon value function by backward induction (differentiable in the policy's logits: the exact
policy gradient). :class:`CartPole` is the classic cart-pole balancing task (Barto, Sutton &
Anderson 1983) with the usual constants and Euler steps of 0.02 s.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .checks import check_count, check_positive

__all__ = ["ChainMDP", "CartPole"]


class ChainMDP:
    r"""A chain of ``num_states`` states; action 1 moves right, 0 left, reversed with probability ``slip``.

    Episodes start in state 0 and end on entering the last state (the goal, reward 1) or after
    ``horizon`` steps. Each (state, action) also pays a fixed small reward ``step_rewards[s, a]``
    (seeded by ``seed``), so that every logit has its own gradient.
    """

    num_actions = 2

    def __init__(self, num_states: int = 4, horizon: int = 6, slip: float = 0.2, *, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        self.num_states = check_count(num_states, "num_states")
        if self.num_states < 2:
            raise ValueError(f"num_states must be >= 2, got {num_states}")
        self.horizon = check_count(horizon, "horizon")
        if not isinstance(slip, (int, float)) or not 0 <= slip < 1:
            raise ValueError(f"slip must be a number in [0, 1), got {slip!r}")
        self.slip, self.dtype = float(slip), dtype
        g = torch.Generator().manual_seed(seed)
        self.step_rewards = 0.2 * torch.rand(self.num_states, 2, generator=g, dtype=dtype) - 0.1
        S = self.num_states
        moves = torch.zeros(S, 2, S, dtype=dtype)  # P[s, a, s']
        for s in range(S):  # S is tiny: building the table with a loop is clearest
            left, right = max(s - 1, 0), min(s + 1, S - 1)
            moves[s, 1, right] += 1 - self.slip
            moves[s, 1, left] += self.slip
            moves[s, 0, left] += 1 - self.slip
            moves[s, 0, right] += self.slip
        self.transitions = moves

    def reset(self, num_episodes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.zeros(check_count(num_episodes, "num_episodes"), dtype=torch.long)

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = self.transitions[state, action]  # (N, S)
        next_state = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        goal = next_state == self.num_states - 1
        reward = self.step_rewards[state, action] + goal.to(self.dtype)
        return next_state, reward, goal

    def value_features(self, states: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """One-hot of (state, time): a tabular value function."""
        index = states * self.horizon + times.to(states.device)
        return torch.nn.functional.one_hot(index, self.num_states * self.horizon).to(self.dtype)

    def exact_values(self, logits: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
        r"""$V(s, t)$ of the policy $\pi = \operatorname{softmax}(\text{logits})$ (logits (S, 2)), shape (S, T).

        Backward induction: $V(\cdot, T) = 0$, $V(s, t) = \sum_a \pi(a|s)\sum_{s'} P(s'|s,a)\,
        [r(s,a,s') + \gamma\,V(s', t+1)\,\mathbb 1(s' \ne \text{goal})]$. Flattened, ``values.reshape(-1)``
        is the weight vector of :meth:`value_features` (index $sT + t$).
        """
        if not isinstance(logits, torch.Tensor) or logits.shape != (self.num_states, 2):
            raise ValueError(f"logits must be a tensor of shape ({self.num_states}, 2)")
        pi = torch.softmax(logits, -1)
        goal = torch.zeros(self.num_states, dtype=self.dtype)
        goal[-1] = 1.0
        value, columns = torch.zeros(self.num_states, dtype=logits.dtype), []
        for _ in range(self.horizon):  # backward induction: one step per time
            q = self.step_rewards + self.transitions @ (goal + gamma * (1 - goal) * value)
            value = (pi * q).sum(-1)
            columns.append(value)
        return torch.stack(columns[::-1], 1)

    def exact_objective(self, logits: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
        r"""$J = \mathbb E[\sum_t \gamma^t r_t] = V(s_0 = 0, t = 0)$, differentiable in ``logits``."""
        return self.exact_values(logits, gamma)[0, 0]


class CartPole:
    """Cart-pole balancing: reward 1 per step until the pole leans past 12 degrees or the cart leaves +-2.4."""

    num_actions = 2
    gravity, mass_cart, mass_pole, half_length, force, dt = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    x_limit, angle_limit = 2.4, 12 * 2 * math.pi / 360

    def __init__(self, horizon: int = 200, *, dtype: torch.dtype = torch.float32) -> None:
        self.horizon = check_count(horizon, "horizon")
        self.dtype = dtype

    def reset(self, num_episodes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """States (x, x_dot, angle, angle_dot) uniform in [-0.05, 0.05]."""
        shape = (check_count(num_episodes, "num_episodes"), 4)
        return 0.1 * torch.rand(shape, generator=generator, dtype=self.dtype) - 0.05

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, x_dot, angle, angle_dot = state.unbind(-1)
        force = self.force * (2 * action.to(state.dtype) - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        total_mass = self.mass_cart + self.mass_pole
        pole_moment = self.mass_pole * self.half_length
        temp = (force + pole_moment * angle_dot**2 * sin) / total_mass
        angle_acc = (self.gravity * sin - cos * temp) / (
            self.half_length * (4.0 / 3.0 - self.mass_pole * cos**2 / total_mass))
        x_acc = temp - pole_moment * angle_acc * cos / total_mass
        next_state = torch.stack([x + self.dt * x_dot, x_dot + self.dt * x_acc,
                                  angle + self.dt * angle_dot, angle_dot + self.dt * angle_acc], -1)
        done = (next_state[:, 0].abs() > self.x_limit) | (next_state[:, 2].abs() > self.angle_limit)
        return next_state, torch.ones_like(x), done

    def value_features(self, states: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """(s, s^2, remaining time fraction and its square, 1): a linear value baseline."""
        remaining = (1 - times.to(states.dtype) / self.horizon).expand(states.shape[:2]).unsqueeze(-1)
        ones = torch.ones_like(remaining)
        return torch.cat([states, states**2, remaining, remaining**2, ones], -1)


def check_gamma(gamma: object) -> float:
    """A discount in (0, 1]."""
    value = check_positive(gamma, "gamma")
    if value > 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    return value
