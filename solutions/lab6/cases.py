"""Lab 6's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook, whose written answer
(`causality_answer`, 2 points by hand) is answered: every submission here needs manual grading, and its
expected score counts the 12 autograded points only.
"""

SUBMISSIONS = {
    # Part 3a left undone; reward_to_go delegates to gradlab's discounted_returns and reinforce_loss takes its
    # weights from gradlab's policy_weights (both fail, visibly too); the score estimator forgets -log q (biased
    # by 1 in every log sigma coordinate: it passes the shape checks and fails only the confidence interval).
    # The baseline loss (which warns) and the reparameterisation (which draws a tqdm bar on stderr) are correct:
    # 12 - 2 - 3 - 1 - 2.
    "partial": {
        "kinds": ["partial", "delegation", "noisy"],
        "unanswered": ["fit_value"],
        "answers": {
            "reward_to_go": '''
def reward_to_go(rewards, mask, gamma=1.0):
    return gradlab.discounted_returns(rewards, mask, gamma)
''',
            "reinforce_loss": '''
def reinforce_loss(log_probs, rewards, mask, gamma=1.0):
    weights = gradlab.policy_weights(rewards, mask, method="reward_to_go", gamma=gamma)
    return -(log_probs * weights.detach()).sum(1).mean()
''',
            "baseline_loss": '''
import warnings


def baseline_loss(log_probs, rewards, mask, values, gamma=1.0):
    warnings.warn("baseline_loss: a warning from correct code", UserWarning)
    discount = gamma ** torch.arange(rewards.shape[1], dtype=rewards.dtype)
    weights = (discount * (discounted_returns(rewards, mask, gamma) - values) * mask).detach()
    return -(log_probs * weights).sum(1).mean()
''',
            "score_elbo_grad": '''
def score_elbo_grad(log_joint, mu, log_sigma, num_samples, generator=None):
    sigma = log_sigma.exp()
    eps = torch.randn(num_samples, mu.shape[0], generator=generator, dtype=mu.dtype)
    with torch.no_grad():
        f = log_joint(mu + sigma * eps)
    return torch.stack([eps / sigma, eps**2 - 1], 1) * f[:, None, None]
''',
            "reparam_elbo_grad": '''
import sys

from tqdm import tqdm


def reparam_elbo_grad(log_joint, mu, log_sigma, num_samples, generator=None):
    sigma = log_sigma.detach().exp()
    eps = torch.randn(num_samples, mu.numel(), generator=generator, dtype=mu.dtype)
    z = (mu.detach() + sigma * eps).requires_grad_(True)
    for _ in tqdm(range(3), file=sys.stderr, desc="reparam"):
        pass
    (dz,) = torch.autograd.grad(log_joint(z).sum(), z)
    return torch.stack([dz, dz * sigma * eps + 1], 1)
''',
        },
        "score": 4,
        "failed": ["test-reward_to_go", "test-reinforce_loss", "test-fit_value", "test-score_elbo_grad"],
    },
    # Correct, written differently: reward-to-go as a product with a triangular matrix of discounts;
    # REINFORCE as a sum of -log_prob * weight over live steps divided by N (and a warning); the fit by the
    # normal equations with a tiny ridge; the baseline loss with an explicit .sum() / N; the score estimator
    # with the closed-form entropy (score times log p, plus the entropy's gradient (0, 1)), drawing its noise
    # as a N(mu, sigma) sample (another random-number convention); the reparameterisation through the
    # chain rule written out with a per-sample autograd over mu and log sigma, warning once: 12 of 12.
    "different": {
        "kinds": ["alternative", "noisy"],
        "answers": {
            "reward_to_go": '''
def reward_to_go(rewards, mask, gamma=1.0):
    T = rewards.shape[1]
    t = torch.arange(T, dtype=rewards.dtype)
    lag = t[:, None] - t[None, :]  # l - t
    upper = torch.where(lag >= 0, gamma ** lag.clamp(min=0), torch.zeros_like(lag))
    return (rewards * mask) @ upper
''',
            "reinforce_loss": '''
import warnings


def reinforce_loss(log_probs, rewards, mask, gamma=1.0):
    warnings.warn("reinforce_loss: a warning from correct code", UserWarning)
    N, T = rewards.shape
    G = discounted_returns(rewards, mask, gamma)
    discount = torch.tensor([gamma**t for t in range(T)], dtype=rewards.dtype)
    live = mask > 0
    terms = -log_probs[live] * (discount.expand(N, T)[live] * G[live]).detach()
    return terms.sum() / N
''',
            "fit_value": '''
def fit_value(features, targets, mask):
    x = features * mask[..., None]
    gram = torch.einsum("ntf,ntg->fg", x, x) + 1e-10 * torch.eye(features.shape[-1], dtype=features.dtype)
    return torch.linalg.solve(gram, torch.einsum("ntf,nt->f", x, targets * mask))
''',
            "baseline_loss": '''
def baseline_loss(log_probs, rewards, mask, values, gamma=1.0):
    T = rewards.shape[1]
    discount = gamma ** torch.arange(T, dtype=rewards.dtype)
    with torch.no_grad():
        psi = discount * (discounted_returns(rewards, mask, gamma) - values) * mask
    return -(log_probs * psi).sum() / rewards.shape[0]
''',
            "score_elbo_grad": '''
def score_elbo_grad(log_joint, mu, log_sigma, num_samples, generator=None):
    sigma = log_sigma.exp()
    z = torch.normal(mu.expand(num_samples, -1), sigma.expand(num_samples, -1), generator=generator)
    eps = (z - mu) / sigma
    with torch.no_grad():
        f = log_joint(z)
    grads = torch.stack([eps / sigma * f[:, None], (eps**2 - 1) * f[:, None]], 1)
    grads[:, 1] += 1.0  # the gradient of the entropy sum(log sigma)
    return grads
''',
            "reparam_elbo_grad": '''
import warnings


def reparam_elbo_grad(log_joint, mu, log_sigma, num_samples, generator=None):
    warnings.warn("reparam_elbo_grad: a warning from correct code", UserWarning)
    eps = torch.randn(num_samples, len(mu), generator=generator, dtype=mu.dtype)
    m = mu.detach().repeat(num_samples, 1).requires_grad_()
    s = log_sigma.detach().repeat(num_samples, 1).requires_grad_()
    z = m + torch.exp(s) * eps
    log_q = torch.distributions.Normal(m, torch.exp(s)).log_prob(z).sum(1)
    elbo = log_joint(z) - log_q
    gm, gs = torch.autograd.grad(elbo.sum(), (m, s))
    return torch.stack((gm, gs), dim=1)
''',
        },
        "score": 12,
        "failed": [],
    },
}
