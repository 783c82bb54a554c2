"""Decentralized training in a plain PyTorch loop with peergrad's ``DistributedOptimizer``.

Every process started by torchrun is one worker. It trains a small MLP on its own shard of the
8x8 digits data set (shard ``rank`` of an iid split), exchanging the model with its neighbours in
``--topology`` at every step (``--algorithm dpsgd``) or averaging gradients (``allreduce``).
At the end rank 0 prints the test accuracy of the averaged model x̄ = mean over workers::

    torchrun --standalone --nproc-per-node 4 examples/train_own_loop.py \\
        --algorithm dpsgd --topology ring --steps 100

The only peergrad-specific lines are the process group, the communicator and the optimizer;
the rest is the usual ``zero_grad(); loss.backward(); step()`` loop.
"""

from __future__ import annotations

import argparse
import copy
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
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = DistributedOptimizer(
        model.parameters(), args.algorithm, comm, lr=args.lr, momentum=args.momentum
    )

    step, loss_sum, count = 0, 0.0, 0
    while step < args.steps:
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            loss_sum, count = loss_sum + loss.item(), count + 1
            if step % args.log_every == 0 or step == args.steps:
                mean = comm.mean(torch.tensor([[loss_sum / count]]), account=False)
                if rank == 0:
                    print(f"step {step:4d}  minibatch loss (mean over workers) {mean.item():.4f}")
                loss_sum, count = 0.0, 0
            if step == args.steps:
                break

    x = opt.flat_params  # [1, D]: this worker's parameters
    x_bar = comm.mean(x, account=False)  # the averaged model, on every worker
    consensus = comm.mean((x - x_bar).square().sum(dim=1, keepdim=True), account=False)
    bytes_sent = comm.mean(comm.bytes_sent[:, None], account=False)
    if rank == 0:
        averaged = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(x_bar[0], averaged.parameters())
        with torch.no_grad():
            accuracy = (averaged(data.x_test).argmax(dim=1) == data.y_test).float().mean()
        print(
            f"{args.algorithm} on {args.topology} ({world_size} workers), {args.steps} steps: "
            f"test accuracy of the averaged model {accuracy.item():.4f}, consensus distance "
            f"{consensus.item():.3g}, sent per worker {bytes_sent.item() / 1e6:.2f} MB"
        )
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
