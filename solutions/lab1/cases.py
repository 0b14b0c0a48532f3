"""Lab 1's own synthetic submissions, graded by tests/test_grading.py (instructor side: never released).

The generic cases (the solution, the untouched student notebook, an answer cell that raises, loops or kills
its kernel, edited/deleted/re-weighted cells, huge output, a non-UTF-8 byte, a truncated file, shadowed
helpers) are built by the test from any lab. What only the lab's author knows is here. Each submission
starts from the solution notebook; ``answers`` replaces answer cells (by grade_id), ``unanswered`` puts
the student's stub back; ``score`` is the exact expected total and ``failed`` the test cells that must
score 0 (every other test cell must get full points). ``kinds`` names what the submission stands for;
together the submissions must cover partial, alternative, noisy and delegation.
"""

SUBMISSIONS = {
    # Parts 3 and 5b left undone: 20 - 2 - 3.
    "partial": {
        "kinds": ["partial"],
        "unanswered": ["gradcheck", "backward"],
        "score": 15,
        "failed": ["test-gradcheck", "test-backward"],
    },
    # Correct, written differently: an nn.Module that registers fc1, fc2, act with one activation module
    # shared by both hidden layers (registration order != call order); a ReQU forward that warns; a
    # gradcheck that builds its float64 copies with torch.tensor (UserWarning) and trains nothing;
    # a training loop with a tqdm bar on stderr. Delegation: requ_backward and the traversal call gradlab.
    "different": {
        "kinds": ["alternative", "noisy", "delegation"],
        "answers": {
            "requ_forward": '''
import warnings


def requ_forward(ctx, x):
    warnings.warn("requ_forward: a warning from correct code", UserWarning)
    ctx.save_for_backward(x)
    return torch.where(x > 0, x * x, torch.zeros_like(x))
''',
            "requ_backward": '''
def requ_backward(ctx, grad_output):
    return gradlab.autograd.ReQU.backward(ctx, grad_output)
''',
            "gradcheck": '''
def passes_gradcheck(function, *inputs):
    copies = [torch.tensor(t, dtype=torch.float64, requires_grad=True) if isinstance(t, torch.Tensor) else t
              for t in inputs]
    return torch.autograd.gradcheck(function.apply, tuple(copies), raise_exception=False)
''',
            "train_mlp": '''
import sys

from tqdm import tqdm


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = LinearLayer(64, 48)
        self.fc2 = LinearLayer(48, 48)
        self.out = LinearLayer(48, 10)
        self.act = ReQULayer()  # registered last, used twice

    def forward(self, x):
        return self.out(self.act(self.fc2(self.act(self.fc1(x)))) / 10)


torch.manual_seed(1)
model = Net().to(DEVICE)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
generator = torch.Generator().manual_seed(1)
for epoch in tqdm(range(25), file=sys.stderr, desc="training"):
    for rows in torch.randperm(len(x_train), generator=generator).split(64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train[rows]), y_train[rows]).backward()
        optimizer.step()
''',
            "backward": '''
def backward(root):
    root.backward()
''',
        },
        "score": 15,
        "failed": ["test-requ_backward", "test-backward"],
    },
}
