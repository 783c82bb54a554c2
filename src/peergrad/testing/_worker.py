"""A gloo worker of the conformance kit's distributed checks (started n times by
:mod:`peergrad.testing._distributed` with torchrun's environment variables).

``python -m peergrad.testing._worker SPEC OUT``: for every unit of the pickled SPEC, run on this
process's worker and gather on rank 0:

- ``engine_parity``: ``parity_steps`` steps of the kit's problem on a
  :class:`~peergrad.comm.distributed.DistributedCommunicator` (this rank's row of every tensor);
  ``{"x": [n, D], "bytes": [n], "rounds", "comm_time"}``;
- ``overlap``: ``DistributedOptimizer`` on a 4-layer MLP in tiny buckets, ``overlap_steps``
  steps with ``overlap=False``, with ``overlap=True``, and with ``overlap=True`` interrupted at
  half (``state_dict``, a new optimizer, ``load_state_dict``); the flat parameters ``[n, D]``,
  bytes, rounds, modelled time, the bucket count, whether buckets were stepped from the
  gradient hooks and whether any all-reduce crossed the wire.

An exception in a unit is recorded as ``{"error": ...}`` (with the rank) and the worker goes on
with the next unit. Rank 0 writes ``{key: row}`` to OUT with ``torch.save``.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from typing import Any

import torch
from torch import nn

from peergrad.comm import distributed
from peergrad.testing._run import (
    PARAM_SHAPES,
    Problem,
    StepError,
    bind,
    describe_exception,
    dim_of,
    run,
)
from peergrad.topology import make_topology

#: Tiny buckets: the 4-layer model is cut into several buckets.
BUCKETS = {"first_bucket_cap_mb": 100 / 2**20, "bucket_cap_mb": 300 / 2**20}


def _class(unit: dict[str, Any]) -> Any:
    obj: Any = importlib.import_module(unit["module"])
    for part in unit["qualname"].split("."):
        obj = getattr(obj, part)
    return obj


def _parity(unit: dict[str, Any], steps: int) -> dict[str, Any]:
    cls = _class(unit)
    dtype = getattr(torch, unit["dtype"])
    n = unit["n"]
    comm = distributed.DistributedCommunicator(make_topology(unit["topology"], n))
    shapes = unit.get("param_shapes") or PARAM_SHAPES
    alg = bind(cls(**unit["options"]), shapes)
    rank = comm.rank
    rp = Problem(n, dim_of(shapes), dtype).rows(slice(rank, rank + 1))
    x = rp.x0()
    run(alg, comm, x, rp, range(steps))
    return {
        "x": comm.gather(x.clone()),
        "bytes": _column(comm.gather(comm.bytes_sent[:, None].clone())),
        "rounds": comm.rounds,
        "comm_time": comm.simulated_comm_time_s,
    }


def _column(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t[:, 0].clone()


def _model(dtype: torch.dtype) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12),
        nn.Tanh(),
        nn.Linear(12, 10),
        nn.Tanh(),
        nn.Linear(10, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.to(dtype)


def _batches(rank: int, dtype: torch.dtype, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(steps):
        xb = torch.randn(5, 6, generator=gen).to(dtype)
        yb = torch.randint(0, 3, (5,), generator=gen)
        out.append((xb, yb))
    return out


def _train(opt: Any, model: nn.Module, data: list[Any], steps: range) -> None:
    loss_fn = nn.CrossEntropyLoss()
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


def _overlap(unit: dict[str, Any], steps: int) -> dict[str, Any]:
    from peergrad.optim import DistributedOptimizer

    cls = _class(unit)
    dtype = getattr(torch, unit["dtype"])
    topo = make_topology(unit["topology"], unit["n"])
    extra = {**BUCKETS, **unit.get("optimizer_options", {})}

    def optimizer(comm: Any, overlap: bool) -> tuple[Any, nn.Module]:
        model = _model(dtype)
        opt = DistributedOptimizer(
            model.parameters(), cls(**unit["options"]), comm, overlap=overlap, **extra
        )
        return opt, model

    plain_comm = distributed.DistributedCommunicator(topo, record_wire=True)
    overlap_comm = distributed.DistributedCommunicator(topo)
    data = _batches(plain_comm.rank, dtype, steps)
    plain, model = optimizer(plain_comm, False)
    _train(plain, model, data, range(steps))
    overlapped, model = optimizer(overlap_comm, True)
    _train(overlapped, model, data, range(steps))
    half = steps // 2
    first_comm = distributed.DistributedCommunicator(topo)
    first, model = optimizer(first_comm, True)
    _train(first, model, data, range(half))
    saved = first.state_dict()
    first.synchronize()
    resumed_comm = distributed.DistributedCommunicator(topo)
    resumed, model = optimizer(resumed_comm, True)
    resumed.load_state_dict(saved)
    _train(resumed, model, data, range(half, steps))
    for opt in (plain, overlapped, resumed):
        opt.synchronize()
    wire = plain_comm.wire_log or []
    allreduce = any(r.op == "all_reduce" for r in wire)
    flags = plain_comm.gather(torch.tensor([[float(allreduce)]]))

    def gather(comm: Any, t: torch.Tensor) -> Any:
        return comm.gather(t.detach().clone())

    return {
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
        "allreduce": bool(flags.max()) if flags is not None else allreduce,
    }


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    distributed.init_process_group(timeout_s=60)
    dist = distributed.dist
    rank = dist.get_rank()
    results: dict[str, Any] = {}
    for unit in spec["units"]:
        row: dict[str, Any]
        try:
            if unit["check"] == "engine_parity":
                row = _parity(unit, spec["parity_steps"])
            else:
                row = _overlap(unit, spec["overlap_steps"])
        except StepError as exc:
            row = {"error": f"worker {rank}: {exc}", "step": exc.step}
        except Exception as exc:
            row = {"error": f"worker {rank} raised {describe_exception(exc)}"}
        errors: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(errors, row.get("error"))
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            row = {"error": first, "step": row.get("step")}
        if rank == 0:
            results[unit["key"]] = row
    if rank == 0:
        torch.save(results, out_path)
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
