"""Decentralized training in a plain PyTorch loop with peergrad's ``DistributedOptimizer``.

Every process started by torchrun is one worker. It trains a small MLP on its own shard of the
8x8 digits data set (shard ``rank`` of an iid split), exchanging the model with its neighbours in
``--topology`` at every step (``--algorithm dpsgd``) or averaging gradients (``allreduce``).
At the end ``opt.average_parameters()`` gives every worker the averaged model x̄ = mean over
workers, and rank 0 prints its test accuracy::

    torchrun --standalone --nproc-per-node 4 examples/train_own_loop.py \\
        --algorithm dpsgd --topology ring --steps 100

The only peergrad-specific lines are the process group, the communicator and the optimizer;
the rest is the usual PyTorch loop, with PyTorch's own pieces working on ``DistributedOptimizer``
as on ``torch.optim.SGD``:

- two param groups: weight decay (``--weight-decay``) on the weight matrices only, none on the
  biases and the BatchNorm scales and shifts;
- a learning-rate schedule from ``torch.optim.lr_scheduler``: ``--schedule step`` (StepLR, x0.5
  every quarter of the run), ``cosine`` (``--warmup-steps`` of linear warm-up, then
  CosineAnnealingLR, chained by SequentialLR) or ``constant``;
- ``--amp``: mixed precision with ``torch.autocast`` (float16) and ``torch.amp.GradScaler``
  (``scaler.step(opt)``: the optimizer unscales, and every worker skips a step in which any
  worker's gradient overflowed);
- ``module=model, buffers="average"``: the BatchNorm running statistics are averaged over the
  workers after every step.

Communication overlaps the forward and backward pass (the optimizer's default under torchrun):
the gossip of x leaves at the end of ``step`` (on a GPU, or with ``overlap=True``, the
gradient-dependent messages also leave per bucket during ``backward``). ``opt.synchronize()``
waits for the last messages; ``opt.average_parameters()`` drains them too before it averages.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from peergrad.comm import distributed
from peergrad.data import load_dataset, partition
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="dpsgd", help="dpsgd, allreduce, ...")
    parser.add_argument("--topology", default="ring", help="ring, torus, exponential, ...")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per worker")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="weight matrices only")
    parser.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    parser.add_argument("--warmup-steps", type=int, default=10, help="cosine: linear warm-up")
    parser.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler")
    parser.add_argument("--log-every", type=int, default=20, help="steps between loss lines")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    distributed.init_process_group(timeout_s=60)  # gloo on CPU, from torchrun's environment
    world_size = int(os.environ["WORLD_SIZE"])
    comm = distributed.DistributedCommunicator(make_topology(args.topology, world_size))
    rank = comm.rank

    data = load_dataset("digits")
    shard = partition(data.y_train, world_size, "iid", seed=0)[rank]
    loader = DataLoader(
        TensorDataset(data.x_train[shard], data.y_train[shard]),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed + rank),  # this worker's order
    )

    torch.manual_seed(args.seed)  # the same initial model on every worker
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)
    )
    loss_fn = nn.CrossEntropyLoss()
    decay = [p for p in model.parameters() if p.ndim > 1]  # weight matrices
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases, BatchNorm affine
    opt = DistributedOptimizer(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        args.algorithm,
        comm,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        module=model,
        buffers="average",
    )
    scheduler = make_scheduler(opt, args)
    scaler = torch.amp.GradScaler("cpu", enabled=args.amp)

    step, loss_sum, count = 0, 0.0, 0
    while step < args.steps:
        for xb, yb in loader:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16, enabled=args.amp):
                loss = loss_fn(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)  # opt.step() when --amp is off
            scaler.update()
            scheduler.step()
            step += 1
            loss_sum, count = loss_sum + loss.item(), count + 1
            if step % args.log_every == 0 or step == args.steps:
                mean = comm.mean(torch.tensor([[loss_sum / count]]), account=False)
                if rank == 0:
                    print(f"step {step:4d}  minibatch loss (mean over workers) {mean.item():.4f}")
                loss_sum, count = 0.0, 0
            if step == args.steps:
                break

    opt.synchronize()  # the gossip posted by the last step is still in flight
    x = opt.flat_params  # [1, D]: this worker's parameters, laid out group by group
    spread = (x - comm.mean(x, account=False)).square().sum(dim=1, keepdim=True)
    consensus = comm.mean(spread, account=False)  # (1/n) sum_i ||x_i - x̄||², before averaging
    opt.average_parameters()  # every worker's model is now x̄ (one all-reduce, in the bytes)
    bytes_sent = comm.mean(comm.bytes_sent[:, None], account=False)
    if rank == 0:
        model.eval()  # x̄, with the running statistics averaged at every step
        with torch.no_grad():
            accuracy = (model(data.x_test).argmax(dim=1) == data.y_test).float().mean()
        print(
            f"{args.algorithm} on {args.topology} ({world_size} workers), {args.steps} steps: "
            f"test accuracy of the averaged model {accuracy.item():.4f}, consensus distance "
            f"{consensus.item():.3g}, sent per worker {bytes_sent.item() / 1e6:.2f} MB, final "
            f"lr {opt.param_groups[0]['lr']:.4g}"
        )
    distributed.destroy_process_group()


def make_scheduler(
    opt: torch.optim.Optimizer, args: argparse.Namespace
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule: PyTorch's schedulers act on DistributedOptimizer directly."""
    sched = torch.optim.lr_scheduler
    if args.schedule == "step":
        return sched.StepLR(opt, step_size=max(1, args.steps // 4), gamma=0.5)
    if args.schedule == "constant":
        return sched.ConstantLR(opt, factor=1.0)
    warmup = min(args.warmup_steps, args.steps - 1)
    if warmup <= 0:
        return sched.CosineAnnealingLR(opt, T_max=args.steps)
    ramp = sched.LambdaLR(opt, lambda k: (k + 1) / (warmup + 1))
    cosine = sched.CosineAnnealingLR(opt, T_max=args.steps - warmup)
    return sched.SequentialLR(opt, [ramp, cosine], milestones=[warmup])


if __name__ == "__main__":
    main()
