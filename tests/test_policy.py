"""gradlab.policy on a tabular chain whose policy gradient is solved exactly, and the CartPole task."""
import math

import pytest
import torch
from torch import distributions as D

from gradlab.envs import CartPole, ChainMDP
from gradlab.labcheck_stats import check_frequencies
from gradlab.policy import (
    PG_METHODS,
    LinearPolicy,
    discounted_returns,
    fit_linear_value,
    gae_advantages,
    policy_loss,
    policy_weights,
    rollout,
    train_policy,
)

F64 = torch.float64
LOGITS = torch.tensor([[0.2, 0.5], [-0.3, 0.4], [0.6, -0.2], [0.0, 0.0]], dtype=F64)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exact_gradient(env, gamma):
    logits = LOGITS.clone().requires_grad_(True)
    return torch.autograd.grad(env.exact_objective(logits, gamma), logits)[0]


def some_values(env, episodes):
    """A fixed (not fitted) function of (state, time): any such baseline keeps the estimate unbiased."""
    table = torch.linspace(-0.5, 1.0, env.num_states * env.horizon, dtype=F64)
    return env.value_features(episodes.states, torch.arange(env.horizon)) @ table


def per_episode_grads(episodes, psi):
    r"""Tabular softmax: grad of log pi(a|s) w.r.t. logits[s'] is 1[s = s'] (e_a - pi(s)); sum_t psi_t times it."""
    pi = torch.softmax(LOGITS, -1)
    onehot_s = torch.nn.functional.one_hot(episodes.states, LOGITS.shape[0]).to(F64)  # (N, T, S)
    score = torch.nn.functional.one_hot(episodes.actions, 2).to(F64) - pi[episodes.states]  # (N, T, A)
    return torch.einsum("nt,nts,nta->nsa", psi, onehot_s, score)


def estimates(env, method, num_episodes, seed, gamma, lam=1.0, exact_values=False):
    episodes = rollout(env, lambda s: LOGITS[s], num_episodes, generator=gen(seed))
    if exact_values:
        table = env.exact_values(LOGITS, gamma).reshape(-1)
        values = env.value_features(episodes.states, torch.arange(env.horizon)) @ table
    else:
        values = some_values(env, episodes)
    psi = policy_weights(episodes.rewards, episodes.mask, method=method, values=values, gamma=gamma, lam=lam)
    return per_episode_grads(episodes, psi), episodes, values


def test_exact_objective_matches_enumeration_by_simulation():
    env = ChainMDP(num_states=4, horizon=5, slip=0.25, seed=1)
    episodes = rollout(env, lambda s: LOGITS[s], 200000, generator=gen(0))
    discount = 0.9 ** torch.arange(env.horizon, dtype=F64)
    returns = (episodes.rewards * episodes.mask) @ discount
    exact = env.exact_objective(LOGITS, gamma=0.9)
    assert abs(returns.mean() - exact) < 4 * returns.std() / math.sqrt(len(returns))


@pytest.mark.parametrize("method", PG_METHODS)
@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_every_method_is_unbiased_on_the_chain(method, gamma):
    env = ChainMDP(num_states=4, horizon=5, slip=0.25, seed=1)
    truth = exact_gradient(env, gamma)
    g, _, _ = estimates(env, method, 60000, seed=3, gamma=gamma)
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - truth)[:3].abs() < 4 * se[:3] + 1e-12).all(), ((g.mean(0) - truth) / se)
    assert (truth[:3].abs() > 4 * se[:3]).sum() >= 4  # resolved
    assert truth[3].abs().max() == 0 and g[:, 3].abs().max() == 0  # the goal's action never matters


def test_gae_with_the_exact_value_function_is_unbiased_for_every_lambda():
    env = ChainMDP(num_states=4, horizon=5, slip=0.25, seed=1)
    truth = exact_gradient(env, 0.9)
    g, _, _ = estimates(env, "gae", 60000, seed=4, gamma=0.9, lam=0.3, exact_values=True)
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - truth).abs() < 4 * se + 1e-12).all(), ((g.mean(0) - truth) / se)


