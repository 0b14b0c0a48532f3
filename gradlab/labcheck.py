"""Helpers for the test cells of the labs (not for the book).

Lab test cells import what they use from here *inside the cell*, so that an answer cell cannot
change what a test does by redefining a helper (``def check_close(*args): pass``): the import in
the test cell rebinds the name just before it is used.

* :func:`check_close` prints the expected and the obtained tensor, then asserts that they agree;
* :func:`reference_disabled` makes gradlab's own implementation of a task raise while a student's
  answer runs, so that an answer which merely calls it scores no points for that task.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator, Tuple, Union

import torch

__all__ = ["ReferenceDisabledError", "check_close", "reference_disabled"]


class ReferenceDisabledError(RuntimeError):
    """Raised when an answer calls gradlab's implementation of the task it was asked to write."""


def check_close(what: str, got: Any, expected: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Print ``expected`` and ``got``, then assert that ``got`` is a tensor of the same shape, close to it."""
    print(f"{what}\n  expected: {expected}\n  got:      {got}")
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got).__name__}"
    assert got.shape == expected.shape, f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    got, expected = got.detach(), expected.detach()
    gap = (got - expected).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got, expected, atol=atol, rtol=rtol), f"{what}: largest difference {gap:.3g}"


def _disabled(*args: Any, **kwargs: Any) -> Any:
    # Runs with the globals of the function whose code it replaces: only builtins are safe here.
    raise __import__("gradlab.labcheck").labcheck.ReferenceDisabledError(
        "this test runs your answer with gradlab's own implementation of the task disabled: "
        "write the computation yourself instead of calling gradlab"
    )


Target = Union[types.FunctionType, Tuple[type, str]]


@contextlib.contextmanager
def reference_disabled(*targets: Target) -> Iterator[None]:
    r"""Make each target raise :class:`ReferenceDisabledError` inside the ``with`` block.

    A target is a plain function (its code object is swapped, so every reference to it is caught,
    including ``from gradlab.es import es_grad as mine`` taken before the test) or a pair
    ``(cls, "method")`` for a method or a static method of a class (the class attribute is swapped).
    Everything is restored on exit, even when the block raises.

    >>> import gradlab
    >>> with reference_disabled(gradlab.autograd.requ):
    ...     gradlab.autograd.requ(torch.ones(1))
    Traceback (most recent call last):
    ...
    gradlab.labcheck.ReferenceDisabledError: this test runs your answer ...
    """
    undo = []
    try:
        for target in targets:
            if isinstance(target, tuple):
                cls, name = target
                if not isinstance(cls, type) or not isinstance(name, str) or name not in vars(cls):
                    raise TypeError(f"targets: expected (class, name of an attribute of it), got {target!r}")
                original = vars(cls)[name]
                replacement = staticmethod(_disabled) if isinstance(original, staticmethod) else _disabled
                setattr(cls, name, replacement)
                undo.append(lambda cls=cls, name=name, original=original: setattr(cls, name, original))
            elif isinstance(target, types.FunctionType):
                if target.__code__.co_freevars:
                    raise TypeError(f"targets: {target.__qualname__} is a closure; pass its owner instead")
                original_code = target.__code__
                target.__code__ = _disabled.__code__
                undo.append(lambda target=target, code=original_code: setattr(target, "__code__", code))
            else:
                raise TypeError(f"targets: expected a function or a (class, name) pair, got {target!r}")
        yield
    finally:
        for restore in reversed(undo):
            restore()
