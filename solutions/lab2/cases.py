"""Lab 2's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

Format: see solutions/lab1/cases.py. Each submission starts from the solution notebook.
"""

SUBMISSIONS = {
    # Part 1 done, Part 2 left undone, Part 3's estimator wrong (the one-sided ES estimator): es_step and
    # train_es still earn their points, since each task is tested on its own. 12 - 3 - 3.
    "partial": {
        "kinds": ["partial"],
        "unanswered": ["es_grad_antithetic"],
        "answers": {
            "es_grad_model": '''
def es_grad_model(model, loss_fn, inputs, targets, *, sigma, num_samples, generator):
    theta = flatten_params(model)
    z = torch.randn((num_samples, theta.numel()), generator=generator, dtype=theta.dtype, device=theta.device)

    def loss_at(vec):
        return loss_fn(torch.func.functional_call(model, unflatten_params(vec, model), (inputs,)), targets)

    with torch.no_grad():
        values = torch.func.vmap(loss_at)(theta + sigma * z)
    return values @ z / (num_samples * sigma)
''',
        },
        "score": 6,
        "failed": ["test-es_grad_antithetic", "test-es_grad_model"],
    },
    # Correct, written differently: a coordinate loop in fd_central_grad (allowed by the task), noise drawn
    # as in the task but the antithetic average written with two vmaps and a mean; a tqdm bar (stderr) and
    # a warning in train_es. Delegation: es_grad_model calls gradlab's estimator.
    "different": {
        "kinds": ["alternative", "noisy", "delegation"],
        "answers": {
            "fd_central_grad": '''
def fd_central_grad(f, x, eps=1e-6):
    flat = x.detach().reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        grad[i] = (f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape))) / (2 * eps)
    return grad.reshape(x.shape)
''',
            "es_grad_antithetic": '''
def es_grad_antithetic(f, x, *, sigma, num_samples, generator):
    noise = torch.randn((num_samples, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    plus, minus = torch.func.vmap(f)(x + sigma * noise), torch.func.vmap(f)(x - sigma * noise)
    scale = ((plus - minus) / (2 * sigma)).reshape(num_samples, *([1] * x.dim()))
    return (scale * noise).mean(dim=0)
''',
            "es_grad_model": '''
def es_grad_model(model, loss_fn, inputs, targets, *, sigma, num_samples, generator):
    return gradlab.es.es_grad_model(model, loss_fn, inputs, targets, sigma=sigma, num_samples=num_samples,
                                    chunk_size=num_samples, generator=generator)
''',
            "train_es": '''
import sys
import warnings

from tqdm import tqdm


def train_es(model, x, y, *, num_steps, batch_size, sigma, num_samples, lr, seed):
    warnings.warn("train_es: a warning from correct code", UserWarning)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    losses = []
    for _ in tqdm(range(num_steps), file=sys.stderr, desc="ES steps"):
        rows = torch.randperm(len(x), generator=generator, device=x.device)[:batch_size]
        losses.append(es_step(model, F.cross_entropy, x[rows], y[rows], optimizer,
                              sigma=sigma, num_samples=num_samples, generator=generator))
    return losses
''',
        },
        "score": 9,
        "failed": ["test-es_grad_model"],
    },
}