def test_gae_below_one_is_biased_with_a_wrong_value_function():
    env = ChainMDP(num_states=4, horizon=5, slip=0.25, seed=1)
    truth = exact_gradient(env, 1.0)
    g, _, _ = estimates(env, "gae", 60000, seed=3, gamma=1.0, lam=0.3)
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - truth).abs() / (se + 1e-12)).max() > 8


def test_policy_loss_gradient_is_minus_the_mean_estimate():
    env = ChainMDP(num_states=4, horizon=5, slip=0.25, seed=1)
    for method in PG_METHODS:
        g, episodes, values = estimates(env, method, 301, seed=5, gamma=0.9, lam=0.7)
        logits = LOGITS.clone().requires_grad_(True)
        log_probs = D.Categorical(logits=logits[episodes.states]).log_prob(episodes.actions)
        loss = policy_loss(log_probs, episodes.rewards, episodes.mask, method=method, values=values, gamma=0.9,
                           lam=0.7)
        (auto,) = torch.autograd.grad(loss, logits)
        assert torch.allclose(auto, -g.mean(0), atol=1e-12), method
        discount = 0.9 ** torch.arange(env.horizon, dtype=F64)
        assert torch.allclose(loss, -((episodes.rewards * episodes.mask) @ discount).mean())


def test_reward_to_go_lowers_the_variance():
    env = ChainMDP(num_states=4, horizon=8, slip=0.2, seed=2)
    groups = {}
    for method in ["total", "reward_to_go", "baseline"]:
        g, _, _ = estimates(env, method, 40000, seed=11, gamma=1.0, exact_values=True)
        groups[method] = g.reshape(20, 2000, -1).var(1).sum(-1)  # trace of the covariance, 20 groups
    # the same episodes feed every method: compare paired, group by group
    saved = groups["total"] - groups["reward_to_go"]
    assert saved.mean() > 4 * saved.std() / math.sqrt(20), (saved.mean(), saved.std())
    saved = groups["reward_to_go"] - groups["baseline"]
    assert saved.mean() > 4 * saved.std() / math.sqrt(20), (saved.mean(), saved.std())


def test_gae_lambda_one_is_reward_to_go_minus_values_and_lambda_zero_is_td():
    g = gen(0)
    rewards = torch.randn(6, 7, generator=g, dtype=F64)
    values = torch.randn(6, 7, generator=g, dtype=F64)
    lengths = torch.tensor([7, 3, 5, 1, 7, 6])
    mask = (torch.arange(7) < lengths[:, None]).to(F64)
    rewards = rewards * mask
    returns = discounted_returns(rewards, mask, 0.9)
    loop = torch.zeros_like(rewards)
    running = torch.zeros(6, dtype=F64)
    for t in reversed(range(7)):
        running = rewards[:, t] + 0.9 * running * mask[:, t]
        loop[:, t] = running * mask[:, t]
    assert torch.allclose(returns, loop)
    assert torch.allclose(gae_advantages(rewards, values, mask, gamma=0.9, lam=1.0), (returns - values) * mask)
    v_next = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(6, 1, dtype=F64)], 1)
    td = (rewards + 0.9 * v_next - values) * mask
    assert torch.allclose(gae_advantages(rewards, values, mask, gamma=0.9, lam=0.0), td)
    assert torch.allclose(policy_weights(rewards, mask, method="gae", values=values, gamma=0.9, lam=1.0),
                          policy_weights(rewards, mask, method="baseline", values=values, gamma=0.9))


def test_fit_linear_value_recovers_a_linear_target_per_run():
    g = gen(1)
    feats = torch.randn(2, 50, 4, 3, generator=g, dtype=F64)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, 4.0]], dtype=F64)
    targets = (feats @ w[:, None, :, None]).squeeze(-1)
    mask = torch.ones_like(targets)
    assert torch.allclose(fit_linear_value(feats, targets, mask, ridge=1e-9), w, atol=1e-6)


