"""gradlab.training: build_mlp, accuracy and the minibatch training loop."""
import pytest
import torch
from torch import nn

import gradlab
from gradlab.autograd import MyReLU
from gradlab.training import accuracy, build_mlp, train


# ------------------------------------------------------------------ build_mlp


def test_build_mlp_structure():
    model = build_mlp(5, [7, 3], 2)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in model[::2]] == [(5, 7), (7, 3), (3, 2)]
    assert model(torch.randn(4, 5)).shape == (4, 2)


def test_build_mlp_options():
    model = build_mlp(4, 6, 3, nonlinearity_module=nn.Tanh, bias=False)
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear]
    assert all(m.bias is None for m in model[::2])
    assert len(build_mlp(4, [], 3)) == 1  # no hidden layer: logistic regression


def test_build_mlp_with_gradlab_modules():
    model = build_mlp(4, [5], 3, nonlinearity_module=gradlab.nn.ReQU, weight_module=gradlab.nn.Linear)
    assert [type(m) for m in model] == [gradlab.nn.Linear, gradlab.nn.ReQU, gradlab.nn.Linear]


def test_build_mlp_rejects_autograd_function_with_explanation():
    with pytest.raises(TypeError, match=r"MyReLU is not a Module subclass.*gradlab.nn.ReLU"):
        build_mlp(4, [5], 3, nonlinearity_module=MyReLU)
    with pytest.raises(TypeError, match=r"nonlinearity_module\(\) must return an nn.Module, got str"):
        build_mlp(4, [5], 3, nonlinearity_module=lambda: "relu")


def test_build_mlp_rejects_bad_dims():
    with pytest.raises(ValueError, match=r"input_dim must be >= 1, got 0"):
        build_mlp(0, [5], 3)
    with pytest.raises(ValueError, match=r"hidden_dims\[1\] must be >= 1, got -2"):
        build_mlp(4, [5, -2], 3)
    with pytest.raises(TypeError, match=r"output_dim must be an int >= 1, got float"):
        build_mlp(4, [5], 2.0)
    with pytest.raises(TypeError, match=r"hidden_dims must be an int or a list of ints, got str"):
        build_mlp(4, "5", 3)


# ------------------------------------------------------------------ accuracy


class FixedLogits(nn.Module):
    """Returns the stored logits whatever the input (the input only sets nothing)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.seen_training_flags = []

    def forward(self, x):
        self.seen_training_flags.append(self.training)
        return self.logits[: x.shape[0]]


def test_accuracy_counts_argmax_matches_and_uses_eval_mode():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
    model = FixedLogits(logits)
    model.train()
    assert accuracy(model, torch.zeros(4, 1), torch.tensor([0, 1, 1, 0])) == 0.5
    assert model.seen_training_flags == [False] and model.training  # eval inside, restored after


def test_accuracy_bad_inputs():
    model = FixedLogits(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x and y must have the same number of rows, got shapes \(4, 1\) and \(3,\)"):
        accuracy(model, torch.zeros(4, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y must hold class indices of shape \(n,\)"):
        accuracy(model, torch.zeros(4, 1), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"model\(x\) must return logits of shape \(n, classes\)"):
        accuracy(FixedLogits(torch.zeros(4)), torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        accuracy(model, [0.0], torch.zeros(1))


# ------------------------------------------------------------------ train


class RecordingLinear(nn.Linear):
    """A linear layer that remembers the first feature (a row id) of every batch it sees."""

    def __init__(self):
        super().__init__(2, 2)
        self.batches = []

    def forward(self, x):
        if self.training:
            self.batches.append(x[:, 0].long().tolist())
        return super().forward(x)


def id_data(n=10):
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.zeros(n)], dim=1)
    return x, torch.arange(n) % 2


def run_recording(seed, num_epochs=3, n=10, batch_size=4):
    model = RecordingLinear()
    x, y = id_data(n)
    train(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.0), x, y,
          num_epochs, batch_size=batch_size, seed=seed, progress=False)
    return model.batches


def test_train_every_sample_once_per_epoch_in_fresh_order():
    batches = run_recording(seed=0, num_epochs=3, n=10, batch_size=4)
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    epochs = [sum(batches[3 * e : 3 * e + 3], []) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))  # a permutation: every row once
    assert len({tuple(order) for order in epochs}) == 3  # reshuffled each epoch, not sliced by epoch index


def test_train_order_is_reproducible_by_seed():
    assert run_recording(seed=7) == run_recording(seed=7)
    assert run_recording(seed=7) != run_recording(seed=8)


def test_train_history_and_learning():
    torch.manual_seed(0)
    x, y = gradlab.load_iris_tensors()
    x = (x - x.mean(0)) / x.std(0)
    model = build_mlp(4, [16], 3)
    history = train(model, nn.functional.cross_entropy, torch.optim.Adam(model.parameters(), lr=0.05),
                    x, y, num_epochs=8, batch_size=32, x_val=x, y_val=y, progress=False)
    assert set(history) == {"loss", "val_accuracy"}
    assert len(history["loss"]) == 8 and len(history["val_accuracy"]) == 8
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert history["val_accuracy"][-1] == accuracy(model, x, y)


def test_train_reaches_90_percent_on_digits_with_gradlab_modules():
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = gradlab.load_digits_split()
    model = build_mlp(64, [64], 10, nonlinearity_module=gradlab.nn.ReQU, weight_module=gradlab.nn.Linear)
    history = train(model, nn.functional.cross_entropy, torch.optim.Adam(model.parameters(), lr=3e-3),
                    x_train, y_train, num_epochs=6, x_val=x_test, y_val=y_test, progress=False)
    assert history["val_accuracy"][-1] >= 0.9


def test_progress_flag_controls_the_bar(capsys):
    x, y = id_data(8)
    for progress in (False, True):
        model = nn.Linear(2, 2)
        train(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), x, y,
              num_epochs=2, progress=progress)
        err = capsys.readouterr().err
        assert ("2/2" in err) == progress


def test_zero_epochs_is_a_no_op():
    model = nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = id_data(4)
    history = train(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=1.0), x, y, 0,
                    progress=False)
    assert history == {"loss": [], "val_accuracy": []}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_bad_inputs():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = id_data(4)
    ce = nn.functional.cross_entropy
    with pytest.raises(ValueError, match=r"x and y must have the same number of rows"):
        train(model, ce, opt, x, y[:3], 1, progress=False)
    with pytest.raises(ValueError, match=r"num_epochs must be >= 0, got -1"):
        train(model, ce, opt, x, y, -1, progress=False)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        train(model, ce, opt, x, y, 1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"x_val and y_val must be given together"):
        train(model, ce, opt, x, y, 1, x_val=x, progress=False)
    with pytest.raises(ValueError, match=r"x_val and y_val must have the same number of rows"):
        train(model, ce, opt, x, y, 1, x_val=x, y_val=y[:2], progress=False)
    with pytest.raises(ValueError, match=r"x must contain at least one row"):
        train(model, ce, opt, x[:0], y[:0], 1, progress=False)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar, got shape \(4,\)"):
        train(model, lambda out, t: ce(out, t, reduction="none"), opt, x, y, 1, progress=False)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        train(lambda v: v, ce, opt, x, y, 1, progress=False)
