"""Lab 3's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook.
"""

SUBMISSIONS = {
    # Part 2 left undone, Part 4's surrogate wrong (the baseline is the mean of *all* K rewards, which scales
    # every estimate by (K-1)/K): train_bandit still earns its points, since it is tested with a reference
    # reinforce_loss. 11 - 3 - 3.
    "partial": {
        "kinds": ["partial"],
        "unanswered": ["pathwise_grad"],
        "answers": {
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
        "failed": ["test-pathwise_grad", "test-reinforce_loss"],
    },
    # Correct, written differently: the scores of Part 1 taken by autograd from torch.distributions' log_prob (one copy of the
    # parameters per sample)
    # and the leave-one-out baseline written as N/(N-1) (f - mean f), with a warning; a reinforce_loss that
    # loops over the images, sums and divides by B K; a train_bandit with a tqdm bar on stderr, a
    # warning, and zero_grad before the forward pass. Delegation: pathwise_grad calls gradlab.expectation_grad.
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
        "score": 8,
        "failed": ["test-pathwise_grad"],
    },
}
