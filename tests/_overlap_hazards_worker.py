"""Worker of ``test_optim_overlap_hazards.py``: what users do around ``backward()`` and ``step()``
with ``DistributedOptimizer(overlap=True)`` (gradient hooks on), against ``overlap=False``.

Started ``n`` times with torchrun's environment variables: ``argv[1]`` the output file, ``argv[2]``
the tests folder, ``argv[3:]`` the case names to run (all when none). Each case runs the same
plain float64 loop twice, ``overlap=False`` then ``overlap=True``; rank 0 writes ``{case:
{"plain": [n, D], "overlap": [n, D], "overlapping": bool}}`` to ``argv[1]``.

Hazards (``HAZARDS``), any combination per case:

- ``collective``: ``dist.all_reduce(loss)`` on the default group between ``backward()`` and
  ``step()`` (logging), while the optimizer's bucket steps run on its thread;
- ``lr``: ``lr`` (every third step), ``momentum`` and ``weight_decay`` (once) set in
  ``param_groups`` between ``backward()`` and ``step()``;
- ``mask``: gradients masked between ``backward()`` and ``step()`` with a mask that differs per
  rank and step: replaced (``p.grad = p.grad * mask``) on even steps, in place on odd ones;
- ``clamp``: ``p.clamp_()`` under ``no_grad`` after ``step()`` on every rank;
- ``ema``: rank 0 only copies its EMA weights into the model after ``step()`` on odd steps.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from peergrad.comm import distributed
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

STEPS = 7
HAZARDS = ("collective", "lr", "mask", "clamp", "ema")
TINY = {"first_bucket_cap_mb": 100 / 2**20, "bucket_cap_mb": 300 / 2**20}
# allreduce: one bucket per param group, the layout of overlap=False, so that its all-reduce
# sums every coordinate in the same order (gloo's ring order depends on the offset in the
# message) and the comparison can be bit-exact on any number of processes
WHOLE = {"first_bucket_cap_mb": 1000.0, "bucket_cap_mb": 1000.0}

#: case name -> (algorithm, topology, options, buckets, hazards)
CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, float], tuple[str, ...]]] = {}
for _name, _topo, _opts, _buckets in [
    ("allreduce", "ring", {"momentum": 0.9, "weight_decay": 1e-3}, WHOLE),
    ("dpsgd", "one-peer-exponential", {"momentum": 0.9, "weight_decay": 1e-3}, TINY),
    ("gradient-tracking", "ring", {"weight_decay": 1e-3}, TINY),
]:
    for _hazard in HAZARDS:
        if _name == "allreduce" and _hazard in ("clamp", "ema"):
            continue  # no message leaves before the gradient: nothing to check (in "-all")
        CASES[f"{_name}-{_hazard}"] = (_name, _topo, _opts, _buckets, (_hazard,))
    CASES[f"{_name}-all"] = (_name, _topo, _opts, _buckets, HAZARDS)
CASES["allreduce-tiny-buckets-all"] = (
    "allreduce",
    "ring",
    CASES["allreduce-all"][2],
    TINY,
    HAZARDS,
)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 3)
    )
    return model.double()


def run(case: str, overlap: bool, n: int) -> tuple[torch.Tensor | None, bool]:
    name, topo, options, buckets, hazards = CASES[case]
    comm = distributed.DistributedCommunicator(make_topology(topo, n))
    rank = comm.rank
    model = make_model()
    opt = DistributedOptimizer(
        model.parameters(), name, comm, overlap=overlap, lr=0.05, **buckets, **options
    )
    ema = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(100 + rank)
    loss_fn = nn.CrossEntropyLoss()
    for k in range(STEPS):
        xb = torch.randn(5, 6, generator=gen, dtype=torch.float64)
        yb = torch.randint(0, 3, (5,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        if "collective" in hazards:  # logging: the most common line of a torchrun script
            logged = loss.detach().clone()
            distributed.dist.all_reduce(logged)
        if "lr" in hazards:
            for group in opt.param_groups:
                if k % 3 == 2:
                    group["lr"] *= 0.5
                if k == 4:
                    group["momentum"] = 0.5
                    group["weight_decay"] = 1e-2
        if "mask" in hazards:
            mask_gen = torch.Generator().manual_seed(1000 * k + rank)
            for p in model.parameters():
                mask = (torch.rand(p.shape, generator=mask_gen) > 0.3).double()
                if k % 2 == 0:
                    p.grad = p.grad * mask
                else:
                    p.grad.mul_(mask)
        opt.step()
        with torch.no_grad():
            if "clamp" in hazards:
                for p in model.parameters():
                    p.clamp_(-0.25, 0.25)
            for e, p in zip(ema, model.parameters(), strict=True):
                e.mul_(0.8).add_(p, alpha=0.2)
            if "ema" in hazards and rank == 0 and k % 2 == 1:
                for e, p in zip(ema, model.parameters(), strict=True):
                    p.copy_(e)
    overlapping = opt.overlapping
    opt.synchronize()
    return comm.gather(opt.flat_params.detach().clone()), overlapping


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n = distributed.dist.get_world_size()
    cases = sys.argv[3:] or list(CASES)
    results = {}
    for case in cases:
        plain, _ = run(case, False, n)
        overlap, overlapping = run(case, True, n)
        results[case] = {"plain": plain, "overlap": overlap, "overlapping": overlapping}
    if distributed.dist.get_rank() == 0:
        torch.save(results, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