def test_cartpole_step_and_termination():
    env = CartPole(horizon=50)
    state = torch.tensor([[0.0, 0.0, 0.05, 0.0], [2.39, 1.0, 0.0, 0.0]])
    next_state, reward, done = env.step(state, torch.tensor([1, 1]))
    # pole at rest: angle_acc = (g sin - cos temp) / (l (4/3 - m cos^2 / M)), temp = F / M
    temp = 10.0 / 1.1
    angle_acc = (9.8 * math.sin(0.05) - math.cos(0.05) * temp) / (0.5 * (4 / 3 - 0.1 * math.cos(0.05) ** 2 / 1.1))
    assert abs(next_state[0, 3] - 0.02 * angle_acc) < 1e-5 and next_state[0, 2] == 0.05
    assert done.tolist() == [False, True] and reward.tolist() == [1.0, 1.0]


def test_linear_policy_runs_are_independent():
    policy = LinearPolicy(4, 2, num_runs=3, seed=0)
    states = torch.randn(12, 4, generator=gen(2))
    logits = policy(states)
    for r in range(3):
        block = states[4 * r: 4 * r + 4]
        assert torch.allclose(logits[4 * r: 4 * r + 4], block @ policy.weight[r, :-1] + policy.weight[r, -1])


def test_training_on_cartpole_improves_the_return_and_is_reproducible():
    env = CartPole(horizon=60)
    policy = LinearPolicy(4, 2, num_runs=2, seed=0)
    out = train_policy(env, policy, method="baseline", num_steps=25, num_episodes=16, lr=0.05, seed=0)
    returns = out["returns"]
    assert returns.shape == (25, 2)
    assert (returns[-5:].mean(0) > returns[:5].mean(0) + 5).all()
    again = train_policy(env, LinearPolicy(4, 2, num_runs=2, seed=0), method="baseline", num_steps=25,
                         num_episodes=16, lr=0.05, seed=0)["returns"]
    assert torch.equal(returns, again)


def test_bad_inputs():
    r, m = torch.zeros(3, 4, dtype=F64), torch.ones(3, 4, dtype=F64)
    with pytest.raises(ValueError, match="method"):
        policy_weights(r, m, method="nope")
    with pytest.raises(ValueError, match="values"):
        policy_weights(r, m, method="baseline")
    with pytest.raises(ValueError, match="mask"):
        discounted_returns(r, m[:2])
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(r, m, 1.5)
    with pytest.raises(ValueError, match="lam"):
        gae_advantages(r, r, m, lam=2.0)
    with pytest.raises(ValueError, match="log_probs"):
        policy_loss(r[:2], r, m, method="total")
    with pytest.raises(TypeError, match="policy"):
        train_policy(CartPole(), lambda s: s, method="total", num_steps=1, num_episodes=1)
    with pytest.raises(ValueError, match="slip"):
        ChainMDP(slip=1.0)
    with pytest.raises(ValueError, match="logits"):
        ChainMDP().exact_objective(torch.zeros(2, 2))


def test_fit_linear_value_is_the_masked_ridge_solution_per_run():
    r"""Per run r: $w_r = (X_r^\top X_r + \rho I)^{-1} X_r^\top y_r$ over the unmasked steps, $\rho = 0.7$ (large enough
    to matter), two runs of 4 episodes x 3 steps, 2 features; computed here as the least-squares solution of a stacked system."""
    feats = torch.randn(2, 4, 3, 2, generator=gen(4), dtype=F64)
    targets = torch.randn(2, 4, 3, generator=gen(5), dtype=F64)
    mask = (torch.rand(2, 4, 3, generator=gen(6)) > 0.3).to(F64)
    ridge = 0.7
    got = fit_linear_value(feats, targets, mask, ridge=ridge)
    for r in range(2):
        keep = mask[r].reshape(-1) > 0
        x, y = feats[r].reshape(-1, 2)[keep], targets[r].reshape(-1)[keep]
        # ridge as least squares on [X; sqrt(rho) I] w = [y; 0]
        stacked = torch.cat([x, math.sqrt(ridge) * torch.eye(2, dtype=F64)])
        expected = torch.linalg.lstsq(stacked, torch.cat([y, torch.zeros(2, dtype=F64)]).unsqueeze(1)).solution
        torch.testing.assert_close(got[r], expected.squeeze(1))


