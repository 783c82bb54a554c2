"""Worker of the overlap-parity test: every registered algorithm through ``DistributedOptimizer``
in a plain loop, with overlap (buckets stepped from the gradient hooks) and without, and an
interrupted-and-resumed overlapped run.

Started 4 times by ``test_optim_overlap.py`` with torchrun's environment variables. Rank 0 writes
``{case: {"plain": [n, D], "overlap": [n, D], "resumed": [n, D], "bytes": ..., "buckets": int,
"overlapping": bool}}`` to ``argv[1]``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from peergrad.comm import distributed
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

sys.path.insert(0, sys.argv[2])
from _overlap_cases import CASES, STEPS, Case  # noqa: E402

# Tiny buckets: the 4-layer model below is cut into several buckets.
BUCKETS = {"first_bucket_cap_mb": 100 / 2**20, "bucket_cap_mb": 300 / 2**20}


def make_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12),
        nn.Tanh(),
        nn.Linear(12, 10),
        nn.Tanh(),
        nn.Linear(10, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    )
    return model.to(dtype)


def batches(rank: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(STEPS):
        xb = torch.randn(5, 6, generator=gen).to(dtype)
        yb = torch.randint(0, 3, (5,), generator=gen)
        out.append((xb, yb))
    return out


def run(
    case: Case, comm: Any, overlap: bool, steps: range, opt_model: Any = None
) -> tuple[DistributedOptimizer, nn.Module]:
    dtype = getattr(torch, case.dtype)
    if opt_model is None:
        model = make_model(dtype)
        opt = DistributedOptimizer(
            model.parameters(), case.algorithm, comm, overlap=overlap, **BUCKETS, **case.options
        )
    else:
        opt, model = opt_model
    loss_fn = nn.CrossEntropyLoss()
    data = batches(comm.rank, dtype)
    for k in steps:
        xb, yb = data[k]

        def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        if opt.algorithm.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
    return opt, model


def gather(comm: Any, t: torch.Tensor) -> torch.Tensor | None:
    return comm.gather(t.detach().clone())


def buffer_modes() -> dict[str, Any]:
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
        for xb, yb in batches(comm.rank, torch.float32)[:steps]:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        opt.synchronize()
        out[(mode, every, steps)] = comm.gather(model[1].running_mean[None].clone())
    return out


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    results = {}
    for case in CASES:
        topo = make_topology(case.topology, 4)

        def fresh(topo: Any = topo) -> distributed.DistributedCommunicator:
            return distributed.DistributedCommunicator(topo)

        plain_comm, overlap_comm = fresh(), fresh()
        plain, _ = run(case, plain_comm, False, range(STEPS))
        overlapped, _ = run(case, overlap_comm, True, range(STEPS))
        half = STEPS // 2
        first_comm = fresh()
        first, _ = run(case, first_comm, True, range(half))
        saved = first.state_dict()
        first.synchronize()
        resumed_comm = fresh()
        model = make_model(getattr(torch, case.dtype))
        resumed = DistributedOptimizer(
            model.parameters(),
            case.algorithm,
            resumed_comm,
            overlap=True,
            **BUCKETS,
            **case.options,
        )
        resumed.load_state_dict(saved)
        run(case, resumed_comm, True, range(half, STEPS), (resumed, model))
        for opt in (plain, overlapped, resumed):
            opt.synchronize()
        row = {
            "plain": gather(plain_comm, plain.flat_params),
            "overlap": gather(overlap_comm, overlapped.flat_params),
            "resumed": gather(resumed_comm, resumed.flat_params),
            "bytes_plain": gather(plain_comm, plain_comm.bytes_sent[:, None]),
            "bytes_overlap": gather(overlap_comm, overlap_comm.bytes_sent[:, None]),
            "time_plain": plain_comm.simulated_comm_time_s,
            "time_overlap": overlap_comm.simulated_comm_time_s,
            "rounds_plain": plain_comm.rounds,
            "rounds_overlap": overlap_comm.rounds,
            "buckets": len(overlapped.buckets),
            "overlapping": overlapped.overlapping,
        }
        if plain_comm.rank == 0:
            results[case.key] = row
    results["buffers"] = buffer_modes()
    if distributed.dist.get_rank() == 0:
        torch.save(results, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
