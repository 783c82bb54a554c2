"""Worker of ``test_average_parameters.py``: a few D-PSGD steps through ``DistributedOptimizer``,
then ``average_parameters()`` without a ``synchronize()`` first: with overlap off, with the
default (``overlap=None``) and with overlap on (``overlap=True``: the gossip of x in flight and
the buckets stepped from the gradient hooks).

Started ``WORLD_SIZE`` times with torchrun's environment variables. Rank 0 writes
``{mode: {"before": [n, D], "after": [n, D], "module": [n, D], "bytes": [n, 2], "D": int}}`` to
``argv[1]``: every worker's flat parameters before and after the call, the module's parameters
(flattened in the optimizer's order) after it, and ``bytes_sent`` just before and after; with 4
workers, under ``"buffers"``, the BatchNorm running means ``[n, features]`` of every worker per
``(buffers, buffers_every, steps)`` (see :func:`buffer_modes`).
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from peergrad.comm import distributed
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

MODES = {"plain": False, "auto": None, "hooks": True}
STEPS = 5


def run(comm: distributed.DistributedCommunicator, overlap: bool | None) -> dict[str, object]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    opt = DistributedOptimizer(
        model.parameters(),
        "dpsgd",
        comm,
        overlap=overlap,
        lr=0.3,
        momentum=0.9,
        first_bucket_cap_mb=40 / 2**20,  # several buckets: the hooks step them one by one
        bucket_cap_mb=100 / 2**20,
    )
    gen = torch.Generator().manual_seed(100 + comm.rank)  # each worker its own data
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(STEPS):
        xb = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        yb = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    # no synchronize here: average_parameters must drain what is in flight itself
    before = opt.flat_params.clone()
    bytes_before = comm.bytes_sent.clone()
    opt.average_parameters()
    bytes_after = comm.bytes_sent.clone()
    module = torch.cat([p.detach().reshape(-1) for p in opt.params])[None]
    rows = {
        "before": comm.all_gather(before, account=False)[0],
        "after": comm.all_gather(opt.flat_params.clone(), account=False)[0],
        "module": comm.all_gather(module, account=False)[0],
        "bytes": comm.all_gather(torch.cat([bytes_before, bytes_after])[None], account=False)[0],
        "D": before.shape[1],
        "overlapping": opt.overlapping,
    }
    opt.close()
    return rows


def buffer_modes() -> dict[tuple[str, int, int], torch.Tensor | None]:
    """BatchNorm running statistics of every worker after ``steps`` steps of D-PSGD, per
    ``(buffers, buffers_every, steps)``: ``[n, features]`` running means (rank 0; None
    elsewhere)."""
    out = {}
    for mode, every, steps in [
        ("local", 1, 3),
        ("average", 1, 3),
        ("broadcast", 1, 3),
        ("average", 2, 3),
        ("average", 2, 4),
    ]:
        comm = distributed.DistributedCommunicator(make_topology("ring", 4))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
        opt = DistributedOptimizer(
            model.parameters(), "dpsgd", comm, module=model, buffers=mode, buffers_every=every
        )
        gen = torch.Generator().manual_seed(100 + comm.rank)
        for _ in range(steps):
            xb = torch.randn(5, 6, generator=gen)
            yb = torch.randint(0, 3, (5,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        opt.synchronize()
        out[(mode, every, steps)] = comm.gather(model[1].running_mean[None].clone())
    return out


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n = int(os.environ["WORLD_SIZE"])
    comm = distributed.DistributedCommunicator(make_topology("ring", n))
    results: dict[str, object] = {mode: run(comm, overlap) for mode, overlap in MODES.items()}
    if n == 4:
        results["buffers"] = buffer_modes()
    if comm.rank == 0:
        torch.save(results, sys.argv[1])
    comm.barrier()
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
