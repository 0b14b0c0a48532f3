r"""``DVTrainer``: train a critic by Adam on a variational bound and report held-out estimates.

Three ways to feed it (the first is the course's signature):

* ``DVTrainer(Z, Z_ref, net, n_iters_per_epoch)``: samples of $P$ and $Q$ and the sample-form DV
  (or MINE, NWJ) bound on $D(P\|Q)$; each epoch permutes both and cuts them into minibatches.
* ``DVTrainer(Z, None, net, n_iters_per_epoch, x_dim=...)``: joint pairs $Z = [X, Y]$ and any bound of
  :mod:`gradlab.dv_bounds` on the $K\times K$ score matrix of each minibatch of $K$ pairs.
* ``DVTrainer(None, None, net, n_iters_per_epoch, sampler=..., batch_size=K, x_dim=...)``: a fresh batch
  of $K$ joint pairs ``sampler(K, generator)`` for every step, e.g. a :class:`CorrelatedGaussianSampler`
  whose ``mi`` may change between calls of :meth:`DVTrainer.step` (the staircase of Poole et al.).

In every form the reported estimate is by default computed on data never trained on: a ``holdout``
fraction (0.2) of ``Z`` (and of ``Z_ref`` in the course's form) set aside with the trainer's ``seed``, or
``num_eval`` fresh pairs from the sampler; ``validation=`` supplies held-out data instead. The estimate
on the training data is recorded beside it. ``holdout=0`` (and no ``validation``) turns held-out
evaluation off: the trainer then trains on all the data and reports the estimate on it.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import dv_bounds
from .checks import check_callable, check_choice, check_count, check_module
from .dv_critics import DV, NWJ, check_pair, check_samples, check_x_dim, net_outputs, score_matrix, split_pairs

__all__ = ["DVTrainer", "CorrelatedGaussianSampler", "BOUNDS"]

BOUNDS = dv_bounds.SCORE_BOUNDS
SAMPLE_BOUNDS = ("dv", "mine", "nwj")  # bounds of the course's (Z, Z_ref) form
DEFAULT_HOLDOUT = 0.2  # the fraction of fixed data held out when neither holdout nor validation is given
PROGRESS_MIN_ITERS = 2000  # step() shows a progress bar when it runs at least this many iterations


class CorrelatedGaussianSampler:
    r"""``sampler(num_samples, generator)``: pairs $[X, Y]$ of standard Gaussians in $\mathbb R^{dim}$,
    $\operatorname{corr}(X_k, Y_k) = \rho$, so $I(X;Y) = -\frac{dim}2\log(1-\rho^2)$.

    Set ``rho`` or ``mi`` (nats; then $\rho = \sqrt{1 - e^{-2\,mi/dim}}$) at any time.
    """

    def __init__(self, dim: int, rho: Optional[float] = None, mi: Optional[float] = None,
                 device: Any = None, dtype: torch.dtype = torch.float32) -> None:
        check_count(dim, "dim")
        if (rho is None) == (mi is None):
            raise ValueError("give exactly one of rho and mi")
        self.dim, self.device, self.dtype = dim, device, dtype
        if rho is not None:
            self.rho = rho
        else:
            self.mi = mi

    @property
    def rho(self) -> float:
        return self._rho

    @rho.setter
    def rho(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 < value < 1:
            raise ValueError(f"rho must be a number in (-1, 1), got {value!r}")
        self._rho = float(value)

    @property
    def mi(self) -> float:
        return -0.5 * self.dim * math.log1p(-self._rho**2)

    @mi.setter
    def mi(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"mi must be a non-negative number, got {value!r}")
        self._rho = math.sqrt(-math.expm1(-2 * value / self.dim))

    def __call__(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        x = torch.randn(num_samples, self.dim, generator=generator, dtype=torch.float64)
        noise = torch.randn(num_samples, self.dim, generator=generator, dtype=torch.float64)
        y = self._rho * x + math.sqrt(1 - self._rho**2) * noise
        return torch.cat((x, y), dim=1).to(device=self.device, dtype=self.dtype)


class LogBaseline(nn.Module):
    """A learned constant $\\log a$ (initialised at 1, NWJ's $a = e$) for TUBA and $I_\\alpha$."""

    def __init__(self) -> None:
        super().__init__()
        self.log_a = nn.Parameter(torch.ones(()))

    def forward(self, y: Tensor) -> Tensor:
        return self.log_a.to(y.dtype).expand(y.shape[0])


def split_rows(Z: Tensor, fraction: float, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """A random ``(1 - fraction, fraction)`` split of the rows of ``Z`` (at least one row each)."""
    n = Z.shape[0]
    num_held = min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=generator).to(Z.device)
    return Z[order[num_held:]], Z[order[:num_held]]


class DVTrainer:
    r"""Maximise a variational bound with Adam and report the estimate on held-out data.

    ``DVTrainer(Z, Z_ref, net, n_iters_per_epoch, writer_params=None, **adam_kwargs)`` is the course's
    signature (``adam_kwargs`` go to ``torch.optim.Adam``). Keyword-only options:

    * ``bound``: one of :data:`BOUNDS` (``"dv"`` default). ``"mine"`` uses MINE's moving average with rate
      ``ema_rate``; ``"tuba"``/``"interpolated"`` a baseline network ``baseline`` ($y\mapsto\log a(y)$;
      default a learned constant) and ``alpha``; ``"js"``/``"js_dv"``/``"smile"`` train with the JS
      objective and report NWJ / DV / SMILE (clip ``clip``); ``"ba"`` a :class:`GaussianConditionalCritic`.
    * ``x_dim``: $Z$ holds joint pairs, $X$ its first ``x_dim`` features; the bounds use score matrices of
      minibatches (``Z_ref`` unused). Any bound other than dv/mine/nwj implies it (default half the features).
    * ``sampler``, ``batch_size``: fresh pairs ``sampler(batch_size, generator)`` for every step.
    * ``holdout``: fraction of ``Z`` (and of ``Z_ref``) set aside, with ``seed``, as held-out data that
      is never trained on (default 0.2, in every form; ``0`` turns held-out evaluation off);
      ``validation``: explicit held-out data (``(Z_val, Z_ref_val)``, or ``Z_val`` of pairs); ``num_eval``:
      fresh pairs drawn for each held-out estimate in sampler mode (default ``8 * batch_size``).
    * ``ref_sampler``: ``generator -> Z_ref`` drawn at every epoch (the course form; a fresh reference).
    * ``seed`` drives every random choice (split, permutations, draws) through the trainer's own
      generator; the global RNG is not touched. ``progress``: text bar (default: runs of >= 2,000 steps).

    :meth:`step` returns the held-out estimate (the training estimate if ``holdout=0`` and no
    ``validation``). ``history``: per step ``"loss"`` and ``"batch_estimate"`` (the bound on the batch
    before the update: held-out in sampler mode); per :meth:`step` ``"epoch"``, ``"train_estimate"``,
    ``"val_estimate"`` (held-out) and ``"estimate"`` (returned). ``writer_params`` (a dict) logs the same
    to TensorBoard when it is installed (:func:`gradlab.dv_plots.make_summary_writer`).
    """

    def __init__(
        self,
        Z: Optional[Tensor],
        Z_ref: Optional[Tensor],
        net: nn.Module,
        n_iters_per_epoch: int,
        writer_params: Optional[Dict[str, Any]] = None,
        *,
        bound: str = "dv",
        ema_rate: float = 0.01,
        x_dim: Optional[int] = None,
        sampler: Optional[Callable[[int, torch.Generator], Tensor]] = None,
        batch_size: Optional[int] = None,
        baseline: Optional[nn.Module] = None,
        alpha: float = 0.5,
        clip: float = 5.0,
        holdout: Optional[float] = None,
        validation: Union[None, Tensor, Tuple[Tensor, Tensor]] = None,
        num_eval: Optional[int] = None,
        ref_sampler: Optional[Callable[[torch.Generator], Tensor]] = None,
        seed: int = 0,
        progress: Optional[bool] = None,
        **adam_kwargs: Any,
    ) -> None:
        check_module(net, "net")
        check_count(n_iters_per_epoch, "n_iters_per_epoch")
        check_choice(bound, "bound", BOUNDS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if holdout is not None and (isinstance(holdout, bool) or not isinstance(holdout, (int, float))
                                    or not 0 <= holdout < 1):
            raise ValueError(f"holdout must be a fraction in [0, 1) or None, got {holdout!r}")
        self.mine = dv_bounds.MINE(ema_rate)
        self.net, self.bound, self.n_iters_per_epoch = net, bound, n_iters_per_epoch
        self.ema_rate, self.alpha, self.clip, self.progress = float(ema_rate), alpha, clip, progress
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler, self.ref_sampler = sampler, ref_sampler
        self.pairs = sampler is not None or x_dim is not None or bound not in SAMPLE_BOUNDS
        if holdout is None:
            holdout = DEFAULT_HOLDOUT
        self.Z_val: Optional[Tensor] = None
        self.Z_ref_val: Optional[Tensor] = None
        if sampler is not None:
            check_callable(sampler, "sampler")
            self.batch_size = check_count(batch_size, "batch_size")
            if self.batch_size < 2:
                raise ValueError("batch_size must be >= 2: the off-diagonal pairs are the product sample")
            probe = sampler(2, torch.Generator().manual_seed(seed))
            check_samples(probe, "sampler(...)")
            self.x_dim = check_x_dim(probe.shape[1] // 2 if x_dim is None else x_dim, probe.shape[1])
            self.num_eval = check_count(8 * self.batch_size if num_eval is None else num_eval, "num_eval")
            self.Z, self.Z_ref = None, None
        else:
            self.setup_fixed(Z, Z_ref, x_dim, holdout, validation)
        if ref_sampler is not None:
            check_callable(ref_sampler, "ref_sampler")
        self.baseline = None
        if bound in ("tuba", "interpolated"):
            self.baseline = LogBaseline() if baseline is None else check_module(baseline, "baseline")
        params = list(net.parameters()) + (list(self.baseline.parameters()) if self.baseline is not None else [])
        self.optimizer = torch.optim.Adam(params, **adam_kwargs)
        if self.baseline is not None:
            first = next(iter(net.parameters()), None)
            if first is not None:
                self.baseline.to(first.device)
        self.writer = None
        if writer_params is not None:
            from .dv_plots import make_summary_writer  # TensorBoard lives with the display helpers

            self.writer = make_summary_writer(writer_params)
        self.n_iter = self.n_epoch = 0
        self.history: Dict[str, List[float]] = {"loss": [], "batch_estimate": [], "epoch": [],
                                                "train_estimate": [], "val_estimate": [], "estimate": []}

    def setup_fixed(self, Z: Tensor, Z_ref: Optional[Tensor], x_dim: Optional[int], holdout: float,
                    validation: Any) -> None:
        """Fixed data: check it, choose the held-out part, size the minibatches."""
        if self.pairs:
            check_samples(Z, "Z")
            self.x_dim = check_x_dim(Z.shape[1] // 2 if x_dim is None else x_dim, Z.shape[1])
            if validation is not None:
                self.Z_val = validation[0] if isinstance(validation, (tuple, list)) else validation
                check_samples(self.Z_val, "validation")
                if self.Z_val.shape[1] != Z.shape[1]:
                    raise ValueError("validation samples must have as many features as Z")
                self.Z = Z
            elif holdout > 0:
                self.Z, self.Z_val = split_rows(Z, holdout, self.generator)
            else:
                self.Z = Z
            self.Z_ref = Z_ref
            self.batch_size = self.Z.shape[0] // self.n_iters_per_epoch
            if self.batch_size < 2:
                raise ValueError(f"Z has {self.Z.shape[0]} training pairs: fewer than 2 per minibatch with "
                                 f"n_iters_per_epoch={self.n_iters_per_epoch}")
            return
        check_pair(Z, Z_ref)
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (Z_val, Z_ref_val)")
            check_pair(*validation)
            if validation[0].shape[1] != Z.shape[1]:
                raise ValueError("validation samples must have as many features as Z")
            self.Z_val, self.Z_ref_val = validation
        elif holdout > 0:
            Z, self.Z_val = split_rows(Z, holdout, self.generator)
            Z_ref, self.Z_ref_val = split_rows(Z_ref, holdout, self.generator)
        for name, data in (("Z", Z), ("Z_ref", Z_ref)):
            if data.shape[0] < self.n_iters_per_epoch:
                raise ValueError(
                    f"{name} has {data.shape[0]} training samples, fewer than n_iters_per_epoch="
                    f"{self.n_iters_per_epoch} minibatches: use fewer iterations per epoch or more samples"
                )
        self.Z, self.Z_ref = Z, Z_ref

    @property
    def log_avg_exp(self) -> Optional[Tensor]:
        """MINE: the log of the moving average of the mean of $e^{t}$ on reference samples."""
        return self.mine.log_avg_exp

    # ----------------------------------------------------------------- objective
    def log_baseline(self, y: Tensor) -> Optional[Tensor]:
        return None if self.baseline is None else self.baseline(y).reshape(-1)

    def pair_objective(self, Z: Tensor, mine: Optional[dv_bounds.MINE] = None) -> Tuple[Tensor, Tensor]:
        """``(surrogate, value)`` of the trainer's bound on the score matrix of the pairs ``Z``."""
        x, y = split_pairs(Z, self.x_dim)
        S = score_matrix(self.net, x, y)
        return dv_bounds.objective(self.bound, S, log_baseline=self.log_baseline(y), alpha=self.alpha,
                                   clip=self.clip, mine=self.mine if mine is None else mine)

    def mine_objective(self, Z: Tensor, Z_ref: Tensor) -> Tuple[Tensor, Tensor]:
        r"""MINE's surrogate and the minibatch DV value (sample form; see :class:`gradlab.dv_bounds.MINE`)."""
        check_pair(Z, Z_ref)
        t = net_outputs(self.net, Z)
        log_batch = torch.logsumexp(net_outputs(self.net, Z_ref, "Z_ref"), 0) - math.log(Z_ref.shape[0])
        return self.mine(t.mean(), log_batch)

    def bound_value(self, Z: Tensor, Z_ref: Optional[Tensor]) -> Tensor:
        """The trainer's bound on the given samples (a scalar with a graph)."""
        if self.pairs:
            if self.bound == "mine":  # MINE changes the gradient, not the value: report DV
                x, y = split_pairs(Z, self.x_dim)
                return dv_bounds.dv(score_matrix(self.net, x, y))
            return self.pair_objective(Z)[0]
        return NWJ(Z, Z_ref, self.net) if self.bound == "nwj" else DV(Z, Z_ref, self.net)

    # ------------------------------------------------------------------ training
    def batches(self, n: int) -> Sequence[Tensor]:
        """``n_iters_per_epoch`` disjoint random index sets that together cover ``range(n)``."""
        order = torch.randperm(n, generator=self.generator)
        return torch.tensor_split(order, self.n_iters_per_epoch)

    def update(self, surrogate: Tensor, value: Tensor) -> None:
        self.optimizer.zero_grad()
        (-surrogate).backward()
        self.optimizer.step()
        self.n_iter += 1
        self.history["loss"].append(-float(surrogate.detach()))
        self.history["batch_estimate"].append(float(value))
        if self.writer is not None:
            self.writer.add_scalar("Loss/train", -float(value), global_step=self.n_iter)

    def train_epoch(self) -> None:
        """One epoch: ``n_iters_per_epoch`` Adam steps."""
        if self.sampler is not None:
            for _ in range(self.n_iters_per_epoch):
                self.update(*self.pair_objective(self.sampler(self.batch_size, self.generator)))
        elif self.pairs:
            for index in self.batches(self.Z.shape[0]):
                self.update(*self.pair_objective(self.Z[index.to(self.Z.device)]))
        else:
            if self.ref_sampler is not None:
                self.Z_ref = self.ref_sampler(self.generator)
                check_pair(self.Z, self.Z_ref)
                if self.Z_ref.shape[0] < self.n_iters_per_epoch:
                    raise ValueError(f"ref_sampler returned {self.Z_ref.shape[0]} samples, fewer than "
                                     f"n_iters_per_epoch={self.n_iters_per_epoch}")
            device = self.Z.device
            for index, index_ref in zip(self.batches(self.Z.shape[0]), self.batches(self.Z_ref.shape[0])):
                Z_b, Z_ref_b = self.Z[index.to(device)], self.Z_ref[index_ref.to(device)]
                if self.bound == "mine":
                    self.update(*self.mine_objective(Z_b, Z_ref_b))
                else:
                    value = self.bound_value(Z_b, Z_ref_b)
                    self.update(value, value.detach())
        self.n_epoch += 1

    @torch.no_grad()
    def estimate(self, Z: Optional[Tensor] = None, Z_ref: Optional[Tensor] = None) -> float:
        """The bound on ``Z`` (and ``Z_ref``), in eval mode, without training.

        Default: the held-out data (fresh ``num_eval`` pairs in sampler mode), else the training data.
        Pairs are scored in batches of the training size $K$ (the average of the batch bounds).
        """
        if Z is None:
            if self.sampler is not None:
                Z = self.sampler(self.num_eval, self.generator)
            else:
                held = self.Z_val is not None
                Z, Z_ref = (self.Z_val, self.Z_ref_val) if held else (self.Z, self.Z_ref)
        was_training = self.net.training
        self.net.eval()
        try:
            if not self.pairs:
                return float(self.bound_value(Z, Z_ref))
            check_samples(Z, "Z")
            chunks = torch.tensor_split(Z, max(1, Z.shape[0] // self.batch_size))
            return sum(float(self.pair_objective(c, mine=dv_bounds.MINE())[1]) for c in chunks) / len(chunks)
        finally:
            self.net.train(was_training)

    def has_held_out(self) -> bool:
        return self.sampler is not None or self.Z_val is not None

    def step(self, epochs: int = 1) -> float:
        """Train for ``epochs`` epochs; record the training and held-out estimates; return the held-out one."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        total = epochs * self.n_iters_per_epoch
        show = self.progress if self.progress is not None else total >= PROGRESS_MIN_ITERS
        self.net.train()
        for _ in tqdm(range(epochs), desc=f"{self.bound} epochs", disable=not show, leave=False):
            self.train_epoch()
        if self.sampler is not None:  # the training data are the batches just seen: a fresh draw of them
            train = float("nan")
        else:
            train = self.estimate(self.Z, self.Z_ref)
        held = self.estimate() if self.has_held_out() else float("nan")
        estimate = held if self.has_held_out() else train
        self.history["epoch"].append(self.n_epoch)
        self.history["train_estimate"].append(train)
        self.history["val_estimate"].append(held)
        self.history["estimate"].append(estimate)
        if self.writer is not None:
            self.writer.add_scalar("Estimate", estimate, global_step=self.n_epoch)
        return estimate
