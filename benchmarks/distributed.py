"""Distributed-engine step time: peergrad ``allreduce`` and ``dpsgd`` vs PyTorch DDP.

Under torchrun (one worker per process; gloo on the CPU, NCCL with ``--device cuda``), MLP
784-1024-1024-10 (ReLU), cross-entropy, SGD with momentum 0.9 and lr 0.01 for every contender,
per-worker batch B (default 32). The contenders are timed in the same run, interleaved in
round-robin blocks of steps whose order rotates from block to block, so that drift on a shared
machine hits all of them alike:

- ``ddp``: ``DistributedDataParallel(model)`` + ``torch.optim.SGD``: zero_grad, forward,
  backward (bucketed gradient all-reduce overlapping the backward), step;
- ``allreduce``: peergrad ``AllReduceSGD``: parameters bound to a flat ``x [1, D]`` and their
  gradients to a flat ``g [1, D]`` (``bind_flat``); ``comm.begin_step``, zero g, forward,
  backward, ``algorithm.step`` (one all-reduce of g, then the momentum update);
- ``dpsgd ring`` / ``dpsgd one-peer``: peergrad ``DPSGD`` (CTA form) on the ring and on the
  one-peer exponential schedule: as above, but ``pre_gradient`` posts the gossip of x before the
  forward/backward so that it overlaps the gradient, and ``step(..., pending=...)`` waits for it;
- ``floor``: the same forward/backward/momentum update with no communication at all (a reference
  row: no method that computes one gradient per worker per step can be faster).

Inputs are synthetic: 784-dim standard-normal vectors, labelled by the argmax of a fixed random
linear map (a learnable teacher); each rank draws its own minibatches from a generator seeded
with its rank. Every contender starts from the same seeded weights and sees the same sequence of
minibatches, so after the run the ``allreduce`` parameters must equal DDP's (checked to 1e-4
relative, ``max|x_peergrad - x_ddp| / max|x_ddp|``).

Step time: each rank times every step on its own (no barrier inside the timed loop); the step
time of the synchronous system is the maximum over ranks of that step's time, and the table shows
the median of it over the timed steps. Bytes per worker per step are peergrad's
``comm.bytes_sent`` (ring all-reduce: ``2 (n - 1) / n * 4 D``; gossip: out-degree * ``4 D``), and
for DDP the ring all-reduce volume ``2 (n - 1) / n * 4 D``. A second table splits each step into
phases (medians over steps, mean over ranks): ``pre`` (begin_step + zeroing the gradient +
posting the gossip), ``forward``, ``backward`` (DDP: includes its overlapped all-reduce),
``comm`` (time inside the communicator during ``algorithm.step``: ``comm.mean``, i.e. copy +
all-reduce + division, or the gossip's ``wait``, i.e. waiting for the messages + the weighted
sum) and ``update`` (the rest of ``algorithm.step`` / ``optimizer.step``); on CUDA the phases
are host-side times (only the end of a step synchronises the device). ``CPU ms/step`` is the
process CPU time of all threads (backend threads included), summed over the ranks: where the
processes share fewer cores than they have busy threads, communication through the loopback
costs CPU time and cannot hide behind the gradient, and the step time follows this column.

Targets (acceptance): ``allreduce`` <= 1.1x DDP; one-peer ``dpsgd`` <= 0.6x DDP.

Usage::

    torchrun --standalone --nproc-per-node 4 benchmarks/distributed.py \
        [--steps 50] [--warmup 10] [--block 5] [--device cpu|cuda] [--batch-size 32] [--threads N]

torchrun sets ``OMP_NUM_THREADS=1`` by default; with 4 processes on a 2-core machine one thread
per process is the sane setting (``--threads`` overrides it with ``torch.set_num_threads``).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from peergrad.algorithms import DPSGD, Algorithm, AllReduceSGD
from peergrad.comm import distributed as pgdist
from peergrad.models import MLP
from peergrad.topology import make_topology
from peergrad.train.params import FlatParams, bind_flat

LR, MOMENTUM = 0.01, 0.9
HIDDEN = (1024, 1024)
IN_FEATURES, CLASSES = 784, 10
PHASES = ("pre", "forward", "backward", "comm", "update")
TARGETS = (("allreduce", 1.1), ("dpsgd one-peer", 0.6))


# ---------------------------------------------------------------------- communicator timing proxy
class _TimedPending:
    """Wraps a ``PendingMix``; its whole ``wait`` (messages + weighted sum) counts as comm.

    The wait for the messages cannot be timed apart from the weighted sum from outside:
    waiting twice on a gloo send/receive blocks for a second message, and the work handles
    do not report completion without a wait.
    """

    def __init__(self, pending: Any, clock: CommTimer) -> None:
        self._pending, self._clock = pending, clock

    def wait(self, out: Tensor | None = None) -> Tensor:
        t0 = time.perf_counter()
        result = self._pending.wait(out)
        self._clock.comm += time.perf_counter() - t0
        return result


class TimedComm:
    """Delegates to a communicator, adding the time spent in communication to ``clock.comm``."""

    def __init__(self, comm: pgdist.DistributedCommunicator, clock: CommTimer) -> None:
        self._comm, self._clock = comm, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._comm, name)

    def mean(self, x: Tensor, **kwargs: Any) -> Tensor:
        t0 = time.perf_counter()
        out = self._comm.mean(x, **kwargs)
        self._clock.comm += time.perf_counter() - t0
        return out

    def mix_start(self, x: Tensor, W: Any, **kwargs: Any) -> _TimedPending:
        return _TimedPending(self._comm.mix_start(x, W, **kwargs), self._clock)

    def mix(self, x: Tensor, W: Any, *, out: Tensor | None = None, **kwargs: Any) -> Tensor:
        return self.mix_start(x, W, **kwargs).wait(out)


@dataclass
class CommTimer:
    comm: float = 0.0  # seconds spent inside the communicator during the current step


# ---------------------------------------------------------------------- contenders
@dataclass
class Contender:
    name: str
    run_step: Callable[[int], None]  # step index (selects the minibatch)
    bytes_per_step: Callable[[], float]
    params: Callable[[], Tensor]  # flat parameters [D]
    step_times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU time, all threads
    phase_times: list[list[float]] = field(default_factory=list)
    steps_done: int = 0


class Clock:
    """Phase timestamps. On CUDA only :meth:`end` synchronises the device: a synchronisation
    between phases would also wait for a gossip in flight on NCCL's stream and serialise the
    very overlap being measured, so the CUDA phases are host-side times."""

    def __init__(self, device: torch.device) -> None:
        self.device = device if device.type == "cuda" else None

    def phase(self) -> float:
        return time.perf_counter()

    def end(self) -> float:
        if self.device is not None:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def make_ddp(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], device: torch.device, n: int
) -> Contender:
    module = copy.deepcopy(model)
    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=ids)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)
    clock = Clock(device)
    dim = sum(p.numel() for p in module.parameters())
    phases: list[list[float]] = []

    def run_step(k: int) -> None:
        xb, yb = batches[k]
        t0 = clock.phase()
        opt.zero_grad()
        t1 = clock.phase()
        loss = F.cross_entropy(ddp(xb), yb)
        t2 = clock.phase()
        loss.backward()
        t3 = clock.phase()
        opt.step()
        t4 = clock.end()
        phases.append([t1 - t0, t2 - t1, t3 - t2, 0.0, t4 - t3])

    c = Contender(
        "ddp",
        run_step,
        bytes_per_step=lambda: 2.0 * (n - 1) / n * dim * 4,
        params=lambda: torch.cat([p.detach().reshape(-1) for p in module.parameters()]),
    )
    c.phase_times = phases
    return c


def make_peergrad(
    name: str,
    algorithm: Algorithm | None,
    topology: str,
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
    n: int,
) -> Contender:
    """A peergrad contender (``algorithm=None``: the compute floor, no communication)."""
    module = copy.deepcopy(model)
    layout = FlatParams.of(module)
    x = layout.flatten(module).to(device).reshape(1, -1).clone()
    g = torch.zeros_like(x)
    bind_flat(module, layout, x[0], g[0])
    raw = pgdist.DistributedCommunicator(make_topology(topology, n))
    comm_clock = CommTimer()
    comm = TimedComm(raw, comm_clock)
    state: list[Any] = [None]
    if algorithm is not None:
        algorithm.check_topology(comm)
        state[0] = algorithm.init(x, comm)
    buf = torch.zeros_like(x)
    clock = Clock(device)
    phases: list[list[float]] = []
    step_no = [0]

    def run_step(k: int) -> None:
        xb, yb = batches[k]
        comm_clock.comm = 0.0
        t0 = clock.phase()
        step_no[0] += 1
        if algorithm is not None:
            raw.begin_step(step_no[0])
        g.zero_()
        pending = algorithm.pre_gradient(x, state[0], comm) if algorithm is not None else None
        t1 = clock.phase()
        loss = F.cross_entropy(module(xb), yb)
        t2 = clock.phase()
        loss.backward()
        t3 = clock.phase()
        if algorithm is not None:
            state[0] = algorithm.step(x, g, state[0], comm, pending=pending)
        else:  # same local math as AllReduceSGD without the all-reduce
            torch.add(g, buf, alpha=MOMENTUM, out=buf)
            x.sub_(buf, alpha=LR)
        t4 = clock.end()
        comm_s = comm_clock.comm
        phases.append([t1 - t0, t2 - t1, t3 - t2, comm_s, t4 - t3 - comm_s])

    def bytes_per_step() -> float:
        return float(raw.bytes_sent[0]) / max(step_no[0], 1)

    c = Contender(name, run_step, bytes_per_step, params=lambda: x[0].detach().clone())
    c.phase_times = phases
    return c


# ---------------------------------------------------------------------- data
def make_batches(
    steps: int, batch: int, rank: int, seed: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """``steps`` synthetic minibatches of this rank: Gaussian inputs, teacher labels."""
    teacher = torch.randn(IN_FEATURES, CLASSES, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1 + rank)
    xs = torch.randn(steps, batch, IN_FEATURES, generator=gen)
    ys = (xs @ teacher).argmax(dim=-1)
    return [(xs[k].to(device), ys[k].to(device)) for k in range(steps)]


# ---------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="timed steps per contender")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per contender first")
    p.add_argument("--block", type=int, default=5, help="steps per round-robin block")
    p.add_argument("--batch-size", type=int, default=32, help="per-worker batch size")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads per process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for key in ("steps", "block", "batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main() -> None:
    args = parse_args()
    if not pgdist.launched_by_torchrun():
        raise SystemExit(
            "start this benchmark with torchrun, e.g. `torchrun --standalone --nproc-per-node 4 "
            "benchmarks/distributed.py`"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise SystemExit(
                f"--device cuda: local rank {local_rank} needs cuda:{local_rank}, but this "
                f"machine has {torch.cuda.device_count()} CUDA device(s) (NCCL needs one per rank)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    pgdist.init_process_group(device=device)
    rank, n = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)
    model = MLP((IN_FEATURES,), CLASSES, hidden=HIDDEN).to(device)
    dim = sum(p.numel() for p in model.parameters())
    total_steps = args.warmup + args.steps
    batches = make_batches(total_steps, args.batch_size, rank, args.seed, device)

    contenders = [
        make_ddp(model, batches, device, n),
        make_peergrad(
            "allreduce", AllReduceSGD(lr=LR, momentum=MOMENTUM), "ring", model, batches, device, n
        ),
        make_peergrad(
            "dpsgd ring", DPSGD(lr=LR, momentum=MOMENTUM), "ring", model, batches, device, n
        ),
        make_peergrad(
            "dpsgd one-peer",
            DPSGD(lr=LR, momentum=MOMENTUM),
            "one-peer-exponential",
            model,
            batches,
            device,
            n,
        ),
        make_peergrad("floor (no comm)", None, "ring", model, batches, device, n),
    ]

    def run_block(c: Contender, count: int, timed: bool) -> None:
        dist.barrier()  # blocks start together; nothing inside a block waits on a barrier
        for _ in range(count):
            c0, t0 = time.process_time(), time.perf_counter()
            c.run_step(c.steps_done)
            dt = time.perf_counter() - t0  # run_step synchronises the device at its end
            dc = time.process_time() - c0
            c.steps_done += 1
            if timed:
                c.step_times.append(dt)
                c.cpu_times.append(dc)
            else:
                c.phase_times.pop()

    # Warm-up (round-robin as well), then the timed blocks; the order rotates every round.
    order = list(range(len(contenders)))
    for start in range(0, args.warmup, args.block):
        for i in order:
            run_block(contenders[i], min(args.block, args.warmup - start), timed=False)
        order = order[1:] + order[:1]
    for start in range(0, args.steps, args.block):
        for i in order:
            run_block(contenders[i], min(args.block, args.steps - start), timed=True)
        order = order[1:] + order[:1]

    # Synchronous step time: max over ranks of every step's time; phases: mean over ranks.
    def reduce(values: Any, op: dist.ReduceOp) -> Tensor:
        t = torch.as_tensor(values, dtype=torch.float64).to(device)  # NCCL: device tensors only
        dist.all_reduce(t, op=op)
        return t.cpu()

    steps_t = reduce([c.step_times for c in contenders], dist.ReduceOp.MAX)
    cpu_t = reduce([c.cpu_times for c in contenders], dist.ReduceOp.SUM)
    phases_t = reduce([c.phase_times for c in contenders], dist.ReduceOp.SUM) / n
    medians = steps_t.median(dim=1).values  # [contenders]
    cpu_medians = cpu_t.median(dim=1).values  # CPU seconds per step, summed over ranks
    phase_medians = phases_t.median(dim=1).values  # [contenders, phases]

    # Correctness guard: allreduce == DDP after the same steps on the same minibatches.
    ref, ours = contenders[0].params().double(), contenders[1].params().double()
    abs_diff = float(reduce((ours - ref).abs().max(), dist.ReduceOp.MAX))
    rel = float(reduce((ours - ref).abs().max() / ref.abs().max(), dist.ReduceOp.MAX))
    finite = all(bool(c.params().isfinite().all()) for c in contenders)
    finite = bool(reduce(float(finite), dist.ReduceOp.MIN) == 1)
    same = rel <= 1e-4

    if rank == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(
            f"device={device} world_size={n} threads/process={torch.get_num_threads()} "
            f"backend={dist.get_backend()} torch={torch.__version__} "
            f"cores={cores}"
        )
        print(
            f"model=MLP 784-1024-1024-10 (D={dim:,}) batch/worker={args.batch_size} "
            f"data=synthetic gaussian+teacher labels optimizer=SGD(lr={LR}, "
            f"momentum={MOMENTUM}) steps={args.steps} (+{args.warmup} warm-up) "
            f"block={args.block}"
        )
        print("step time = median over steps of the max over ranks\n")
        base = float(medians[0])
        print(
            f"{'contender':<16} {'ms/step':>9} {'vs DDP':>7} {'MB sent/worker/step':>20} "
            f"{'CPU ms/step':>12}"
        )
        rows = zip(contenders, medians.tolist(), cpu_medians.tolist(), strict=True)
        for c, m, cpu in rows:
            sent = c.bytes_per_step() / 1e6
            print(f"{c.name:<16} {1e3 * m:>9.2f} {m / base:>7.2f} {sent:>20.2f} {1e3 * cpu:>12.2f}")
        print(
            f"(CPU ms/step: process CPU time of all threads, median over steps of the sum over "
            f"the {n} ranks)"
        )
        print()
        print("phases, ms (median over steps, mean over ranks)")
        print(f"{'contender':<16} " + " ".join(f"{p:>9}" for p in PHASES) + f" {'sum':>9}")
        for c, row in zip(contenders, phase_medians.tolist(), strict=True):
            cells = " ".join(f"{1e3 * v:>9.2f}" for v in row)
            print(f"{c.name:<16} {cells} {1e3 * sum(row):>9.2f}")
        print()
        names = [c.name for c in contenders]
        for name, target in TARGETS:
            ratio = float(medians[names.index(name)]) / base
            verdict = "PASS" if ratio <= target else "FAIL"
            print(f"target {name} <= {target:.1f}x DDP: {ratio:.2f}x  {verdict}")
        print(
            f"check allreduce == DDP after {total_steps} steps: max|diff| = {abs_diff:.3g}, "
            f"relative {rel:.3g} (<= 1e-4: {'PASS' if same else 'FAIL'}); all parameters "
            f"finite: {'yes' if finite else 'NO'}"
        )
    pgdist.destroy_process_group()
    if not (same and finite):  # a wrong result is an error; a missed speed target is not
        raise SystemExit(1)


if __name__ == "__main__":
    main()
