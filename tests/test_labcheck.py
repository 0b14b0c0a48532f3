"""gradlab.labcheck: the helpers lab test cells import."""
import pytest
import torch

import gradlab
from gradlab import backprop
from gradlab.labcheck import ReferenceDisabledError, check_close, reference_disabled


def test_check_close_passes_close_tensors_and_fails_the_others(capsys):
    check_close("same", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-8]))
    assert "expected" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="largest difference"):
        check_close("off", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]))
    with pytest.raises(AssertionError, match="shape"):
        check_close("shape", torch.zeros(2), torch.zeros(3))
    with pytest.raises(AssertionError, match="expected a tensor"):
        check_close("type", [1.0], torch.zeros(1))


def test_reference_disabled_catches_every_way_to_reach_the_reference():
    from gradlab.autograd import requ as taken_before  # a reference kept under another name

    x = torch.tensor([-1.0, 2.0])
    with reference_disabled(gradlab.autograd.requ):  # a function: every reference to it is caught
        for call in (lambda: gradlab.requ(x), lambda: taken_before(x)):
            with pytest.raises(ReferenceDisabledError, match="write the computation yourself"):
                call()
        assert torch.equal(gradlab.autograd.ReQU.apply(x), torch.tensor([0.0, 4.0]))  # only what was named
    with reference_disabled((gradlab.autograd.ReQU, "forward"), (backprop.Node, "backward")):  # methods
        for call in (lambda: gradlab.autograd.ReQU.apply(x), lambda: backprop.Node(x).backward()):
            with pytest.raises(ReferenceDisabledError):
                call()
        assert torch.equal(torch.relu(x) ** 2, torch.tensor([0.0, 4.0]))  # torch itself is untouched


def test_reference_disabled_restores_everything_even_after_an_error():
    x = torch.tensor([-1.0, 2.0])
    with pytest.raises(ZeroDivisionError):
        with reference_disabled(gradlab.autograd.requ, (gradlab.autograd.ReQU, "backward")):
            1 / 0
    y = x.clone().requires_grad_(True)
    gradlab.autograd.requ(y).sum().backward()
    assert torch.equal(y.grad, torch.tensor([0.0, 4.0]))
    assert isinstance(vars(gradlab.autograd.ReQU)["backward"], staticmethod)


def test_reference_disabled_rejects_what_it_cannot_disable():
    def outer():
        value = 1

        def closure():
            return value
        return closure

    with pytest.raises(TypeError, match="closure"):
        with reference_disabled(outer()):
            pass
    with pytest.raises(TypeError, match="class, name"):
        with reference_disabled((gradlab.autograd.ReQU, "no_such_method")):
            pass
    with pytest.raises(TypeError, match="function"):
        with reference_disabled(42):
            pass
    assert gradlab.autograd.requ(torch.tensor([3.0])).item() == 9.0
