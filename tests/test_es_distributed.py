"""Distributed ES: 2 gloo processes on 127.0.0.1 return the same estimate as one process."""
from __future__ import annotations

import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradlab import NoiseTable, es_grad_model
from gradlab.es.distributed import allreduce_bytes, exchange_bytes, member_share

F64 = torch.float64
NUM_SAMPLES = 7  # not a multiple of 2: the shares differ in size


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 6, generator=g, dtype=F64), torch.randint(0, 3, (12,), generator=g)
    return model, x, y


def estimate(group=None, table_seed=0, rank=None, method="antithetic", fast=True, chunk_size=None):
    model, x, y = problem()
    return es_grad_model(
        model, nn.CrossEntropyLoss(), x, y, sigma=0.05, num_samples=NUM_SAMPLES, method=method,
        rank=rank, fast=fast, chunk_size=chunk_size, noise=NoiseTable(4000, table_seed),
        generator=torch.Generator().manual_seed(5), group=group,
    )


CASES = {  # name -> keyword arguments of estimate()
    "dense": {},
    "low rank": {"rank": 2},
    "forward, chunks of 2": {"method": "forward", "chunk_size": 2},
    "generic path": {"fast": False},
}


def worker(rank: int, world: int, port: int, folder: str) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        torch.set_num_threads(1)
        out = {name: estimate(group=dist.group.WORLD, **kw) for name, kw in CASES.items()}
        try:  # each rank builds a different table
            estimate(group=dist.group.WORLD, table_seed=rank)
        except ValueError as error:
            out["mismatch"] = str(error)
        try:
            estimate(group="world")
        except TypeError as error:
            out["bad group"] = str(error)
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - report to the parent instead of hanging it
        out = traceback.format_exc()
    torch.save(out, f"{folder}/rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(worker, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return {rank: torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)}


def test_two_ranks_agree_with_each_other_and_with_one_process(two_ranks):
    for rank in (0, 1):
        assert isinstance(two_ranks[rank], dict), two_ranks[rank]
    for name, kw in CASES.items():
        single = estimate(**kw)
        assert torch.equal(two_ranks[0][name], two_ranks[1][name]), name
        torch.testing.assert_close(two_ranks[0][name], single, rtol=1e-10, atol=1e-12, msg=name)
    assert not torch.allclose(estimate(), estimate(table_seed=1))  # the table matters


def test_mismatched_tables_and_bad_groups_raise_clear_errors(two_ranks):
    for rank in (0, 1):
        assert "disagree on noise table seed" in two_ranks[rank]["mismatch"]
        assert "same size and seed on every rank" in two_ranks[rank]["mismatch"]
        assert "group must be a torch.distributed.ProcessGroup" in two_ranks[rank]["bad group"]


def test_group_errors_in_a_single_process():
    model, x, y = problem()
    with pytest.raises(ValueError, match="group needs noise=gradlab.NoiseTable"):
        es_grad_model(model, nn.CrossEntropyLoss(), x, y, sigma=0.1, num_samples=2, group=object())
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        estimate(group=object())


def test_shares_cover_the_population_once_and_bytes_are_counted():
    for n in (1, 2, 7, 1000):
        for world in (1, 2, 3, 8):
            members = [m for r in range(world) for m in range(*member_share(n, r, world))]
            assert members == list(range(n))
    assert exchange_bytes(1000, 2) == {"sent": 12000, "received": 12000}  # 500 x (offset + 2 losses) x 8 B
    assert allreduce_bytes(301_066, 2) == 1_204_264


def test_example_script_trains_in_one_plain_process():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "es_distributed.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--steps", "4", "--samples", "10", "--table-size", "100000", "--log-every", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 process(es)" in proc.stdout and "test acc" in proc.stdout and "done:" in proc.stdout, proc.stdout


@pytest.mark.parametrize("n, world", [(10, 4), (7, 3), (1001, 2)])
def test_exchange_bytes_at_an_uneven_n_hold_the_largest_share(n, world):
    """Blocks are padded to the largest rank's share (ceil(n / world) members of offset + losses, float64 each):
    at an uneven N the floor would leave the last member of the larger shares out."""
    largest = max(stop - start for start, stop in (member_share(n, r, world) for r in range(world)))
    for losses in (1, 2):
        block = 8 * (1 + losses) * largest
        assert exchange_bytes(n, world, losses) == {"sent": block * (world - 1), "received": block * (world - 1)}
