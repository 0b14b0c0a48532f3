r"""ES gradients inside autograd, with TorchOpt's interface: ``zero_order`` and ``ZeroOrderModule``.

:func:`zero_order` decorates a scalar function so that backpropagating through it
gives the evolution-strategies estimate (:func:`gradlab.es.point.es_grad`) for the
selected arguments instead of their exact gradient; :class:`ZeroOrderModule` does
the same for all parameters of an ``nn.Module``. ``fn`` itself is never
differentiated, so it may be a black box (NumPy, ``.item()``, a simulator).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .. import rng
from ..batch import Vectorized, check_vectorized
from ..checks import as_scalar, check_count, check_sigma
from .point import check_fitness_shaping, check_method, es_grad
from .noise import noise_source

__all__ = ["zero_order", "ZeroOrderModule"]


def _positions(argnums: Tuple[int, ...], count: int) -> List[int]:
    """Positions of the differentiated arguments among ``count``; negative entries count from the end."""
    positions: List[int] = []
    for a in argnums:
        if not -count <= a < count:
            raise ValueError(f"argnums entry {a} is out of range for {count} positional arguments")
        if a % count in positions:
            raise ValueError(
                f"argnums {argnums} name argument {a % count} twice for {count} positional arguments"
            )
        positions.append(a % count)
    return positions


def _split_argument(
    value: Any, argnum: int
) -> Tuple[List[torch.Tensor], Callable[[List[torch.Tensor]], Any]]:
    """Tensors of one differentiable argument (a tensor, a tuple/list or a dict of tensors)."""

    def check(t: Any, where: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(
                f"argument {argnum}{where} must be a floating-point tensor (or a tuple/list/dict "
                f"of them) to be differentiated by zero_order, got {type(t).__name__}"
            )
        return t

    if isinstance(value, torch.Tensor):
        return [check(value, "")], lambda leaves: leaves[0]
    if isinstance(value, (tuple, list)):
        leaves = [check(t, f"[{k}]") for k, t in enumerate(value)]
        return leaves, lambda new: type(value)(new)
    if isinstance(value, dict):
        keys = list(value)
        leaves = [check(value[k], f"[{k!r}]") for k in keys]
        return leaves, lambda new: dict(zip(keys, new))
    return [check(value, "")], lambda leaves: leaves[0]


class _ZeroOrderFunction(torch.autograd.Function):
    """Forward: f(*args). Backward: grad_output times the ES estimate for the selected tensors."""

    @staticmethod
    def forward(ctx: Any, spec: Dict[str, Any], *leaves: torch.Tensor) -> torch.Tensor:
        out = spec["fn"](*spec["args"], **spec["kwargs"])
        out = as_scalar(out, "the function decorated by zero_order").detach().clone()
        ctx.spec = spec
        ctx.value = out
        ctx.save_for_backward(*leaves)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        spec, leaves = ctx.spec, ctx.saved_tensors
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in leaves])
        theta = torch.cat([t.detach().reshape(-1).to(dtype) for t in leaves])
        sizes = [t.numel() for t in leaves]

        def f_flat(flat: torch.Tensor) -> torch.Tensor:
            parts = flat.split(sizes)
            new_leaves = [p.view(t.shape).to(t.dtype) for p, t in zip(parts, leaves)]
            args = spec["rebuild"](new_leaves)
            return spec["fn"](*args, **spec["kwargs"])

        cfg = spec["config"]
        with torch.no_grad():
            grad = es_grad(f_flat, theta, f_x=ctx.value.to(dtype), **cfg)
        grad = grad * grad_output.to(dtype)
        grads = [g.view(t.shape).to(t.dtype) for g, t in zip(grad.split(sizes), leaves)]
        return (None, *grads)


def zero_order(
    distribution: Any = None,
    method: str = "naive",
    argnums: Union[int, Tuple[int, ...]] = 0,
    num_samples: int = 1,
    sigma: float = 1.0,
    *,
    generator: Optional[torch.Generator] = None,
    fitness_shaping: Optional[str] = None,
    vectorized: Vectorized = "auto",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    r"""Decorator: make a scalar function's gradient w.r.t. ``args[argnums]`` an ES estimate.

    The positional parameters are TorchOpt's, ``torchopt.diff.zero_order(distribution,
    method='naive', argnums=(0,), num_samples=1, sigma=1.0)``, in the same order
    and with the same defaults and meaning (``argnums=0`` is TorchOpt's ``(0,)``):
    ``distribution`` (an object with ``sample(sample_shape)``, e.g.
    ``torch.distributions.Normal(0., 1.)``, or a function of the shape),
    ``method`` (``"naive"``, ``"forward"``, ``"antithetic"``), ``argnums`` (an int
    or a tuple of distinct ints, negative ones counting from the end; each such
    argument is a tensor or a tuple/list/dict of tensors), ``num_samples`` (draws)
    and ``sigma``. Differences: TorchOpt requires ``distribution``, here it may be
    ``None`` (standard normal drawn from ``generator``); the keyword-only
    ``generator``, ``fitness_shaping`` and ``vectorized`` are gradlab's (see
    :func:`gradlab.es.point.es_grad`).

    The decorated function returns ``fn(*args)`` as a scalar tensor whose
    ``.backward()`` / ``torch.autograd.grad`` yields ``grad_output`` $\times$
    :func:`gradlab.es.point.es_grad` of ``fn`` in the selected tensors (all of them
    perturbed jointly, as one flat vector). ``fn`` is never differentiated; the
    population is vmapped where ``fn`` allows it, where TorchOpt loops over samples.
    TorchOpt's ``"forward"`` (up to at least 0.7.3) is biased: it multiplies by
    $\sigma$ instead of dividing, and from the second sample on it subtracts the
    previous sample's difference instead of $f(x)$; here it is
    $\frac1N\sum_n (f(x + \sigma z_n) - f(x))\, z_n/\sigma$.
    """
    check_method(method)
    sigma = check_sigma(sigma)
    check_count(num_samples, "num_samples")
    check_fitness_shaping(fitness_shaping)
    check_vectorized(vectorized)
    argnums_tuple = (argnums,) if isinstance(argnums, int) and not isinstance(argnums, bool) else argnums
    if (
        not isinstance(argnums_tuple, tuple)
        or not argnums_tuple
        or any(isinstance(a, bool) or not isinstance(a, int) for a in argnums_tuple)
        or len(set(argnums_tuple)) != len(argnums_tuple)
    ):
        raise ValueError(f"argnums must be an int or a tuple of distinct ints, got {argnums!r}")
    if distribution is not None:
        noise_source(distribution)  # raises TypeError now rather than at backward time
    config = {
        "distribution": distribution, "method": method, "num_samples": num_samples,
        "sigma": sigma, "generator": generator, "fitness_shaping": fitness_shaping,
        "vectorized": vectorized,
    }  # es_grad's keyword arguments

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
            positions = _positions(argnums_tuple, len(args))
            leaves: List[torch.Tensor] = []
            pieces = []
            for pos in positions:
                part, rebuild = _split_argument(args[pos], pos)
                pieces.append((pos, len(part), rebuild))
                leaves += part

            def rebuild_args(new_leaves: List[torch.Tensor]) -> List[Any]:
                new_args, offset = list(args), 0
                for pos, count, rebuild in pieces:
                    new_args[pos] = rebuild(list(new_leaves[offset : offset + count]))
                    offset += count
                return new_args

            spec = {"fn": fn, "args": args, "kwargs": kwargs, "rebuild": rebuild_args, "config": config}
            return _ZeroOrderFunction.apply(spec, *leaves)

        return wrapped

    return decorator


class ZeroOrderModule(nn.Module):
    r"""Base class: an ``nn.Module`` whose ``forward`` gets ES gradients for all its parameters.

    The OOP form of :func:`zero_order`, as TorchOpt's ``ZeroOrderGradientModule``::

        class Net(ZeroOrderModule, method="antithetic", num_samples=100, sigma=0.01):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(32, 1)
            def forward(self, x, y):          # must return a scalar
                return F.mse_loss(self.fc(x), y)
            def sample(self, sample_shape):   # optional; default: standard normal
                return torch.randn(sample_shape)

    ``loss = net(x, y); loss.backward()`` fills every parameter's ``.grad`` with the
    ES estimate (the parameters are perturbed jointly through
    ``torch.func.functional_call``); every call draws fresh noise. Class keywords
    ``method`` (default ``"naive"``), ``num_samples`` (1) and ``sigma`` (1.0) are
    TorchOpt's; here they are inherited by subclasses, which may change some of
    them. TorchOpt requires ``sample``; here it defaults to a standard normal drawn
    from ``self.generator`` (set it to a ``torch.Generator`` to seed the noise).
    """

    _zo_config: Dict[str, Any] = {"method": "naive", "num_samples": 1, "sigma": 1.0}
    generator: Optional[torch.Generator] = None

    def __init_subclass__(
        cls,
        method: Optional[str] = None,
        num_samples: Optional[int] = None,
        sigma: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        config = dict(cls._zo_config)
        if method is not None:
            config["method"] = check_method(method)
        if num_samples is not None:
            config["num_samples"] = check_count(num_samples, "num_samples")
        if sigma is not None:
            config["sigma"] = check_sigma(sigma)
        cls._zo_config = config
        if "forward" in cls.__dict__:
            cls.forward = _zero_order_forward(cls.__dict__["forward"])  # type: ignore[method-assign]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Noise of shape ``sample_shape`` (override for another distribution); default N(0, 1)."""
        return rng.randn(sample_shape, generator=self.generator)


