"""Streaming DiLoCo on gloo processes: how much of the outer all-reduce overlap hides (issue 28).

Under torchrun (one worker per process, gloo on the CPU), MLP 784-1024-1024-10 (ReLU, D =
1,863,690 float32 values, 8 parameter tensors), cross-entropy on synthetic minibatches (B = 32
per worker), ``DistributedOptimizer(model.parameters(), "diloco", comm, ...)`` in a plain loop
(``zero_grad``; ``loss.backward()``; ``step()``) with inner AdamW, H = ``--period`` inner steps
and P = ``--fragments`` fragments (numel-balanced contiguous groups of tensors; fragment p syncs
every H steps, staggered). Contenders, timed in the same run, interleaved in blocks of whole
periods whose order rotates from block to block (so drift on a shared machine hits them alike):

- ``floor (no outer sync)``: the same optimizer with a period longer than the run: the inner
  steps and the bookkeeping, no communication (the reference);
- ``streaming tau=0``: every fragment's outer all-reduce blocks the step that posts it;
- ``streaming tau=T`` (``--overlap``): every fragment's all-reduce is posted with
  ``comm.mean_start`` and waited for T inner steps later: it runs behind those steps;
- ``probe: outer all-reduces``: per period only the P all-reduces (``comm.mean`` of every
  fragment's numel, blocking), no computation: the communication by itself.

Two measures of the fraction hidden. (1) Blocked time, the direct one: every contender's
communicator times the calls in which the step blocks on the outer all-reduce (``mean`` with
tau = 0; ``mean_start`` + ``wait_for`` with tau > 0), mean over ranks per period::

    hidden_blocked = 1 - blocked(tau=T) / blocked(tau=0)

(2) Wall clock, as ``benchmarks/distributed.py`` measures it (it also charges the overlap's
cost to the computation, but on a busy shared machine it is dominated by noise)::

    exposed = period_time(contender) - period_time(floor)      # what communicating added
    alone   = period_time(probe)                                # the all-reduces by themselves
    hidden  = clamp(1 - exposed / alone, 0, 1)

Every block starts with one untimed period (a lead-in: the previous block's last fragment may
still be in flight) and ends with ``comm.synchronize()`` (untimed). A period's time is the
maximum over ranks of the wall time of its H steps; each figure is the median over the timed
periods of a repeat, and the median over ``--repeats``. Per period every fragment syncs once, so
each contender but the floor moves the same bytes (one all-reduce of D values in P pieces).

Caveat (as in ``benchmarks/distributed.py``): with 4 processes on fewer cores, gloo's
background sends take CPU time from the inner steps, so what "runs behind" still costs cycles;
``hidden`` then measures how well the method avoids waiting, not how well the network is used.

Usage::

    torchrun --standalone --nproc-per-node 4 benchmarks/diloco_overlap.py \
        [--period 16] [--fragments 4] [--overlap 4] [--periods 3] [--blocks 2] [--repeats 3] \
        [--batch-size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from peergrad.algorithms.diloco import fragment_groups
from peergrad.comm import distributed as pgdist
from peergrad.models import MLP
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

IN_FEATURES, CLASSES, HIDDEN = 784, 10, (1024, 1024)


class TimedComm(pgdist.DistributedCommunicator):
    """A distributed communicator that adds up the seconds spent in the calls where a step
    blocks on an all-reduce (``mean``, ``mean_start``, ``wait_for``), in ``blocked_s``."""

    blocked_s = 0.0

    def mean(self, x: Tensor, **kwargs: Any) -> Tensor:
        t0 = time.perf_counter()
        out = super().mean(x, **kwargs)
        self.blocked_s += time.perf_counter() - t0
        return out

    def mean_start(self, x: Tensor, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        super().mean_start(x, **kwargs)
        self.blocked_s += time.perf_counter() - t0

    def wait_for(self, out: Tensor) -> Tensor:
        t0 = time.perf_counter()
        super().wait_for(out)
        self.blocked_s += time.perf_counter() - t0
        return out


@dataclass
class Contender:
    name: str
    comm: TimedComm
    run_period: Callable[[], None]  # H steps (or the probe's P all-reduces)
    drain: Callable[[], None]
    times: list[list[float]] = field(default_factory=list)  # [repeat][timed period]
    blocked: list[list[float]] = field(default_factory=list)  # [repeat][timed period]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--period", type=int, default=16, help="H, inner steps per sync (default 16)")
    p.add_argument("--fragments", type=int, default=4, help="P (default 4)")
    p.add_argument("--overlap", type=int, default=4, help="tau of the overlapped run (default 4)")
    p.add_argument("--periods", type=int, default=3, help="timed periods per block (default 3)")
    p.add_argument("--blocks", type=int, default=2, help="blocks per repeat (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 0 < args.overlap < args.period:
        p.error(f"--overlap must be in [1, period - 1] = [1, {args.period - 1}]")
    return args


def trainer(
    name: str, comm: TimedComm, args: argparse.Namespace, period: int, tau: int
) -> Contender:
    torch.manual_seed(args.seed)
    model = MLP((IN_FEATURES,), CLASSES, hidden=HIDDEN)
    opt = DistributedOptimizer(
        model.parameters(),
        "diloco",
        comm,
        overlap=False,
        lr=1e-3,
        period=period,
        fragments=args.fragments,
        overlap_steps=tau,
    )
    gen = torch.Generator().manual_seed(args.seed + 1000 * comm.rank)
    teacher = torch.randn(IN_FEATURES, CLASSES, generator=torch.Generator().manual_seed(7))

    def run_period() -> None:
        for _ in range(args.period):
            xb = torch.randn(args.batch_size, IN_FEATURES, generator=gen)
            yb = (xb @ teacher).argmax(1)
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

    return Contender(name, comm, run_period, opt.synchronize)


def probe(comm: TimedComm, args: argparse.Namespace) -> Contender:
    """P blocking all-reduces of the fragments' numels per period (no computation)."""
    sizes = [p.numel() for p in MLP((IN_FEATURES,), CLASSES, hidden=HIDDEN).parameters()]
    groups = fragment_groups(sizes, args.fragments)
    bufs = [torch.randn(1, sum(sizes[a:b])) for a, b in groups]

    def run_period() -> None:
        for buf in bufs:
            comm.mean(buf)

    return Contender("probe: outer all-reduces", comm, run_period, lambda: None)


