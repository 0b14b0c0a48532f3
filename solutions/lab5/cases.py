"""Lab 5's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook, whose written answer
(`overfitting_answer`, 2 points by hand) is answered: every submission here needs manual grading, and its
expected score counts the 10 autograded points only.
"""

SUBMISSIONS = {
    # Part 2 and estimate_mi left undone: 10 - 2 - 2. Written differently: the bound with an explicit max shift
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
        },
        "score": 6,
        "failed": ["test-train_step", "test-estimate_mi"],
    },
    # Correct, written differently: train_step negates a loss (zero_grad without set_to_none, float() instead of
    # .item()) and warns; estimate_mi shows DVTrainer's progress bar (stderr), trains one epoch per call and detaches the held-out
    # bound instead of using torch.no_grad().
    # Delegation: dv_bound returns gradlab's DV; train_dv hands the work to DVTrainer (it passes the visible
    # tests: every sample once per epoch, a new order each epoch, it learns); ground_truth returns the value
    # correlated_gaussians computes. 10 - 2 - 3 - 1.
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
        },
        "score": 4,
        "failed": ["test-dv_bound", "test-ground_truth", "test-train_dv"],
    },
}
