"""Simulated-engine step time vs a naive per-worker loop and vs the compute floor.

For n in {4, 16, 64, 256} workers, MLP on the built-in MNIST digits, per-worker batch B, D-PSGD
with local momentum on a ring, this script times in one run, side by side:

- ``simulated``: peergrad's step: sample, gather, one ``vmap(grad)`` call over the stacked
  parameters ``[n, D]``, then the algorithm's step (gossip + momentum SGD);
- ``naive``: n separate ``nn.Module`` workers in a Python loop (forward/backward, a
  ``torch.optim.SGD`` step each, then gossip by a weighted sum of the neighbours' parameters);
- ``floor``: one model on the combined batch n·B (forward/backward + one SGD step): the compute
  any simulator of n workers must at least do.

It prints milliseconds per step and the ratios ``naive / simulated`` (speed-up, target >= 4 at
n = 16) and ``simulated / floor`` (overhead, target <= 2 at n = 16), and ``guard %``: the time of
the training loop's NaN/Inf guard (one row sum over ``[n, D]`` and one read of ``[n]`` flags,
timed alone) in percent of the simulated step.

Usage: ``python benchmarks/simulator.py [--device cuda] [--workers 4 16 64 256] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _timing import timed
from torch import nn

from peergrad.algorithms import DPSGD
from peergrad.comm import SimulatedCommunicator
from peergrad.data import load_dataset, partition
from peergrad.models import build_model
from peergrad.topology import make_topology
from peergrad.train.loop import BatchGather, nonfinite_codes
from peergrad.train.params import FlatParams, make_worker_grad_fn
from peergrad.train.sampler import ShardSampler


def timeit(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def bench(n: int, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    ds = load_dataset("mnist")
    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    shards = (
        partition(ds.y_train, n, "iid", seed=0)
        if n * batch <= len(ds.y_train)
        else [torch.arange(len(ds.y_train)) for _ in range(n)]
    )
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.num_classes).to(device)
    layout = FlatParams.of(model)
    topo = make_topology("ring", n)
    lr, momentum = 0.05, 0.9

    # --- simulated engine
    comm = SimulatedCommunicator(topo)
    alg = DPSGD(lr=lr, momentum=momentum)
    grad_fn = make_worker_grad_fn(model, layout)
    sampler = ShardSampler(shards, batch, 0, list(range(n)))
    x = layout.flatten(model).expand(n, -1).clone()
    state = [alg.init(x, comm)]
    g_buffer = torch.empty_like(x)
    gather = BatchGather(x_train, y_train)

    def simulated() -> None:
        idx = sampler.next().to(device)
        g, _ = grad_fn(x, *gather(idx), out=g_buffer)
        state[0] = alg.step(x, g, state[0], comm)

    losses = torch.zeros(n, device=device)

    def guard() -> None:
        """What ``peergrad train`` adds to every step for its NaN/Inf guard: a row sum of the
        parameters ``[n, D]`` and one device-to-host read of ``[n]`` flags."""
        if bool(nonfinite_codes(losses, x).any()):
            raise RuntimeError("the benchmark diverged")

    # --- naive: n separate modules, a Python loop over workers
    workers = [build_model("mlp", ds.input_shape, ds.num_classes).to(device) for _ in range(n)]
    for w in workers:
        w.load_state_dict(model.state_dict())
    opts = [torch.optim.SGD(w.parameters(), lr=lr, momentum=momentum) for w in workers]
    W = topo.at(0)
    neighbours = [[(i, W.self_weight(i)), *W.in_neighbors(i)] for i in range(n)]
    naive_sampler = ShardSampler(shards, batch, 0, list(range(n)))

    def naive() -> None:
        idx = naive_sampler.next().to(device)
        for i, (w, opt) in enumerate(zip(workers, opts, strict=True)):
            opt.zero_grad()
            nn.functional.cross_entropy(w(x_train[idx[i]]), y_train[idx[i]]).backward()
            opt.step()
        with torch.no_grad():
            snapshot = [[p.clone() for p in w.parameters()] for w in workers]
            for i, w in enumerate(workers):
                for k, p in enumerate(w.parameters()):
                    p.copy_(sum(wt * snapshot[j][k] for j, wt in neighbours[i]))

    # --- floor: one model, combined batch n * B
    floor_model = build_model("mlp", ds.input_shape, ds.num_classes).to(device)
    floor_opt = torch.optim.SGD(floor_model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(1)

    def floor() -> None:
        idx = torch.randint(0, len(y_train), (n * batch,), generator=gen).to(device)
        floor_opt.zero_grad()
        nn.functional.cross_entropy(floor_model(x_train[idx]), y_train[idx]).backward()
        floor_opt.step()

    warm = 3
    out = {
        "simulated": timeit(simulated, device, repeats, warm),
        "guard": timeit(guard, device, 5 * repeats, warm),
        "naive": timeit(naive, device, max(3, repeats // 4) if n >= 64 else repeats, 1),
        "floor": timeit(floor, device, repeats, warm),
    }
    out["dim"] = layout.dim
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[4, 16, 64, 256])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device={device} threads={torch.get_num_threads()} model=mlp batch/worker="
        f"{args.batch_size} algorithm=dpsgd(momentum) topology=ring; ms per step (median)"
    )
    print(
        f"{'n':>5} {'simulated':>10} {'naive':>10} {'floor':>10} "
        f"{'naive/sim':>10} {'sim/floor':>10} {'guard %':>8}"
    )
    for n in args.workers:
        r = bench(n, args.batch_size, device, args.repeats)
        print(
            f"{n:>5} {1e3 * r['simulated']:>10.2f} {1e3 * r['naive']:>10.2f} "
            f"{1e3 * r['floor']:>10.2f} {r['naive'] / r['simulated']:>10.2f} "
            f"{r['simulated'] / r['floor']:>10.2f} "
            f"{100 * r['guard'] / r['simulated']:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
