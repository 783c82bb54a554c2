"""Worker of ``test_powersgd.py``: PyTorch's own PowerSGD (DDP + ``powerSGD_hook`` +
``torch.optim.SGD``) and peergrad's ``powersgd`` (``DistributedOptimizer``) on the same model,
data and options, one worker per process (gloo, float32; one case also in float64).

For every case of :data:`CASES`: first DDP runs :data:`STEPS` steps with the hook, recording the
order of the parameters in its gradient bucket (one bucket: the model is far below the bucket
cap); then a copy of the initial model runs the same steps under ``DistributedOptimizer`` with the
parameters given in that bucket order (peergrad's flat buffer is one bucket, see the module
docstring of ``peergrad.algorithms.powersgd``). Rank 0 writes ``{case: {...}}`` to ``argv[1]``:
the final parameters (flat, bucket order) of both, the error-feedback memories, the Qs, the bucket
orders seen by the hook, the hook's compression counters and peergrad's bytes and rounds.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import (
    PowerSGDState,
    powerSGD_hook,
)
from torch.nn.parallel import DistributedDataParallel

from peergrad.comm import distributed
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

STEPS, BATCH, LR = 20, 8, 0.1
#: name -> (peergrad options, the hook's PowerSGDState options, SGD options); float32, and
#: ``RANK2_FLOAT64`` repeats "rank2" in float64
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    # Gram-Schmidt (r' <= 2), warm start, heavy ball and weight decay
    "rank2": (
        {"rank": 2, "start_iter": 2},
        {"matrix_approximation_rank": 2, "start_powerSGD_iter": 2},
        {"momentum": 0.9, "weight_decay": 1e-3},
    ),
    # QR (r' = 4), a new random Q at every step (the seed generator's later draws), Nesterov
    "rank4-cold": (
        {"rank": 4, "start_iter": 3, "warm_start": False, "seed": 7},
        {
            "matrix_approximation_rank": 4,
            "start_powerSGD_iter": 3,
            "warm_start": False,
            "random_seed": 7,
        },
        {"momentum": 0.9, "nesterov": True},
    ),
    # biases compressed too (n x 1 matrices), epsilon in Gram-Schmidt, no error feedback
    "rank1-all": (
        {
            "rank": 1,
            "start_iter": 2,
            "min_compression_rate": 0.5,
            "orthogonalization_epsilon": 1e-3,
            "error_feedback": False,
        },
        {
            "matrix_approximation_rank": 1,
            "start_powerSGD_iter": 2,
            "min_compression_rate": 0.5,
            "orthogonalization_epsilon": 1e-3,
            "use_error_feedback": False,
        },
        {"momentum": 0.0},
    ),
}

RANK2_FLOAT64 = "rank2-float64"
DTYPES = {**dict.fromkeys(CASES, torch.float32), RANK2_FLOAT64: torch.float64}
CASES[RANK2_FLOAT64] = CASES["rank2"]


class Net(nn.Module):
    """Conv weight (8, 2, 3, 3) -> an 8 x 18 matrix, the shape of fc3's weight: the hook groups
    same-shaped matrices, so Q's random draws are not in parameter order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.fc1 = nn.Linear(128, 16)
        self.fc2 = nn.Linear(16, 18)
        self.fc3 = nn.Linear(18, 8)
        self.fc4 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1)
        for layer in (self.fc1, self.fc2, self.fc3):
            h = torch.tanh(layer(h))
        return self.fc4(h)


def run_case(name: str, rank: int, world: int) -> dict[str, Any]:
    ours, hook_options, sgd = CASES[name]
    dtype = DTYPES[name]
    torch.manual_seed(0)
    model = Net().to(dtype)
    model2 = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    xs = torch.randn(STEPS, BATCH, 2, 6, 6, generator=gen, dtype=dtype)
    ys = torch.randint(0, 3, (STEPS, BATCH), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    # PyTorch: DDP + powerSGD_hook + SGD
    ddp = DistributedDataParallel(model, bucket_cap_mb=100)
    state = PowerSGDState(process_group=None, **hook_options)
    index = {id(p): k for k, p in enumerate(model.parameters())}
    orders: list[list[int]] = []

    def hook(hook_state, bucket):  # noqa: ANN001 (DDP rejects string annotations)
        assert bucket.index() == 0 and bucket.is_last(), "more than one bucket"
        orders.append([index[id(p)] for p in bucket.parameters()])
        return powerSGD_hook(hook_state, bucket)

    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, **sgd)
    for k in range(STEPS):
        opt.zero_grad()
        loss_fn(ddp(xs[k]), ys[k]).backward()
        opt.step()
    order = orders[-1]
    params = list(model.parameters())
    x_torch = torch.cat([params[i].detach().reshape(-1) for i in order])
    error_torch = state.error_dict.get(0, torch.zeros(0)).clone()
    q_torch = state.q_memory_dict.get(0, torch.zeros(0)).clone()

    # peergrad: DistributedOptimizer with the parameters in the bucket's order
    comm = distributed.DistributedCommunicator(make_topology("ring", world))
    params2 = list(model2.parameters())
    opt2 = DistributedOptimizer(
        [params2[i] for i in order], "powersgd", comm, overlap=False, lr=LR, **sgd, **ours
    )
    for k in range(STEPS):
        opt2.zero_grad()
        loss_fn(model2(xs[k]), ys[k]).backward()
        opt2.step()
    x_ours = torch.cat([params2[i].detach().reshape(-1) for i in order])
    ours_state = opt2.algorithm_state
    return {
        "x_torch": x_torch,
        "x_ours": x_ours,
        "flat_ours": opt2.flat_params[0].clone(),
        "error_torch": error_torch,
        "error_ours": ours_state.error[0].clone(),
        "q_torch": q_torch,
        "q_ours": ours_state.q[0].clone(),
        "orders": orders,
        "numel": (state.total_numel_before_compression, state.total_numel_after_compression),
        "bytes": float(comm.bytes_sent[0]),
        "rounds": comm.rounds,
        "shapes": [tuple(params2[i].shape) for i in order],
    }


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {name: run_case(name, rank, world) for name in CASES}
    if rank == 0:
        torch.save(results, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
