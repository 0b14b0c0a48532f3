r"""ES across processes with ``torch.distributed``: share the population, exchange (offset, fitness).

With a :class:`gradlab.es.noise.NoiseTable` held by every process, a population member's
perturbation is named by one integer, its offset in the table. :func:`gradlab.es_grad_model`
with ``group=`` then works like the distributed ES of Salimans et al. (2017):

1. every rank draws the offsets of all $N$ members from its ``generator`` (cheap:
   $N$ integers) and evaluates only its share, a contiguous block of members
   (:func:`member_share`). With the same generator seed on every rank this is the
   single-process population; with different seeds the ranks still agree with each
   other, because the offsets travel with the losses;
2. one ``all_gather`` (:func:`exchange`) hands every rank the (offset, losses) of every
   member: $N(1 + G)$ numbers, $G$ = 2 losses per member for antithetic sampling;
3. every rank rebuilds the same $\frac1N \sum_n w_n \varepsilon_n$ from the table.

Communication is $O(N)$ scalars per step, whatever the number $d$ of parameters, where
data-parallel training all-reduces $d$ floats (:func:`exchange_bytes` counts both). The
price is that every rank repeats the $O(Nd)$ reduction, cheap next to the $2N$ forward
passes it shares out. Before the first exchange, :func:`check_same_setup` compares the
tables (:meth:`~gradlab.es.noise.NoiseTable.checksum`) and the estimator's settings across
ranks and raises a clear error on any mismatch.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from .point import METHODS

__all__ = [
    "distributed_run",
    "check_group",
    "member_share",
    "check_same_setup",
    "exchange",
    "exchange_bytes",
    "allreduce_bytes",
]


def _dist() -> Any:
    """``torch.distributed``, imported on first use (``import gradlab`` does not load it)."""
    import torch.distributed

    return torch.distributed


def distributed_run(population: Any, group: Any) -> None:
    """Evaluate this rank's share of ``population``, exchange (offset, losses), accumulate every member.

    ``population`` is a :class:`gradlab.es.population.Population` whose noise source is a
    :class:`~gradlab.es.noise.NoiseTable`; afterwards every rank holds the same accumulated
    sum, so ``population.estimate()`` is the same full estimate on every rank.
    """
    me, world = check_group(group)
    check_same_setup(group, setup_of(population), population.device)
    first, last = member_share(population.num_samples, me, world)
    mine = [population.losses(population.draw(start, stop)) for start, stop in population.chunks(first, last)]
    groups = len(population.signs)
    mine = (
        torch.cat(mine, dim=1) if mine
        else torch.empty((groups, 0), dtype=population.dtype, device=population.device)
    )
    offsets, losses = exchange(population.offsets[first:last], mine, population.num_samples, group)
    for start, stop in population.chunks():
        population.accumulate(population.draw(start, stop, offsets), losses[:, start:stop])


def setup_of(population: Any) -> Dict[str, float]:
    """The numbers every rank must agree on before the exchange (table, estimator settings)."""
    table = population.table
    checksum = table.checksum()
    return {
        "noise table size": table.size, "noise table seed": table.seed,
        "noise table contents": float(checksum[2]), "noise table contents (weighted)": float(checksum[3]),
        "num_samples": population.num_samples, "sigma": population.sigma,
        "method": METHODS.index(population.method),
        "rank": population.rank or 0, "draw size": population.draw_size,
    }


def check_group(group: Any) -> Tuple[int, int]:
    """``(rank, world_size)`` of this process in ``group``, a ``torch.distributed`` process group."""
    dist = _dist()
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "group was given but torch.distributed is not initialised: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment)"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            "group must be a torch.distributed.ProcessGroup (e.g. torch.distributed.group.WORLD "
            f"or one from new_group), got {type(group).__name__}"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("group must contain this process (its rank in the group is -1)")
    return rank, dist.get_world_size(group)


def member_share(num_samples: int, rank: int, world_size: int) -> Tuple[int, int]:
    """The block ``[start, stop)`` of population members rank ``rank`` evaluates.

    Blocks are contiguous, in rank order, differ in size by at most one, and cover
    ``0 … num_samples - 1`` exactly once.
    """
    return rank * num_samples // world_size, (rank + 1) * num_samples // world_size


def check_same_setup(group: Any, settings: Dict[str, float], device: torch.device) -> None:
    """Raise ``ValueError`` unless every rank of ``group`` passed the same ``settings``.

    ``settings`` maps names (``"noise table size"``, ``"num_samples"``…) to numbers;
    one small ``all_gather`` compares them.
    """
    dist = _dist()
    mine = torch.tensor(list(settings.values()), dtype=torch.float64, device=device)
    world = dist.get_world_size(group)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    for other, theirs in enumerate(everyone):
        differs = [name for name, a, b in zip(settings, mine.tolist(), theirs.tolist()) if a != b]
        if differs:
            hint = (
                " (build the NoiseTable with the same size and seed on every rank)"
                if any("table" in name for name in differs)
                else ""
            )
            raise ValueError(
                f"es_grad_model: rank {dist.get_rank(group)} and rank {other} of the group "
                f"disagree on {', '.join(differs)}{hint}"
            )


def exchange(
    offsets: torch.Tensor, losses: torch.Tensor, num_samples: int, group: Any
) -> Tuple[torch.Tensor, torch.Tensor]:
    """All-gather this rank's ``offsets`` (n,) and ``losses`` (G, n); return everyone's, in member order.

    The result is ``(offsets (N,), losses (G, N))`` with member ``n``'s values at
    position ``n``: rank ``r``'s block is :func:`member_share` ``(N, r, world)``. One
    float64 ``all_gather`` of ``(1 + G) × ⌈N / world⌉`` numbers per rank (shorter
    blocks are padded); offsets are exact in float64 (tables hold far fewer than
    $2^{53}$ values).
    """
    dist = _dist()
    world = dist.get_world_size(group)
    groups, count = losses.shape
    width = -(-num_samples // world)
    packed = torch.zeros((1 + groups, width), dtype=torch.float64, device=losses.device)
    packed[0, :count] = offsets.to(device=losses.device, dtype=torch.float64)
    packed[1:, :count] = losses.to(torch.float64)
    blocks = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(blocks, packed, group=group)
    sizes = [stop - start for start, stop in (member_share(num_samples, r, world) for r in range(world))]
    everyone = torch.cat([block[:, :size] for block, size in zip(blocks, sizes)], dim=1)
    return everyone[0].to(torch.int64).cpu(), everyone[1:].to(losses.dtype)


def exchange_bytes(num_samples: int, world_size: int, num_losses: int = 2) -> Dict[str, int]:
    """Bytes one rank sends and receives per :func:`exchange`, next to a ring all-reduce of ``d`` floats.

    Returns ``{"sent": …, "received": …}`` for the (offset, losses) exchange (float64
    values, padded blocks); the settings check adds ``world_size`` × a few numbers.
    A ring all-reduce of a float32 gradient of ``d`` entries sends and receives
    ``2 (world_size - 1) / world_size × 4d`` bytes per rank (:func:`allreduce_bytes`).
    """
    block = 8 * (1 + num_losses) * -(-num_samples // world_size)
    return {"sent": block * (world_size - 1), "received": block * (world_size - 1)}


def allreduce_bytes(num_params: int, world_size: int, bytes_per_value: int = 4) -> int:
    """Bytes one rank sends (and receives) in a ring all-reduce of ``num_params`` values."""
    return 2 * (world_size - 1) * num_params * bytes_per_value // world_size