def timed_block(c: Contender, comm: TimedComm, periods: int) -> tuple[list[float], list[float]]:
    """One untimed lead-in period, ``periods`` timed ones, then a drain: the periods' wall times
    (max over ranks) and blocked times (mean over ranks), on rank 0."""
    c.run_period()
    mine, blocked = [], []
    for _ in range(periods):
        b0, t0 = c.comm.blocked_s, time.perf_counter()
        c.run_period()
        mine.append(time.perf_counter() - t0)
        blocked.append(c.comm.blocked_s - b0)
    c.drain()
    rows = comm.gather(torch.tensor([mine + blocked], dtype=torch.float64))
    comm.barrier()
    if rows is None:
        return [], []
    return rows[:, :periods].max(0).values.tolist(), rows[:, periods:].mean(0).tolist()


def _median(rows: list[list[float]]) -> tuple[float, list[float]]:
    per_repeat = [statistics.median(r) for r in rows]
    return statistics.median(per_repeat), per_repeat


def report(contenders: list[Contender], args: argparse.Namespace, tau: int) -> None:
    med = {c.name: _median(c.times)[0] for c in contenders}
    per_repeat = {c.name: _median(c.times)[1] for c in contenders}
    print(
        f"\nstreaming DiLoCo, 4 gloo processes, MLP D = 1,863,690, H = {args.period}, "
        f"P = {args.fragments}; ms per period of H steps, median over {args.repeats} repeats:"
    )
    print(f"  {'contender':<28} {'period':>8} {'blocked':>8}   period per repeat")
    for c in contenders:
        reps = ", ".join(f"{1e3 * v:.0f}" for v in per_repeat[c.name])
        blocked = _median(c.blocked)[0]
        print(f"  {c.name:<28} {1e3 * med[c.name]:>8.1f} {1e3 * blocked:>8.1f}   ({reps})")
    b0, b0_reps = _median(contenders[1].blocked)
    bt, bt_reps = _median(contenders[2].blocked)
    print(
        f"\nblocked on the outer all-reduce: tau=0 {1e3 * b0:.1f} ms, tau={tau} {1e3 * bt:.1f} ms "
        f"per period: hidden_blocked = 1 - blocked(tau={tau}) / blocked(tau=0) = "
        f"{100 * (1 - bt / b0):.0f}% (repeats: "
        + ", ".join(f"{100 * (1 - t / z):.0f}%" for t, z in zip(bt_reps, b0_reps, strict=True))
        + ")"
    )
    floor = med["floor (no outer sync)"]
    alone = med["probe: outer all-reduces"]
    print("\nouter all-reduce hidden behind inner steps: hidden = clamp(1 - exposed / alone, 0, 1)")
    for name in ("streaming tau=0", f"streaming tau={tau}"):
        exposed = med[name] - floor
        hidden = min(max(1.0 - exposed / alone, 0.0), 1.0) if alone > 0 else math.nan
        print(
            f"  {name:<28} exposed {1e3 * exposed:>7.1f} ms of {1e3 * alone:.1f} ms alone: "
            f"hidden {100 * hidden:.0f}%"
        )


def main() -> None:
    args = parse_args()
    if not pgdist.launched_by_torchrun():
        raise SystemExit(
            "start this benchmark with torchrun, e.g. `torchrun --standalone --nproc-per-node 4 "
            "benchmarks/diloco_overlap.py`"
        )
    pgdist.init_process_group()
    topo = make_topology("complete", pgdist.dist.get_world_size())
    comms = [TimedComm(topo) for _ in range(4)]
    tau = args.overlap
    huge = 10**9
    contenders = [
        trainer("floor (no outer sync)", comms[0], args, huge, 0),
        trainer("streaming tau=0", comms[1], args, args.period, 0),
        trainer(f"streaming tau={tau}", comms[2], args, args.period, tau),
        probe(comms[3], args),
    ]
    for c in contenders:  # warm-up: one period each, untimed
        c.run_period()
        c.drain()
    for r in range(args.repeats):
        for c in contenders:
            c.times.append([])
            c.blocked.append([])
        for b in range(args.blocks):
            k = (r * args.blocks + b) % len(contenders)
            for c in contenders[k:] + contenders[:k]:
                times, blocked = timed_block(c, comms[0], args.periods)
                c.times[r] += times
                c.blocked[r] += blocked
    if comms[0].rank == 0:
        report(contenders, args, tau)
    pgdist.destroy_process_group()


if __name__ == "__main__":
    main()
