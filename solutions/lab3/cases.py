"""Lab 3's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook.
"""

SUBMISSIONS = {
    # Part 2 left undone, Part 4's surrogate wrong (the baseline is the mean of *all* K rewards, which scales
    # every estimate by (K-1)/K): train_bandit still earns its points, since it is tested with a reference
    # reinforce_loss. Part 5 draws x+ from a fresh Poisson draw plus one (the right law p+, not the coupling the
    # task fixes: unbiased, about 16 times the variance); Part 6's "leave-one-out" fit scales the same-batch
    # estimate by N/(N-1), as for RLOO (still biased). 17 - 3 - 3 - 3 - 3.
    "partial": {
        "kinds": ["partial"],
        "unanswered": ["pathwise_grad"],
        "answers": {
            "poisson_mvd_grad": '''
def poisson_mvd_grad(f, rate, *, num_samples, generator):
    # x- is the shared sample; x+ takes its coordinate j from a fresh Poisson draw plus one (p+ right, coupling not).
    lam = rate.detach().expand(num_samples, rate.numel()).contiguous()
    x = torch.poisson(lam, generator=generator)
    fresh = torch.poisson(lam, generator=generator)
    base = f(x)
    columns = []
    for j in range(rate.numel()):
        plus = x.clone()
        plus[:, j] = fresh[:, j] + 1
        columns.append(f(plus) - base)
    return torch.stack(columns, dim=1)
''',
            "optimal_baseline": '''
def optimal_baseline_grad(f, mu, sigma, *, num_samples, generator, leave_one_out):
    if leave_one_out and num_samples < 2:
        raise ValueError("num_samples must be >= 2")
    eps = torch.randn((num_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    costs = f(mu + sigma * eps).detach().reshape(num_samples, 1, *([1] * mu.dim()))
    scores = torch.stack([eps / sigma, (eps**2 - 1) / sigma], 1)
    b = (costs * scores**2).sum(0) / (scores**2).sum(0)
    estimates = (costs - b) * scores
    if leave_one_out:  # as for RLOO: f_n - b_n = N/(N-1) (f_n - mean f)
        estimates = estimates * num_samples / (num_samples - 1)
    return estimates


def same_batch_bias(f, mu, sigma, *, num_samples, num_batches, generator):
    gaps = []
    for _ in range(num_batches):
        state = generator.get_state()
        same = optimal_baseline_grad(f, mu, sigma, num_samples=num_samples, generator=generator, leave_one_out=False)
        generator.set_state(state)
        loo = optimal_baseline_grad(f, mu, sigma, num_samples=num_samples, generator=generator, leave_one_out=True)
        gaps.append(same.mean(0) - loo.mean(0))
    gaps = torch.stack(gaps)
    return gaps.mean(0), gaps.std(0) / num_batches**0.5
''',
            "reinforce_loss": '''
def reinforce_loss(logits, labels, *, num_samples, generator):
    if num_samples < 2:
        raise ValueError("num_samples must be at least 2")
    actions = torch.multinomial(torch.softmax(logits, -1).detach(), num_samples, replacement=True,
                                generator=generator)
    rewards = (actions == labels.unsqueeze(1)).to(logits.dtype)
    advantages = rewards - rewards.mean(1, keepdim=True)
    return -(advantages * torch.log_softmax(logits, -1).gather(1, actions)).mean()
''',
        },
        "score": 5,
        "failed": ["test-pathwise_grad", "test-reinforce_loss", "test-poisson_mvd_grad", "test-optimal_baseline"],
    },
    # Correct, written differently: the scores of Part 1 taken by autograd from torch.distributions' log_prob (one copy of the
    # parameters per sample)
    # and the leave-one-out baseline written as N/(N-1) (f - mean f), with a warning; a reinforce_loss that
    # loops over the images, sums and divides by B K; a train_bandit with a tqdm bar on stderr, a
    # warning, and zero_grad before the forward pass; Poisson counts (Part 5) and Gaussian samples (Part 6)
    # drawn by inverting their CDFs at uniforms (other random-number conventions), Part 6's fits written as a
    # 0/1 matrix product and its bias measured on the same batch twice (the generator's state saved and restored).
    # Delegation: pathwise_grad calls gradlab.expectation_grad. 17 - 3.
    "different": {
        "kinds": ["alternative", "noisy", "delegation"],
        "answers": {
            "score_grad_rloo": '''
import warnings


def score_grad_rloo(f, mu, sigma, *, num_samples, generator):
    if num_samples < 2:
        raise ValueError(f"num_samples={num_samples}: a leave-one-out baseline needs two samples")
    warnings.warn("score_grad_rloo: a warning from correct code", UserWarning)
    eps = torch.randn((num_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    x = (mu + sigma * eps).detach()
    costs = f(x).detach()
    weights = (costs - costs.mean()) * num_samples / (num_samples - 1)
    # One copy of (mu, sigma) per sample: the gradient of the summed log-densities with respect to copy n
    # is sample n's score.
    copies = torch.stack([mu.detach(), sigma.detach()]).expand(num_samples, 2, *mu.shape).clone().requires_grad_(True)
    with torch.enable_grad():
        log_p = D.Normal(copies[:, 0], copies[:, 1]).log_prob(x)
        (scores,) = torch.autograd.grad(log_p.sum(), copies)
    return weights.reshape(num_samples, *([1] * (scores.dim() - 1))) * scores
''',
            "pathwise_grad": '''
def pathwise_grad(f, mu, sigma, *, num_samples, generator):
    theta = torch.stack([mu.detach(), sigma.detach()])
    make_dist = lambda t: D.Independent(D.Normal(t[0], t[1]), mu.dim())
    return gradlab.expectation_grad(f, make_dist, theta, estimator="pathwise", num_samples=num_samples,
                                    generator=generator)
''',
            "reinforce_loss": '''
def reinforce_loss(logits, labels, *, num_samples, generator):
    if num_samples < 2:
        raise ValueError("reinforce_loss: num_samples must be >= 2")
    actions = torch.multinomial(torch.softmax(logits, -1).detach(), num_samples, replacement=True,
                                generator=generator)
    total = 0.0
    for i in range(len(labels)):
        rewards = (actions[i] == labels[i]).to(logits.dtype)
        others = (rewards.sum() - rewards) / (num_samples - 1)
        log_probs = torch.log_softmax(logits[i], dim=0)[actions[i]]
        total = total + ((rewards - others) * log_probs).sum()
    return -total / (len(labels) * num_samples)
''',
            "poisson_mvd_grad": '''
def poisson_mvd_grad(f, rate, *, num_samples, generator):
    # Poisson draws by inverting the CDF of uniforms (another random-number convention); x+ = x + e_j, x- = x.
    lam = rate.detach()
    u = torch.rand((num_samples, lam.numel()), generator=generator, dtype=lam.dtype, device=lam.device)
    x = torch.zeros_like(u)
    p = torch.exp(-lam).expand_as(u).clone()
    cdf = p.clone()
    for _ in range(200):
        more = u > cdf
        if not bool(more.any()):
            break
        x = x + more.to(x.dtype)
        p = torch.where(more, p * lam / x.clamp(min=1), p)
        cdf = torch.where(more, cdf + p, cdf)
    columns = []
    for j in range(lam.numel()):
        shifted = x.clone()
        shifted[:, j] += 1
        columns.append(f(shifted) - f(x))
    return torch.stack(columns, dim=1)
''',
            "optimal_baseline": '''
def optimal_baseline_grad(f, mu, sigma, *, num_samples, generator, leave_one_out):
    if leave_one_out and num_samples < 2:
        raise ValueError("leave_one_out needs num_samples >= 2")
    # Samples by the inverse CDF of uniforms (another random-number convention), the noise recovered from them.
    u = torch.rand((num_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    u = u.clamp(min=torch.finfo(mu.dtype).tiny)
    x = mu.detach() + sigma.detach() * math.sqrt(2.0) * torch.erfinv(2 * u - 1)
    eps = (x - mu.detach()) / sigma.detach()
    costs = f(x).detach()
    scores = torch.stack([eps / sigma.detach(), (eps * eps - 1) / sigma.detach()], 1)
    # Which samples fit sample n's baseline: a 0/1 matrix (all of them, or all but n), applied by matmul.
    fitting = torch.ones(num_samples, num_samples, dtype=x.dtype, device=x.device)
    if leave_one_out:
        fitting -= torch.eye(num_samples, dtype=x.dtype, device=x.device)
    s2 = (scores**2).reshape(num_samples, -1)
    b = (fitting @ (costs[:, None] * s2)) / (fitting @ s2)
    return (costs[:, None] - b).reshape(scores.shape) * scores


def same_batch_bias(f, mu, sigma, *, num_samples, num_batches, generator):
    # The same batch twice (the generator's state saved and restored): same fit minus leave-one-out fit.
    gaps = []
    for _ in range(num_batches):
        state = generator.get_state()
        same = optimal_baseline_grad(f, mu, sigma, num_samples=num_samples, generator=generator, leave_one_out=False)
        generator.set_state(state)
        loo = optimal_baseline_grad(f, mu, sigma, num_samples=num_samples, generator=generator, leave_one_out=True)
        gaps.append(same.mean(0) - loo.mean(0))
    gaps = torch.stack(gaps)
    return gaps.mean(0), gaps.std(0) / num_batches**0.5
''',
            "train_bandit": '''
import sys
import warnings

from tqdm import tqdm


def train_bandit(policy, x, y, *, num_steps, batch_size, num_samples, lr, seed):
    warnings.warn("train_bandit: a warning from correct code", RuntimeWarning)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    curve = []
    for step in tqdm(range(num_steps), file=sys.stderr, desc="bandit"):
        optimizer.zero_grad()
        batch = torch.randint(0, len(x), (batch_size,), generator=generator, device=x.device)
        images, answers = x[batch], y[batch]
        logits = policy(images)
        curve.append(float((logits.argmax(dim=1) == answers).float().mean()))
        reinforce_loss(logits, answers, num_samples=num_samples, generator=generator).backward()
        optimizer.step()
    return curve
''',
        },
        "score": 14,
        "failed": ["test-pathwise_grad"],
    },
}
