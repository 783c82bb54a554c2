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

A second table does the same for a user module with buffers and random layers: the small CNN of
:func:`make_digits_cnn` (two conv + BatchNorm + ReLU + max-pool blocks, Dropout, a linear head) on
the 8x8 ``digits`` images, n = 16 by default. ``simulated`` runs it through
:class:`peergrad.train.params.WorkerModel` (one ``vmap`` over ``functional_call`` with the
BatchNorm statistics stacked per worker and per-worker Dropout masks), ``naive`` loops over n
deep-copied modules; it prints the whole step (gradient + D-PSGD step, as above) and the gradient
alone (``WorkerModel.grad`` vs the loop's forward/backward), with the ratios ``naive/sim``
(target >= 3 at n = 16).

A third table does the same for the ``transformer`` language model on ``pydoc-topics`` windows
(byte-level text, ``seq_len`` 64, the preset's default sizes: d_model 64, 2 layers, 4 heads), n =
8 by default, per-worker batches of 8 and 16 windows, once per attention form (``sdpa``: torch's
fused kernel, which vmap runs per worker on the CPU; ``sdpa-math``: SDPA's math backend, batched
by vmap; ``explicit``: the masked softmax), with the ratio ``sim/naive`` (target <= 0.8 at n = 8:
the vmapped step at most 0.8x the loop over 8 module copies).

Usage: ``python benchmarks/simulator.py [--device cuda] [--workers 4 16 64 256] [--batch-size 32]
[--models mlp cnn transformer] [--cnn-workers 16] [--lm-workers 8] [--lm-batch-size 8 16]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from _timing import timed
from torch import nn

from peergrad.algorithms import DPSGD
from peergrad.comm import SimulatedCommunicator
from peergrad.data import load_dataset, load_text_dataset, partition
from peergrad.models import ATTENTIONS, build_model, token_cross_entropy
from peergrad.topology import Topology, make_topology
from peergrad.train.loop import BatchGather, nonfinite_codes
from peergrad.train.params import FlatParams, WorkerModel, make_worker_grad_fn
from peergrad.train.sampler import ShardSampler


def timeit(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def naive_dpsgd_step(
    workers: list[nn.Module],
    topo: Topology,
    lr: float,
    momentum: float,
    shards: list[torch.Tensor],
    batch: int,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> Callable[[], None]:
    """The naive reference: one D-PSGD step (torch SGD with momentum, then a gossip of the
    parameters with W(0)) as a Python loop over ``workers``, n separate ``nn.Module``s;
    ``loss(outputs, targets)`` (default: cross-entropy of class logits)."""
    n = len(workers)
    device = x_train.device
    opts = [torch.optim.SGD(w.parameters(), lr=lr, momentum=momentum) for w in workers]
    W = topo.at(0)
    neighbours = [[(i, W.self_weight(i)), *W.in_neighbors(i)] for i in range(n)]
    naive_sampler = ShardSampler(shards, batch, 0, list(range(n)))

    def naive() -> None:
        idx = naive_sampler.next().to(device)
        for i, (w, opt) in enumerate(zip(workers, opts, strict=True)):
            opt.zero_grad()
            loss(w(x_train[idx[i]]), y_train[idx[i]]).backward()
            opt.step()
        with torch.no_grad():
            snapshot = [[p.clone() for p in w.parameters()] for w in workers]
            for i, w in enumerate(workers):
                for k, p in enumerate(w.parameters()):
                    p.copy_(sum(wt * snapshot[j][k] for j, wt in neighbours[i]))

    return naive


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
    naive = naive_dpsgd_step(workers, topo, lr, momentum, shards, batch, x_train, y_train)

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


def make_digits_cnn(num_classes: int = 10, dropout: float = 0.25) -> nn.Module:
    """A small CNN for ``[B, 1, 8, 8]`` images (the ``digits`` data set) with BatchNorm buffers
    and Dropout: ``[conv3x3(8) - BN - ReLU - maxpool2] -> [conv3x3(16) - BN - ReLU - maxpool2]
    -> flatten(64) -> Dropout -> Linear(num_classes)``; 1,946 parameters for 10 classes.
    Initialised from torch's global generator."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16 * 2 * 2, num_classes),
    )


def bench_cnn(n: int, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Step and gradient times of :func:`make_digits_cnn` on ``digits``: WorkerModel vs a loop
    over n deep-copied modules (each with its own BatchNorm statistics and Dropout draws)."""
    ds = load_dataset("digits")
    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    shards = partition(ds.y_train, n, "iid", seed=0, min_size=batch)
    torch.manual_seed(0)
    module = make_digits_cnn(ds.num_classes).to(device)
    model = WorkerModel(module)
    topo = make_topology("ring", n)
    lr, momentum = 0.05, 0.9

    # --- simulated engine: WorkerModel.grad (buffers [n, ...]) + the algorithm's step
    comm = SimulatedCommunicator(topo)
    alg = DPSGD(lr=lr, momentum=momentum)
    sampler = ShardSampler(shards, batch, 0, list(range(n)))
    x = model.x0().expand(n, -1).clone()
    buffers = model.init_buffers(n)
    state = [alg.init(x, comm)]
    g_buffer = torch.empty_like(x)
    gather = BatchGather(x_train, y_train)
    first = gather(sampler.next()[:1].to(device))
    model.check(first[0][0], first[1][0])  # refuses a bad module / loss before any timing
    fixed = gather(sampler.next().to(device))
    fixed = (fixed[0].clone(), fixed[1].clone())

    def simulated() -> None:
        idx = sampler.next().to(device)
        g, _ = model.grad(x, buffers, *gather(idx), out=g_buffer)
        state[0] = alg.step(x, g, state[0], comm)

    def simulated_grad() -> None:
        model.grad(x, buffers, *fixed, out=g_buffer)

    # --- naive: n deep-copied modules in a Python loop
    workers = [copy.deepcopy(module).train() for _ in range(n)]
    naive = naive_dpsgd_step(workers, topo, lr, momentum, shards, batch, x_train, y_train)

    def naive_grad() -> None:
        xs, ys = fixed
        for i, w in enumerate(workers):
            w.zero_grad()
            nn.functional.cross_entropy(w(xs[i]), ys[i]).backward()

    warm = 3
    # interleaved, so that a change of the machine's load hits both sides alike
    times: dict[str, list[float]] = {
        k: [] for k in ("simulated", "naive", "sim_grad", "naive_grad")
    }
    fns = {
        "simulated": simulated,
        "naive": naive,
        "sim_grad": simulated_grad,
        "naive_grad": naive_grad,
    }
    for fn in fns.values():
        for _ in range(warm):
            fn()
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(timed(fn, device))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["dim"] = model.layout.dim
    return out


def bench_transformer(
    n: int, batch: int, device: torch.device, repeats: int, attention: str
) -> dict[str, float]:
    """Step and gradient times of the ``transformer`` preset on ``pydoc-topics`` windows:
    WorkerModel (one vmap over the stacked parameters) vs a loop over n deep-copied modules,
    each step a D-PSGD step with momentum on a ring as in :func:`bench_cnn`."""
    ds = load_text_dataset("pydoc-topics", seq_len=64)
    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    shards = partition(torch.zeros(len(x_train), dtype=torch.long), n, "iid", seed=0)
    torch.manual_seed(0)
    module = build_model("transformer", ds.input_shape, ds.num_classes, attention=attention)
    module = module.to(device)
    model = WorkerModel(module, token_cross_entropy, "perplexity")
    topo = make_topology("ring", n)
    lr, momentum = 0.05, 0.9
    comm = SimulatedCommunicator(topo)
    alg = DPSGD(lr=lr, momentum=momentum)
    sampler = ShardSampler(shards, batch, 0, list(range(n)))
    x = model.x0().expand(n, -1).clone()
    state = [alg.init(x, comm)]
    g_buffer = torch.empty_like(x)
    gather = BatchGather(x_train, y_train)
    fixed = gather(sampler.next().to(device))
    fixed = (fixed[0].clone(), fixed[1].clone())
    model.check(fixed[0][0], fixed[1][0])

    def simulated() -> None:
        idx = sampler.next().to(device)
        g, _ = model.grad(x, {}, *gather(idx), out=g_buffer)
        state[0] = alg.step(x, g, state[0], comm)

    def simulated_grad() -> None:
        model.grad(x, {}, *fixed, out=g_buffer)

    workers = [copy.deepcopy(module).train() for _ in range(n)]
    naive = naive_dpsgd_step(
        workers, topo, lr, momentum, shards, batch, x_train, y_train, token_cross_entropy
    )

    def naive_grad() -> None:
        xs, ys = fixed
        for i, w in enumerate(workers):
            w.zero_grad()
            token_cross_entropy(w(xs[i]), ys[i]).backward()

    fns = {
        "simulated": simulated,
        "naive": naive,
        "sim_grad": simulated_grad,
        "naive_grad": naive_grad,
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(2):
            fn()
    for _ in range(repeats):  # interleaved, so that a change of load hits both sides alike
        for key, fn in fns.items():
            times[key].append(timed(fn, device))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["dim"] = model.layout.dim
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[4, 16, 64, 256])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--models",
        nargs="+",
        choices=("mlp", "cnn", "transformer"),
        default=["mlp", "cnn", "transformer"],
    )
    p.add_argument("--cnn-workers", type=int, nargs="+", default=[16])
    p.add_argument("--lm-workers", type=int, nargs="+", default=[8])
    p.add_argument(
        "--lm-batch-size",
        type=int,
        nargs="+",
        default=[8, 16],
        help="windows of 64 bytes per worker (one row each)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if "mlp" in args.models:
        mlp_table(args, device)
    if "cnn" in args.models:
        cnn_table(args, device)
    if "transformer" in args.models:
        transformer_table(args, device)


def transformer_table(args: argparse.Namespace, device: torch.device) -> None:
    print(
        f"device={device} threads={torch.get_num_threads()} model=transformer (d_model 64, 2 "
        "layers, 4 heads) on pydoc-topics windows of 64 bytes, algorithm=dpsgd(momentum) "
        "topology=ring; ms per step (median, interleaved); target sim/naive <= 0.8 at n = 8"
    )
    print(
        f"{'n':>5} {'batch':>5} {'attention':>9} {'D':>7} {'sim step':>9} {'naive':>9} "
        f"{'sim/naive':>10} {'sim grad':>9} {'naive':>9} {'sim/naive':>10}"
    )
    for n in args.lm_workers:
        for batch in args.lm_batch_size:
            for attention in ATTENTIONS:
                r = bench_transformer(n, batch, device, args.repeats, attention)
                print(
                    f"{n:>5} {batch:>5} {attention:>9} {int(r['dim']):>7} "
                    f"{1e3 * r['simulated']:>9.2f} {1e3 * r['naive']:>9.2f} "
                    f"{r['simulated'] / r['naive']:>10.2f} {1e3 * r['sim_grad']:>9.2f} "
                    f"{1e3 * r['naive_grad']:>9.2f} {r['sim_grad'] / r['naive_grad']:>10.2f}",
                    flush=True,
                )


def cnn_table(args: argparse.Namespace, device: torch.device) -> None:
    print(
        f"device={device} threads={torch.get_num_threads()} model=digits-cnn (BatchNorm + "
        f"Dropout) batch/worker={args.batch_size} algorithm=dpsgd(momentum) topology=ring; "
        "ms per step (median, interleaved)"
    )
    print(
        f"{'n':>5} {'D':>6} {'sim step':>9} {'naive':>9} {'naive/sim':>10} "
        f"{'sim grad':>9} {'naive':>9} {'naive/sim':>10}"
    )
    for n in args.cnn_workers:
        r = bench_cnn(n, args.batch_size, device, args.repeats)
        print(
            f"{n:>5} {int(r['dim']):>6} {1e3 * r['simulated']:>9.2f} {1e3 * r['naive']:>9.2f} "
            f"{r['naive'] / r['simulated']:>10.2f} {1e3 * r['sim_grad']:>9.2f} "
            f"{1e3 * r['naive_grad']:>9.2f} {r['naive_grad'] / r['sim_grad']:>10.2f}",
            flush=True,
        )


def mlp_table(args: argparse.Namespace, device: torch.device) -> None:
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
