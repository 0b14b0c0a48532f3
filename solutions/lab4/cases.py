"""Lab 4's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook.
"""

SUBMISSIONS = {
    # Part 2 wrong (the right samples, but detached: no straight-through gradient), Part 3's exact gradient left
    # undone: 14 - 2 - 1. The task built on st_bernoulli (st_grad_samples) is tested with a reference and keeps
    # its points. RELAX is written with the other Bernoulli convention (b = 1[u < p], z = theta + log(1 - u) -
    # log(u), the matching conditional sample): graded by unbiasedness and variance, it passes.
    "partial": {
        "kinds": ["partial", "alternative"],
        "unanswered": ["exact_bernoulli_grad"],
        "answers": {
            "st_bernoulli": '''
def st_bernoulli(probs, generator):
    u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
    return (u < probs).to(probs.dtype)
''',
            "relax": '''
def relax_grad_samples(f, theta, surrogate, *, num_samples, generator):
    copies = theta.detach().expand(num_samples, *theta.shape).clone().requires_grad_(True)
    p = torch.sigmoid(copies)
    tiny = torch.finfo(theta.dtype).tiny
    u = torch.rand(copies.shape, generator=generator, dtype=theta.dtype, device=theta.device).clamp(min=tiny)
    v = torch.rand(copies.shape, generator=generator, dtype=theta.dtype, device=theta.device).clamp(min=tiny)
    b = (u < p.detach()).to(theta.dtype)
    z = copies + torch.log1p(-u) - torch.log(u)
    u_given_b = torch.where(b.bool(), v * p, p + v * (1 - p))
    z_tilde = copies + torch.log1p(-u_given_b) - torch.log(u_given_b)
    c_tilde = surrogate(z_tilde)
    (grad_c,) = torch.autograd.grad((surrogate(z) - c_tilde).sum(), copies, create_graph=True)
    return (f(b) - c_tilde)[:, None] * (b - p.detach()) + grad_c
''',
        },
        "score": 14,
        "failed": ["test-exact_bernoulli_grad", "test-st_bernoulli"],
    },
    # Correct, written differently: a Gumbel-softmax normalised by hand (max subtracted, exp, sum), with the noise
    # -log(-log(1 - u)), that warns; straight-through (b = 1 where u > 1 - p) as a torch.autograd.Function of its own; the straight-through estimate as
    # df/db times p(1 - p) by hand; REINFORCE's score taken by autograd through Bernoulli.log_prob; the
    # variance adaptation with a tqdm bar on stderr, another surrogate wrapper and loss arrangement; the ratio at
    # equal cost from the budget spelled out and centred sums of squares; REBAR tuned by Adam on (eta, log tau)
    # instead of a grid (it ends near eta = 1.6, tau = 0.6: a ratio of about 0.82 on the stated problem).
    # Delegation: exact_bernoulli_grad and relax_grad_samples call gradlab (visible tests pass, hidden fail).
    "different": {
        "kinds": ["alternative", "noisy", "delegation"],
        "answers": {
            "gumbel_softmax": '''
import warnings


def gumbel_softmax_sample(logits, tau, generator):
    if tau <= 0:
        raise ValueError(f"tau: expected a positive temperature, got {tau}")
    warnings.warn("gumbel_softmax_sample: a warning from correct code", UserWarning)
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    # The other convention for the Gumbel noise: -log(-log(1 - u)), finite because 1 - u > 0.
    scores = (logits - torch.log(-torch.log1p(-u))) / tau
    scores = scores - scores.max(dim=-1, keepdim=True).values
    weights = scores.exp()
    return weights / weights.sum(dim=-1, keepdim=True)
''',
            "st_bernoulli": '''
class IdentityBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probs, u):
        return (u > 1 - probs).to(probs.dtype)  # the other convention: b = 1 where u > 1 - p

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def st_bernoulli(probs, generator):
    u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
    return IdentityBackward.apply(probs, u)
''',
            "exact_bernoulli_grad": '''
def exact_bernoulli_grad(f, theta):
    return gradlab.expectation.exact_expectation_grad(f, bernoulli, theta)
''',
            "st_grad_samples": '''
def st_grad_samples(f, theta, *, num_samples, generator):
    p = torch.sigmoid(theta.detach()).expand(num_samples, *theta.shape).clone().requires_grad_(True)
    b = st_bernoulli(p, generator)
    (df_db,) = torch.autograd.grad(f(b).sum(), p)  # the identity backward: df/dp = df/db
    return df_db * p.detach() * (1 - p.detach())
''',
            "reinforce": '''
def reinforce_grad_samples(f, theta, *, num_samples, generator):
    p = torch.sigmoid(theta.detach())
    b = torch.bernoulli(p.expand(num_samples, *p.shape), generator=generator)
    copies = theta.detach().expand(num_samples, *theta.shape).clone().requires_grad_(True)
    log_prob = torch.distributions.Bernoulli(logits=copies).log_prob(b).sum()
    (score,) = torch.autograd.grad(log_prob, copies)
    return f(b).unsqueeze(-1) * score
''',
            "relax": '''
def relax_grad_samples(f, theta, surrogate, *, num_samples, generator):
    estimator = gradlab.discrete.RELAX(surrogate, rebar_term=False)
    return estimator.estimate(f, bernoulli, theta, num_samples=num_samples, generator=generator, create_graph=True)
''',
            "adapt_surrogate": '''
import sys

from tqdm import tqdm


def adapt_surrogate(f, theta, net, *, num_steps, num_samples, lr, generator):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def surrogate(z):
        return net(z)[..., 0]

    losses = []
    for _ in tqdm(range(num_steps), file=sys.stderr, desc="adapting the surrogate"):
        optimizer.zero_grad(set_to_none=True)
        g = relax_grad_samples(f, theta, surrogate, num_samples=num_samples, generator=generator)
        loss = (g * g).sum(dim=1).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses
''',
            "equal_cost_ratio": '''
def equal_cost_variance_ratio(f, theta, eta, tau, *, num_evaluations, generator):
    def total_variance(g):
        return float(((g - g.mean(0)) ** 2).sum() / (g.shape[0] - 1))

    per_rebar_sample, per_reinforce_sample = 3, 1  # f at b, sigma(z / tau), sigma(z~ / tau); f at b
    n_rebar = num_evaluations // per_rebar_sample
    n_reinforce = num_evaluations // per_reinforce_sample
    rebar = relax_grad_samples(f, theta, lambda z: eta * f(torch.sigmoid(z / tau)), num_samples=n_rebar,
                               generator=generator)
    reinforce = reinforce_grad_samples(f, theta, num_samples=n_reinforce, generator=generator)
    return (total_variance(rebar.detach()) / n_rebar) / (total_variance(reinforce) / n_reinforce)
''',
            "tune_rebar": '''
def tune_rebar(f, theta, *, generator):
    eta = torch.tensor(1.0, dtype=theta.dtype, device=theta.device, requires_grad=True)
    log_tau = torch.zeros((), dtype=theta.dtype, device=theta.device, requires_grad=True)
    optimizer = torch.optim.Adam([eta, log_tau], lr=0.08)
    for _ in range(100):
        g = relax_grad_samples(f, theta, lambda z: eta * f(torch.sigmoid(z / log_tau.exp())), num_samples=64,
                               generator=generator)
        loss = g.pow(2).sum(-1).mean()  # E|g|^2 = Var + |grad|^2, the gradient fixed: the variance
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return eta.item(), log_tau.exp().item()
''',
        },
        "score": 13,
        "failed": ["test-exact_bernoulli_grad", "test-relax"],
    },
    # Part 6 done the tempting wrong ways: REBAR compared with REINFORCE at an equal number of samples (REBAR then
    # looks three times better than it is), and tuned over tau alone with eta left at 1, which loses to REINFORCE at
    # equal cost on the stated problem whatever tau (its best, tau near 0.35, is about 1.03). Everything else is the
    # solution: 17 - 1 - 2.
    "untuned": {
        "kinds": ["partial"],
        "answers": {
            "equal_cost_ratio": '''
def equal_cost_variance_ratio(f, theta, eta, tau, *, num_evaluations, generator):
    reinforce = reinforce_grad_samples(f, theta, num_samples=num_evaluations, generator=generator)
    rebar = relax_grad_samples(f, theta, lambda z: eta * f(torch.sigmoid(z / tau)), num_samples=num_evaluations,
                               generator=generator).detach()
    return (rebar.var(0).sum() / reinforce.var(0).sum()).item()
''',
            "tune_rebar": '''
def tune_rebar(f, theta, *, generator):
    eta = 1.0  # the relaxed objective itself, unscaled
    taus = [0.05 * k for k in range(2, 41)]
    variances = []
    for tau in taus:
        g = relax_grad_samples(f, theta, lambda z: eta * f(torch.sigmoid(z / tau)), num_samples=4000,
                               generator=generator)
        variances.append(g.detach().var(0).sum().item())
    return eta, taus[variances.index(min(variances))]
''',
        },
        "score": 14,
        "failed": ["test-equal_cost_ratio", "test-tune_rebar"],
    },
}
