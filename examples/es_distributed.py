"""Train the digits MLP with evolution strategies spread over K processes (torch.distributed).

Every process holds the same model, the same minibatches and the same NoiseTable; each
evaluates its share of the population, and the processes exchange only (offset, loss)
values, so every rank takes exactly the same optimizer step (Salimans et al., 2017).

    torchrun --standalone --nproc_per_node=2 examples/es_distributed.py --steps 200
    torchrun --standalone --nproc_per_node=1 examples/es_distributed.py   # K = 1
    python examples/es_distributed.py                                      # no torchrun at all

Several machines: the same command on each, with a shared rendezvous point instead of
``--standalone`` (see Chapter 3, "ES at scale"):

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_id=es42 --rdzv_backend=c10d \
             --rdzv_endpoint=node0.example.org:29400 examples/es_distributed.py

gloo is used on CPU, NCCL when CUDA is available. Rank 0 logs loss, test accuracy, time
per step and the bytes each rank exchanged per step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradlab import NoiseTable, accuracy, assign_grads, build_mlp, es_grad_model, load_digits_split  # noqa: E402
from gradlab.es.distributed import allreduce_bytes, exchange_bytes  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--samples", type=int, default=200, help="antithetic draws N per step (all ranks together)")
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=2e-2, help="Adam learning rate")
    parser.add_argument("--hidden", type=int, nargs="+", default=[32], help="hidden widths of the MLP")
    parser.add_argument("--batch", type=int, default=256, help="training examples per step")
    parser.add_argument("--table-size", type=int, default=2**24, help="normals in the shared noise table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--log-every", type=int, default=20)
    return parser.parse_args()


def setup() -> tuple:
    """(group, rank, world size, device): torch.distributed under torchrun, else one plain process."""
    if "RANK" not in os.environ:  # launched without torchrun
        return None, 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.group.WORLD, dist.get_rank(), dist.get_world_size(), device


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    group, rank, world, device = setup()
    log = print if rank == 0 else (lambda *a, **k: None)

    x_train, y_train, x_test, y_test = load_digits_split(seed=args.seed, device=device)
    torch.manual_seed(args.seed)  # the same initial model on every rank
    model = build_mlp(64, args.hidden, 10).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    table = NoiseTable(args.table_size, seed=args.seed, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = torch.Generator().manual_seed(args.seed + 1)  # the same minibatches on every rank
    noise = torch.Generator().manual_seed(args.seed + 2)  # the same offsets on every rank

    traffic = exchange_bytes(args.samples, world)
    log(f"{world} process(es) on {device}, {torch.get_num_threads()} thread(s) each; MLP with {num_params:,} "
        f"parameters; N = {args.samples} draws per step; noise table of {args.table_size:,} normals")
    log(f"per step and rank: sends {traffic['sent']:,} B and receives {traffic['received']:,} B of "
        f"(offset, loss) values; a ring all-reduce of the gradient would move "
        f"{allreduce_bytes(num_params, world):,} B each way")
    log(f"{'step':>6} {'loss':>8} {'test acc':>9} {'ms/step':>8} {'bytes/step':>11}")
    elapsed = 0.0
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        idx = torch.randint(len(x_train), (args.batch,), generator=batches).to(device)
        grad = es_grad_model(
            model, loss_fn, x_train[idx], y_train[idx], sigma=args.sigma, num_samples=args.samples,
            generator=noise, noise=table, group=group,
        )
        optimizer.zero_grad()
        assign_grads(model, grad)
        optimizer.step()
        elapsed += time.perf_counter() - start
        if step % args.log_every == 0 or step == args.steps:
            with torch.no_grad():
                loss = loss_fn(model(x_train), y_train).item()
            log(f"{step:>6} {loss:>8.4f} {accuracy(model, x_test, y_test):>9.3f} "
                f"{1000 * elapsed / step:>8.1f} {traffic['sent'] + traffic['received']:>11,}")

    if group is not None:  # every rank took the same steps: check it with one small all_gather
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
        mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), device=device)).sum()])
        everyone = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(everyone, mine)
        log(f"parameters identical on all {world} ranks: {all(torch.equal(e, everyone[0]) for e in everyone)}")
        dist.destroy_process_group()
    log(f"done: {elapsed:.1f} s of ES steps, test accuracy {accuracy(model, x_test, y_test):.3f}")


if __name__ == "__main__":
    main()