def test_train_policy_follows_its_seed():
    """Same seed, same returns and weights; another seed, other episodes (CartPole, 2 steps of 5 episodes)."""
    def run(seed):
        policy = LinearPolicy(4, 2, seed=0)
        out = train_policy(CartPole(horizon=8), policy, method="reward_to_go", num_steps=2, num_episodes=5, seed=seed)
        return torch.cat([out["returns"].reshape(-1), policy.weight.detach().reshape(-1).to(F64)])

    first = run(3)
    assert torch.equal(first, run(3))
    assert not torch.equal(first, run(4))


@pytest.mark.parametrize("env", [ChainMDP(num_states=5, horizon=7, slip=0.3, seed=2), CartPole(horizon=30)],
                         ids=["chain", "cartpole"])
def test_rollout_draws_only_from_its_generator(env):
    """The same generator state gives the same episodes (reset, actions and the chain's slips), another
    state other episodes, and the global random state is neither read nor changed."""
    policy = LinearPolicy(1 if isinstance(env, ChainMDP) else 4, 2, seed=3).double()

    def logits(states):
        return policy(states.to(torch.float64).reshape(states.shape[0], -1))

    state = torch.random.get_rng_state()
    a = rollout(env, logits, 40, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(99)
    b = rollout(env, logits, 40, generator=torch.Generator().manual_seed(5))
    torch.random.set_rng_state(state)
    for x, y in zip((a.states, a.actions, a.rewards, a.mask), (b.states, b.actions, b.rewards, b.mask)):
        assert torch.equal(x, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    c = rollout(env, logits, 40, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a.states, c.states)
    if isinstance(env, ChainMDP):  # the slips: the same actions from another transition draw differ
        nxt = [env.step(a.states[:, 0], a.actions[:, 0], generator=torch.Generator().manual_seed(s))[0]
               for s in (7, 7, 8)]
        assert torch.equal(nxt[0], nxt[1]) and not torch.equal(nxt[0], nxt[2])


def chain_step_probs(num_states, slip):
    """(2 S, S): the documented law of the next state for each (state, action), state-major: action 1 moves
    right and 0 left, each reversed with probability ``slip``, clamped at both ends of the chain."""
    probs = torch.zeros(2 * num_states, num_states, dtype=F64)
    for s in range(num_states):
        left, right = max(s - 1, 0), min(s + 1, num_states - 1)
        for a, (ahead, back) in enumerate([(left, right), (right, left)]):
            probs[2 * s + a, ahead] += 1 - slip
            probs[2 * s + a, back] += slip
    return probs


def test_chain_steps_move_as_documented():
    """From every state and action the next state has the documented law (chi-square on 3,000 steps per
    pair); entering the last state ends the episode and pays 1 on top of the step reward. Power: the same
    draws fail against a slip of 0.25 instead of 0.3."""
    num_states, n = 5, 3000
    env = ChainMDP(num_states=num_states, horizon=7, slip=0.3, seed=2)
    states = torch.arange(num_states).repeat_interleave(2).repeat(n)
    actions = torch.tensor([0, 1]).repeat(num_states * n)
    nxt, reward, done = env.step(states, actions, generator=gen(11))
    draws = nxt.reshape(n, 2 * num_states)
    check_frequencies("chain steps", draws, chain_step_probs(num_states, 0.3))
    with pytest.raises(AssertionError):
        check_frequencies("chain steps, slip 0.25", draws, chain_step_probs(num_states, 0.25))
    goal = nxt == num_states - 1
    assert torch.equal(done, goal) and goal.any() and not goal.all()
    torch.testing.assert_close(reward - env.step_rewards[states, actions], goal.to(F64))
