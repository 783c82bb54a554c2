"""Worker of ``test_torch_local_sgd.py``: PyTorch's own local SGD and peergrad's on the same
model, data and options, one worker per process (gloo, float64).

PyTorch's side, per case of :data:`TORCH_CASES`:

- ``averager``: ``torch.optim.SGD`` on each process's own model, then
  ``PeriodicModelAverager(period=K, warmup_steps=W).average_parameters`` after every step;
- ``ddp``: ``DistributedDataParallel`` with ``post_localSGD_hook`` (``PostLocalSGDState(
  process_group=None, subgroup=..., start_localSGD_iter=W, post_local_gradient_allreduce=...)``)
  and ``PostLocalSGDOptimizer(SGD, PeriodicModelAverager(period=K, warmup_steps=W))``.

peergrad's side, per case of :data:`PEERGRAD_CASES`: ``DistributedOptimizer`` in a plain
``loss.backward(); opt.step()`` loop. Every rank writes ``argv[1]/rank{r}.pt``: ``{case:
[STEPS, D] parameters after every step}`` (keys ``torch:NAME`` and ``peergrad:NAME``) and
``bytes:NAME`` / ``rounds:NAME`` of peergrad's communicator.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parameters_to_vector

from peergrad.comm import distributed
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

WORLD = 4
STEPS, BATCH, LR = 24, 8, 0.05
#: warm-up and period: model averages after iterations W + 1, W + 1 + K, ... = 5, 8, ..., 23
W, K = 4, 3
M0: dict[str, Any] = {"momentum": 0.0}
M9: dict[str, Any] = {"momentum": 0.9, "weight_decay": 1e-3}
NESTEROV: dict[str, Any] = {"momentum": 0.9, "nesterov": True}

#: name -> (kind, torch.optim.SGD options, the averager's warmup_steps, the hook's options)
TORCH_CASES: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {
    "averager-m0": ("averager", M0, W, {}),
    "averager-m9": ("averager", M9, W, {}),
    "averager-w0-m9": ("averager", M9, 0, {}),
    "post-local-m0": ("ddp", M0, W, {"post_local_gradient_allreduce": False}),
    "post-local-m9": ("ddp", M9, W, {"post_local_gradient_allreduce": False}),
    "post-local-nesterov": ("ddp", NESTEROV, W, {"post_local_gradient_allreduce": False}),
    # the hook's default post-local gradient all-reduce, in subgroups of one process each
    "post-local-subgroups1-m9": ("ddp", M9, W, {"subgroup": "size-1"}),
    # ... and in one subgroup of all processes (one node's default on a 4-GPU node)
    "post-local-subgroup-world-m9": ("ddp", M9, W, {"subgroup": "world"}),
}

#: the options of ``local-sgd`` that make it torch's PeriodicModelAverager around SGD
AVERAGER: dict[str, Any] = {
    "period": K,
    "warmup_steps": W,
    "block_momentum": 0.0,
    "local_state": "keep",
    "warmup_sync": "none",
    "first_sync": "immediate",
}
#: name -> (algorithm, options, overlap)
PEERGRAD_CASES: dict[str, tuple[str, dict[str, Any], bool | None]] = {
    "averager-m0": ("local-sgd", {**AVERAGER, **M0}, None),
    "averager-m9": ("local-sgd", {**AVERAGER, **M9}, None),
    "post-local-m0": ("post-local-sgd", {"period": K, "warmup_steps": W, **M0}, None),
    "post-local-m9": ("post-local-sgd", {"period": K, "warmup_steps": W, **M9}, None),
    "post-local-nesterov": ("post-local-sgd", {"period": K, "warmup_steps": W, **NESTEROV}, None),
    # the gradient hooks: the warm-up's gradient all-reduce per bucket, during backward()
    "post-local-m9-overlap": ("post-local-sgd", {"period": K, "warmup_steps": W, **M9}, True),
}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
    ).to(torch.float64)


def data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s minibatches: inputs ``[STEPS, BATCH, 5]``, labels ``[STEPS, BATCH]``."""
    gen = torch.Generator().manual_seed(100 + rank)
    xs = torch.randn(STEPS, BATCH, 5, generator=gen, dtype=torch.float64)
    ys = torch.randint(0, 3, (STEPS, BATCH), generator=gen)
    return xs, ys


LOSS = nn.CrossEntropyLoss()


def run_torch(name: str, rank: int) -> torch.Tensor:
    kind, sgd, warmup, hook = TORCH_CASES[name]
    model = make_model()
    xs, ys = data(rank)
    averager = PeriodicModelAverager(period=K, warmup_steps=warmup)
    if kind == "averager":
        net: nn.Module = model
        opt: Any = torch.optim.SGD(model.parameters(), lr=LR, **sgd)
    else:
        from torch.distributed.optim import PostLocalSGDOptimizer  # (imports torch.jit: slow)

        net = DistributedDataParallel(model)
        subgroup = hook.get("subgroup")
        if subgroup == "size-1":
            subgroup, _ = dist.new_subgroups(group_size=1)
        elif subgroup == "world":
            subgroup = dist.group.WORLD
        allreduce = hook.get("post_local_gradient_allreduce", True)
        state = PostLocalSGDState(
            process_group=None,
            subgroup=subgroup,
            start_localSGD_iter=W,
            post_local_gradient_allreduce=allreduce,
        )
        net.register_comm_hook(state, post_localSGD_hook)
        opt = PostLocalSGDOptimizer(torch.optim.SGD(net.parameters(), lr=LR, **sgd), averager)
    out = []
    for k in range(STEPS):
        opt.zero_grad()
        LOSS(net(xs[k]), ys[k]).backward()
        opt.step()
        if kind == "averager":
            averager.average_parameters(model.parameters())
        out.append(parameters_to_vector(model.parameters()).detach().clone())
    return torch.stack(out)


def run_peergrad(name: str, rank: int, world: int) -> tuple[torch.Tensor, float, int]:
    algorithm, options, overlap = PEERGRAD_CASES[name]
    model = make_model()
    xs, ys = data(rank)
    comm = distributed.DistributedCommunicator(make_topology("ring", world))
    opt = DistributedOptimizer(
        model.parameters(), algorithm, comm, overlap=overlap, lr=LR, **options
    )
    out = []
    for k in range(STEPS):
        opt.zero_grad()
        LOSS(model(xs[k]), ys[k]).backward()
        opt.step()
        out.append(parameters_to_vector(model.parameters()).detach().clone())
    opt.synchronize()
    return torch.stack(out), float(comm.bytes_sent[0]), comm.rounds


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[str, Any] = {}
    for name in TORCH_CASES:
        results[f"torch:{name}"] = run_torch(name, rank)
    for name in PEERGRAD_CASES:
        traj, sent, rounds = run_peergrad(name, rank, world)
        results[f"peergrad:{name}"] = traj
        results[f"bytes:{name}"], results[f"rounds:{name}"] = sent, rounds
    torch.save(results, Path(sys.argv[1]) / f"rank{rank}.pt")
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
