r"""Neural estimation of KL divergence and mutual information (Donsker–Varadhan and friends).

For samples $Z_1..Z_n \sim P$ and $Z'_1..Z'_{n'} \sim Q$ and a network $t$, the bounds are

* DV (Donsker–Varadhan): $\frac1n\sum_i t(Z_i) - \log\frac1{n'}\sum_j e^{t(Z'_j)}$, tight at
  $t = \log\frac{dP}{dQ} + c$;
* NWJ (Nguyen–Wainwright–Jordan): $\frac1n\sum_i t(Z_i) - \frac1{n'}\sum_j e^{t(Z'_j) - 1}$, tight at
  $t = 1 + \log\frac{dP}{dQ}$; never larger than DV for the same $t$;
* InfoNCE (mutual information only, $Z = (X, Y)$): with a batch of $K$ pairs,
  $\frac1K\sum_i \log \frac{e^{t(x_i, y_i)}}{\frac1K\sum_j e^{t(x_i, y_j)}} \le \log K$.

All three lower-bound $D(P\|Q)$ (for InfoNCE: $I(X;Y)$) in expectation over the samples.
:class:`DVTrainer` maximises one of them by Adam on minibatches; ``bound="mine"`` trains the DV
bound with MINE's bias-corrected gradient, whose denominator is a moving average of
$\frac1{|B'|}\sum_{j\in B'} e^{t(Z'_j)}$ instead of the biased minibatch value.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .checks import check_callable, check_choice, check_count, check_module, check_tensor

__all__ = ["DV", "NWJ", "InfoNCE", "log_mean_exp", "DVTrainer", "BOUNDS", "plot_net_2"]

BOUNDS = ("dv", "mine", "nwj", "infonce")
PROGRESS_MIN_ITERS = 2000  # step() shows a progress bar when it runs at least this many iterations


def check_samples(Z: Any, name: str) -> None:
    """``Z`` must be a non-empty floating tensor of shape ``(n, d)``."""
    check_tensor(Z, name)
    if Z.dim() != 2:
        raise ValueError(f"{name} must have shape (num_samples, num_features), got {tuple(Z.shape)}")


def check_pair(Z: Any, Z_ref: Any) -> None:
    """Samples of P and Q: same feature dimension, same device."""
    check_samples(Z, "Z")
    check_samples(Z_ref, "Z_ref")
    if Z.shape[1] != Z_ref.shape[1]:
        raise ValueError(
            f"Z and Z_ref must have the same number of features, got {Z.shape[1]} and {Z_ref.shape[1]}"
        )
    if Z.device != Z_ref.device:
        raise ValueError(f"Z and Z_ref must be on the same device, got {Z.device} and {Z_ref.device}")


def net_outputs(net: Callable[[Tensor], Tensor], Z: Tensor, name: str = "Z") -> Tensor:
    """``net(Z)`` as a vector of ``n`` finite values (an ``(n, 1)`` output is flattened)."""
    t = net(Z)
    if not isinstance(t, Tensor) or t.shape not in ((Z.shape[0],), (Z.shape[0], 1)):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"net({name}) must return one value per sample, shape ({Z.shape[0]}, 1), got {shape}")
    t = t.reshape(-1)
    if not torch.isfinite(t).all():
        raise ValueError(
            f"net({name}) returned non-finite values (inf or nan): the network has diverged; "
            "lower the learning rate or check the inputs"
        )
    return t


def log_mean_exp(t: Tensor) -> Tensor:
    r"""$\log\frac1n\sum_i e^{t_i}$ by ``logsumexp`` (no overflow for large $t$)."""
    return torch.logsumexp(t, dim=0) - math.log(t.shape[0])


def DV(Z: Tensor, Z_ref: Tensor, net: Callable[[Tensor], Tensor]) -> Tensor:
    r"""Donsker–Varadhan bound $\overline{t(Z)} - \log\overline{e^{t(Z')}}$, a scalar tensor with a graph."""
    check_pair(Z, Z_ref)
    return net_outputs(net, Z).mean() - log_mean_exp(net_outputs(net, Z_ref, "Z_ref"))


def NWJ(Z: Tensor, Z_ref: Tensor, net: Callable[[Tensor], Tensor]) -> Tensor:
    r"""Nguyen–Wainwright–Jordan bound $\overline{t(Z)} - \overline{e^{t(Z') - 1}}$ (unbiased on minibatches)."""
    check_pair(Z, Z_ref)
    return net_outputs(net, Z).mean() - torch.exp(net_outputs(net, Z_ref, "Z_ref") - 1).mean()


def InfoNCE(Z: Tensor, net: Callable[[Tensor], Tensor], x_dim: int) -> Tensor:
    r"""InfoNCE bound on $I(X;Y)$ from the $K$ pairs $Z_i = (x_i, y_i)$, $x_i$ = the first ``x_dim`` features.

    The critic is evaluated on all $K^2$ pairs $(x_i, y_j)$; row $i$ of the score matrix holds the
    positive pair on its diagonal and $K-1$ negatives. The value never exceeds $\log K$.
    """
    check_samples(Z, "Z")
    if isinstance(x_dim, bool) or not isinstance(x_dim, int) or not 0 < x_dim < Z.shape[1]:
        raise ValueError(f"x_dim must be an int in [1, {Z.shape[1] - 1}], got {x_dim!r}")
    K = Z.shape[0]
    x, y = Z[:, :x_dim], Z[:, x_dim:]
    pairs = torch.cat((x.repeat_interleave(K, dim=0), y.repeat(K, 1)), dim=1)  # row i*K + j is (x_i, y_j)
    scores = net_outputs(net, pairs, "Z pairs").reshape(K, K)
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(K)


def make_summary_writer(writer_params: Optional[Dict[str, Any]]) -> Any:
    """A TensorBoard ``SummaryWriter(**writer_params)``, or ``None`` (no params, or tensorboard missing)."""
    if writer_params is None:
        return None
    if not isinstance(writer_params, dict):
        raise TypeError(f"writer_params must be a dict or None, got {type(writer_params).__name__}")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: DVTrainer logs to its history only", stacklevel=3)
        return None
    return SummaryWriter(**writer_params)


class DVTrainer:
    r"""Train ``net`` to maximise a lower bound on $D(P_Z\|P_{Z'})$ and report the estimate.

    ``DVTrainer(Z, Z_ref, net, n_iters_per_epoch, writer_params=None, **adam_kwargs)``: each epoch
    draws one random permutation of ``Z`` and one of ``Z_ref`` and splits each into
    ``n_iters_per_epoch`` minibatches (sizes differ by at most one), so every sample is used exactly
    once per epoch; each minibatch is one Adam step (``adam_kwargs`` go to ``torch.optim.Adam``) on
    the negative bound. :meth:`step` returns the bound on all of ``Z``, ``Z_ref`` after training.

    Keyword-only options beyond the course's signature:

    * ``bound``: ``"dv"`` (default), ``"mine"`` (DV with the bias-corrected gradient; the moving
      average has rate ``ema_rate``), ``"nwj"``, or ``"infonce"`` (uses only ``Z``; the first ``x_dim``
      features are $X$, default half of them; the estimate averages the bound over a fixed split of
      ``Z`` into ``n_iters_per_epoch`` batches).
    * ``ref_sampler``: a function ``generator -> Z_ref`` called at the start of every epoch to draw fresh
      reference samples (e.g. a new shuffle of the pairs), a cure for over-fitting one fixed ``Z_ref``.
    * ``validation``: held-out ``(Z_val, Z_ref_val)``; its estimate is recorded in ``history["val_estimate"]``.
    * ``seed`` (the permutations), ``progress`` (``None``: a tqdm bar for runs of at least 2,000 steps).

    ``history``: ``"loss"`` (negative bound of every minibatch), ``"epoch"``, ``"estimate"`` (and
    ``"val_estimate"``) after every call of :meth:`step`. With ``writer_params`` (a dict, possibly
    empty) and tensorboard installed, the same numbers go to ``SummaryWriter(**writer_params)``.
    """

    def __init__(
        self,
        Z: Tensor,
        Z_ref: Tensor,
        net: nn.Module,
        n_iters_per_epoch: int,
        writer_params: Optional[Dict[str, Any]] = None,
        *,
        bound: str = "dv",
        ema_rate: float = 0.01,
        x_dim: Optional[int] = None,
        ref_sampler: Optional[Callable[[torch.Generator], Tensor]] = None,
        validation: Optional[Tuple[Tensor, Tensor]] = None,
        seed: int = 0,
        progress: Optional[bool] = None,
        **adam_kwargs: Any,
    ) -> None:
        check_pair(Z, Z_ref)
        check_module(net, "net")
        check_count(n_iters_per_epoch, "n_iters_per_epoch")
        for name, data in (("Z", Z), ("Z_ref", Z_ref)):
            if data.shape[0] < n_iters_per_epoch:
                raise ValueError(
                    f"{name} has {data.shape[0]} samples, fewer than n_iters_per_epoch={n_iters_per_epoch} "
                    "minibatches: use fewer iterations per epoch or more samples"
                )
        check_choice(bound, "bound", BOUNDS)
        if isinstance(ema_rate, bool) or not isinstance(ema_rate, (int, float)) or not 0 < ema_rate <= 1:
            raise ValueError(f"ema_rate must be a float in (0, 1], got {ema_rate!r}")
        if bound == "infonce":
            x_dim = Z.shape[1] // 2 if x_dim is None else x_dim
            if isinstance(x_dim, bool) or not isinstance(x_dim, int) or not 0 < x_dim < Z.shape[1]:
                raise ValueError(f"x_dim must be an int in [1, {Z.shape[1] - 1}], got {x_dim!r}")
        if ref_sampler is not None:
            check_callable(ref_sampler, "ref_sampler")
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (Z_val, Z_ref_val)")
            check_pair(*validation)
            if validation[0].shape[1] != Z.shape[1]:
                raise ValueError("validation samples must have as many features as Z")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")

        self.Z, self.Z_ref, self.net = Z, Z_ref, net
        self.n_iters_per_epoch = n_iters_per_epoch
        self.bound, self.ema_rate, self.x_dim = bound, float(ema_rate), x_dim
        self.ref_sampler, self.validation, self.progress = ref_sampler, validation, progress
        self.optimizer = torch.optim.Adam(net.parameters(), **adam_kwargs)
        self.generator = torch.Generator().manual_seed(seed)
        self.writer = make_summary_writer(writer_params)
        self.log_avg_exp: Optional[Tensor] = None  # MINE: log of the moving average of mean e^{t(Z')}
        self.n_iter = self.n_epoch = 0
        self.history: Dict[str, List[float]] = {"loss": [], "epoch": [], "estimate": [], "val_estimate": []}

    # ----------------------------------------------------------------- objective
    def bound_value(self, Z: Tensor, Z_ref: Tensor) -> Tensor:
        """The trainer's bound on the given samples (a scalar with a graph; InfoNCE ignores ``Z_ref``)."""
        if self.bound == "nwj":
            return NWJ(Z, Z_ref, self.net)
        if self.bound == "infonce":
            return InfoNCE(Z, self.net, self.x_dim)
        return DV(Z, Z_ref, self.net)

    def mine_objective(self, Z: Tensor, Z_ref: Tensor) -> Tuple[Tensor, Tensor]:
        r"""MINE's surrogate and the minibatch DV value.

        The moving average $m \leftarrow (1-\alpha)\,m + \alpha\,\overline{e^{t(Z'_B)}}$ (kept as
        $\log m$ for stability; the first batch initialises it) replaces the minibatch denominator:
        the surrogate $\overline{t(Z_B)} - \overline{e^{t(Z'_B)}}/m$ has the gradient
        $\nabla\overline{t(Z_B)} - \nabla\overline{e^{t(Z'_B)}}/m$, whereas the DV bound's is the
        same with $m$ replaced by the minibatch mean itself (a ratio of averages, biased).
        """
        check_pair(Z, Z_ref)
        t = net_outputs(self.net, Z)
        log_batch = log_mean_exp(net_outputs(self.net, Z_ref, "Z_ref"))
        new = log_batch.detach()
        a = self.ema_rate
        if self.log_avg_exp is None or a == 1:
            self.log_avg_exp = new
        else:
            self.log_avg_exp = torch.logaddexp(self.log_avg_exp + math.log1p(-a), new + math.log(a))
        surrogate = t.mean() - torch.exp(log_batch - self.log_avg_exp)
        return surrogate, t.mean().detach() - new

    # ------------------------------------------------------------------ training
    def batches(self, n: int) -> Sequence[Tensor]:
        """``n_iters_per_epoch`` disjoint random index sets that together cover ``range(n)``."""
        order = torch.randperm(n, generator=self.generator)
        return torch.tensor_split(order, self.n_iters_per_epoch)

    def train_epoch(self) -> None:
        if self.ref_sampler is not None:
            self.Z_ref = self.ref_sampler(self.generator)
            check_pair(self.Z, self.Z_ref)
            if self.Z_ref.shape[0] < self.n_iters_per_epoch:
                raise ValueError(f"ref_sampler returned {self.Z_ref.shape[0]} samples, fewer than "
                                 f"n_iters_per_epoch={self.n_iters_per_epoch}")
        device = self.Z.device
        pairs = zip(self.batches(self.Z.shape[0]), self.batches(self.Z_ref.shape[0]))
        for index, index_ref in pairs:
            Z_b, Z_ref_b = self.Z[index.to(device)], self.Z_ref[index_ref.to(device)]
            self.optimizer.zero_grad()
            if self.bound == "mine":
                surrogate, value = self.mine_objective(Z_b, Z_ref_b)
            else:
                surrogate = self.bound_value(Z_b, Z_ref_b)
                value = surrogate.detach()
            (-surrogate).backward()
            self.optimizer.step()
            self.n_iter += 1
            self.history["loss"].append(-float(value))
            if self.writer is not None:
                self.writer.add_scalar("Loss/train", -float(value), global_step=self.n_iter)
        self.n_epoch += 1

    @torch.no_grad()
    def estimate(self, Z: Optional[Tensor] = None, Z_ref: Optional[Tensor] = None) -> float:
        """The bound on all of ``Z``, ``Z_ref`` (default: the training data), in eval mode, without training."""
        Z = self.Z if Z is None else Z
        Z_ref = self.Z_ref if Z_ref is None else Z_ref
        was_training = self.net.training
        self.net.eval()
        try:
            if self.bound != "infonce":
                return float(DV(Z, Z_ref, self.net) if self.bound in ("dv", "mine") else NWJ(Z, Z_ref, self.net))
            chunks = torch.tensor_split(Z, self.n_iters_per_epoch)  # InfoNCE bounds batches of K pairs
            return sum(float(InfoNCE(c, self.net, self.x_dim)) for c in chunks) / len(chunks)
        finally:
            self.net.train(was_training)

    def step(self, epochs: int = 1) -> float:
        """Train for ``epochs`` epochs, then return (and record) the estimate on all the data."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        show = self.progress if self.progress is not None else epochs * self.n_iters_per_epoch >= PROGRESS_MIN_ITERS
        self.net.train()
        for _ in tqdm(range(epochs), desc=f"{self.bound} epochs", disable=not show, leave=False):
            self.train_epoch()
        estimate = self.estimate()
        self.history["epoch"].append(self.n_epoch)
        self.history["estimate"].append(estimate)
        if self.validation is not None:
            self.history["val_estimate"].append(self.estimate(*self.validation))
        if self.writer is not None:
            self.writer.add_scalar("Estimate", estimate, global_step=self.n_epoch)
        return estimate


def plot_net_2(net: Callable[[Tensor], Tensor], xlim: Tuple[float, float] = (-5, 5),
               ylim: Tuple[float, float] = (-5, 5), grid: int = 50, ax: Any = None, **pcolormesh_kwargs: Any) -> Any:
    """Heat map of a network $t(x, y)$ of two inputs over ``xlim`` x ``ylim``; returns the matplotlib axes.

    The network is evaluated once on the ``grid`` x ``grid`` points (on the device and dtype of its
    first parameter, if it has one). matplotlib is imported only here.
    """
    import matplotlib.pyplot as plt

    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    kwargs = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    x = torch.linspace(*xlim, grid, **kwargs)
    y = torch.linspace(*ylim, grid, **kwargs)
    xx, yy = torch.meshgrid(x, y, indexing="xy")
    with torch.no_grad():
        t = net_outputs(net, torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1), "grid")
    ax = plt.gca() if ax is None else ax
    options = {"cmap": "RdBu_r", "shading": "auto", **pcolormesh_kwargs}
    mesh = ax.pcolormesh(xx.cpu().numpy(), yy.cpu().numpy(), t.reshape(grid, grid).cpu().numpy(), **options)
    ax.figure.colorbar(mesh, ax=ax, label="$t(x, y)$")
    ax.set(xlabel="$x$", ylabel="$y$", title="Heat map of $t(x, y)$")
    return ax
