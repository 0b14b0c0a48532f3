"""Storchastic as a guest in a gradlab benchmark process: its global patches of torch only during its own turns.

``import storch`` replaces ``torch.is_tensor``, ``Tensor.to``, ``Tensor.le`` and ``Tensor.gt`` by wrappers and
switches argument validation off for every ``torch.distributions`` object. Left in place, these slow down
(and change) every other contender in the process. This module imports Storchastic, undoes the patches at
once, and offers :func:`as_storch`, which wraps a Storchastic contender so that the patches are in place
only while it runs. ``storch`` is None when Storchastic is not installed (``pip install -e .[bench]``).
"""
from __future__ import annotations

import functools

import torch
from torch import distributions as D

_NAMES = [(torch, "is_tensor"), (torch.Tensor, "to"), (torch.Tensor, "le"), (torch.Tensor, "gt")]


def _state():
    return [getattr(owner, name) for owner, name in _NAMES] + [D.Distribution._validate_args]


def _apply(state) -> None:
    for (owner, name), value in zip(_NAMES, state[:-1]):
        setattr(owner, name, value)
    D.Distribution.set_default_validate_args(state[-1])


_ORIGINAL = _state()
try:
    import storch  # noqa: E402
    from storch.method import ScoreFunction  # noqa: E402,F401
except ImportError:
    storch = None
_PATCHED = _state()
_apply(_ORIGINAL)


def as_storch(fn):
    """``fn`` run with Storchastic's patches of torch in place (and removed again afterwards)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        _apply(_PATCHED)
        try:
            return fn(*args, **kwargs)
        finally:
            _apply(_ORIGINAL)

    return run