def _zero_order_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a ZeroOrderModule subclass's forward with zero_order over its parameters."""

    @functools.wraps(forward)
    def wrapped(self: ZeroOrderModule, *inputs: Any, **kwargs: Any) -> torch.Tensor:
        if getattr(self, "_zo_inside", False):  # called from functional_call below
            return forward(self, *inputs, **kwargs)
        named = list(self.named_parameters())
        if not named:
            raise ValueError(f"{type(self).__name__} has no parameters to estimate gradients for")
        names = [name for name, _ in named]
        custom_sample = type(self).sample is not ZeroOrderModule.sample

        def call(flat_params: Tuple[torch.Tensor, ...], *args: Any, **kw: Any) -> torch.Tensor:
            previous = self.__dict__.get("_zo_inside", False)
            self.__dict__["_zo_inside"] = True
            try:
                return torch.func.functional_call(self, dict(zip(names, flat_params)), args, kw)
            finally:
                self.__dict__["_zo_inside"] = previous

        cfg = type(self)._zo_config
        decorated = zero_order(
            distribution=self.sample if custom_sample else None,
            method=cfg["method"], argnums=0, num_samples=cfg["num_samples"], sigma=cfg["sigma"],
            generator=None if custom_sample else self.generator,
        )(call)
        return decorated(tuple(p for _, p in named), *inputs, **kwargs)

    return wrapped
