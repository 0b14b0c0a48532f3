"""Lab 5's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook, whose written answer
(`overfitting_answer`, 2 points by hand) is answered: every submission here needs manual grading, and its
expected score counts the 15 autograded points only.
"""

SUBMISSIONS = {
    # Part 2 and estimate_mi left undone: 15 - 2 - 2. Written differently: infonce_bound with an explicit
    # per-row max shift; infonce_mi draws its batches with torch.multinomial (without replacement), evaluates
    # with torch.split and .detach() and builds the values in a list; the bound with an explicit max shift
    # instead of logsumexp (as stable, same value and gradient); ground_truth as a log of a reciprocal; train_dv
    # indexes its batches in a loop, warns, draws a tqdm bar on stderr and calls the unanswered train_step: it
    # still earns its 3 points, since the hidden tests grade it with a reference step in place of the student's.
    "partial": {
        "kinds": ["partial", "alternative", "noisy"],
        "unanswered": ["train_step", "estimate_mi"],
        "answers": {
            "dv_bound": '''
def dv_bound(Z, Z_ref, net):
    t = net(Z).squeeze(1)
    t_ref = net(Z_ref).squeeze(1)
    top = t_ref.max().detach()
    return t.mean() - top - torch.log(torch.exp(t_ref - top).mean())
''',
            "train_dv": '''
import sys
import warnings

from tqdm import tqdm


def train_dv(Z, Z_ref, net, n_iters_per_epoch, epochs, lr=1e-3, generator=None):
    warnings.warn("train_dv: a warning from correct code", UserWarning)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    estimates = []
    for epoch in tqdm(range(epochs), file=sys.stderr, desc="DV epochs"):
        batches = torch.tensor_split(torch.randperm(Z.shape[0], generator=generator), n_iters_per_epoch)
        batches_ref = torch.tensor_split(torch.randperm(Z_ref.shape[0], generator=generator), n_iters_per_epoch)
        for k in range(n_iters_per_epoch):
            train_step(net, optimizer, Z[batches[k].to(Z.device)], Z_ref[batches_ref[k].to(Z.device)])
        with torch.no_grad():
            estimates.append(float(DV(Z, Z_ref, net)))
    return estimates
''',
            "ground_truth": '''
def ground_truth(rho, dim=1):
    return dim * 0.5 * math.log(1 / (1 - rho * rho))
''',
            "infonce_bound": '''
def infonce_bound(scores):
    top = scores.max(dim=1, keepdim=True).values.detach()
    log_row_means = top.squeeze(1) + torch.log(torch.exp(scores - top).mean(dim=1))
    return torch.mean(torch.diagonal(scores) - log_row_means)
''',
            "infonce_mi": '''
def infonce_mi(Z_train, Z_test, x_dim, K, num_steps, generator, lr=0.05):
    critic = GaussianCritic(x_dim).to(Z_train.device)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    weights = torch.ones(Z_train.shape[0])
    for step in range(num_steps):
        rows = torch.multinomial(weights, K, replacement=False, generator=generator).to(Z_train.device)
        x, y = Z_train[rows, :x_dim], Z_train[rows, x_dim:]
        opt.zero_grad()
        loss = -infonce_bound(critic(x, y))
        loss.backward()
        opt.step()
    values = []
    for batch in torch.split(Z_test, K):
        if batch.shape[0] == K:
            values.append(infonce_bound(critic(batch[:, :x_dim], batch[:, x_dim:])).detach())
    return torch.stack(values)
''',
        },
        "score": 11,
        "failed": ["test-train_step", "test-estimate_mi"],
    },
    # Correct, written differently: train_step negates a loss (zero_grad without set_to_none, float() instead of
    # .item()) and warns; estimate_mi shows DVTrainer's progress bar (stderr), trains one epoch per call and detaches the held-out
    # bound instead of using torch.no_grad().
    # Delegation: dv_bound returns gradlab's DV; train_dv hands the work to DVTrainer (it passes the visible
    # tests: every sample once per epoch, a new order each epoch, it learns); ground_truth returns the value
    # correlated_gaussians computes; infonce_bound returns gradlab's infonce of the transposed matrix. The
    # correct infonce_mi (it trains on one random permutation's first K rows per step, evaluates with a
    # reshape) calls that delegating infonce_bound and still earns its 3 points: its test uses a reference
    # bound. 15 - 2 - 3 - 1 - 2.
    "different": {
        "kinds": ["alternative", "noisy", "delegation"],
        "answers": {
            "dv_bound": '''
def dv_bound(Z, Z_ref, net):
    return DV(Z, Z_ref, net)
''',
            "train_step": '''
import warnings


def train_step(net, optimizer, Z_batch, Z_ref_batch):
    warnings.warn("train_step: a warning from correct code", UserWarning)
    optimizer.zero_grad(set_to_none=False)
    loss = -DV(Z_batch, Z_ref_batch, net)
    loss.backward()
    optimizer.step()
    return -float(loss)
''',
            "train_dv": '''
def train_dv(Z, Z_ref, net, n_iters_per_epoch, epochs, lr=1e-3, generator=None):
    seed = int(torch.randint(2**31, (1,), generator=generator))
    trainer = DVTrainer(Z, Z_ref, net, n_iters_per_epoch, seed=seed, lr=lr)
    return [trainer.step(1) for _ in range(epochs)]
''',
            "ground_truth": '''
def ground_truth(rho, dim=1):
    return correlated_gaussians(2, rho, dim=dim)[2]
''',
            "estimate_mi": '''
def estimate_mi(Z, Z_ref, Z_test, Z_ref_test, epochs, seed=SEED):
    net = make_net(Z.shape[1], seed=seed)
    trainer = DVTrainer(Z, Z_ref, net, n_iters_per_epoch=5, seed=seed, lr=3e-3, progress=True)
    for _ in range(epochs):
        trainer.step(1)
    return float(DV(Z_test, Z_ref_test, net).detach())  # .detach() instead of torch.no_grad()
''',
            "infonce_bound": '''
def infonce_bound(scores):
    return gradlab.dv.infonce(scores.T)
''',
            "infonce_mi": '''
def infonce_mi(Z_train, Z_test, x_dim, K, num_steps, generator, lr=0.05):
    critic = GaussianCritic(x_dim).to(Z_test.device)
    optimizer = torch.optim.Adam(list(critic.parameters()), lr=lr)
    for _ in range(num_steps):
        batch = Z_train[torch.randperm(len(Z_train), generator=generator)[:K].to(Z_train.device)]
        optimizer.zero_grad()
        objective = infonce_bound(critic(batch[:, :x_dim], batch[:, x_dim:]))
        (-objective).backward()
        optimizer.step()
    m = len(Z_test) // K
    with torch.no_grad():
        tests = Z_test[: m * K].view(m, K, -1)
        return torch.tensor([infonce_bound(critic(t[:, :x_dim], t[:, x_dim:])).item() for t in tests])
''',
        },
        "score": 7,
        "failed": ["test-dv_bound", "test-ground_truth", "test-train_dv", "test-infonce_bound"],
    },
    # Two realistic mistakes in Part 5, everything else the solution: infonce_bound normalises each column
    # instead of each row (the visible test's matrix is not symmetric), and infonce_mi reports the bound on
    # batches of its training pairs instead of Z_test. 15 - 2 - 3.
    "mistakes": {
        "kinds": ["partial"],
        "answers": {
            "infonce_bound": '''
def infonce_bound(scores):
    K = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean() + math.log(K)
''',
            "infonce_mi": '''
def infonce_mi(Z_train, Z_test, x_dim, K, num_steps, generator, lr=0.05):
    critic = GaussianCritic(x_dim).to(Z_train.device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(num_steps):
        rows = torch.randperm(Z_train.shape[0], generator=generator)[:K].to(Z_train.device)
        optimizer.zero_grad()
        (-infonce_bound(critic(Z_train[rows, :x_dim], Z_train[rows, x_dim:]))).backward()
        optimizer.step()
    m = Z_test.shape[0] // K
    with torch.no_grad():
        batches = Z_train[: m * K].reshape(-1, K, Z_train.shape[1])  # the training pairs, not Z_test
        return torch.stack([infonce_bound(critic(b[:, :x_dim], b[:, x_dim:])) for b in batches])
''',
        },
        "score": 10,
        "failed": ["test-infonce_bound", "test-infonce_mi"],
    },
}
