"""Gradient compression: step time of compress + exchange + decompress on both engines (issue 16).

What is measured, per gradient size D (float32; default D = 10^6 and 10^7), on

(a) the simulated engine: ``SimulatedCommunicator(make_topology("ring", n))`` with n = 16
    workers in one process, tensors ``[n, D]``;
(b) the distributed engine: under torchrun, one worker per process (``init_process_group()``,
    gloo on the CPU, NCCL with ``--device cuda``), ``DistributedCommunicator(make_topology("ring",
    n))``, tensors ``[1, D]`` (n = the world size, 4 in the runs of the issue).

Rows, all timed in the same run (the library's own code paths, nothing re-implemented):

- ``all-reduce (mean)``: the uncompressed average ``comm.mean(g)``; the reference of the
  compressor rows. On the simulated engine it is a mean over the worker axis (no wire at all);
  on the distributed engine a copy into the workspace, an all-reduce and a division;
- ``topk`` (ratio 0.01), ``randomk`` (ratio 0.01), ``qsgd`` (default levels, s = 16), ``sign``,
  ``terngrad``: ``C = make_compressor(name)``, then per step
  ``msg = C.compress(g, generator, worker_ids=comm.worker_ids, n_workers=comm.n_workers)`` and
  ``compressed_mean(comm, C, msg)`` (``exchange="auto"``: random-k, a linear compressor,
  all-reduces its k values; the others pack their messages, all-gather the bytes, and every
  worker unpacks and decompresses all n messages and averages them);
- ``allreduce step``: ``make_algorithm("allreduce").step(x, g, state, comm)`` (one
  ``comm.mean`` of g, then x <- x - lr * g_bar with the defaults lr = 0.1, momentum 0); the
  reference of the PowerSGD row;
- ``powersgd step``: ``make_algorithm("powersgd", rank=2)`` bound with ``bind_run(alg,
  segments=..., shapes=...)`` to a matrix-shaped model: D = 10^6 is one 1000 x 1000 matrix,
  D = 10^7 ten of them (in general floor(D / 10^6) matrices 1000 x 1000 plus the rest as a 1-D
  tensor, which PowerSGD sends uncompressed; below 10^6 one near-square matrix), and its whole
  ``step(x, g, state, comm)``: error feedback, the rank-2 power iteration with two all-reduces
  (P and Q), the decompression into the buffer, and the same SGD update as ``allreduce step``
  (same defaults). The PowerSGD ratio is step vs step, so both include that update; it is
  compressed from the first step (``start_iter = 0``), and the warm-up step draws the random Q,
  so the timed steps are warm-started ones.

``comm.begin_step`` (the distributed heartbeat) is not called: it is the same for every row.
The gradient g is standard normal, worker i's row drawn from a generator seeded with
``seed + i`` (the same rows on both engines); the compressors' generator is seeded identically
on every worker (random-k's shared index set needs it).

Protocol: ``--warmup`` (default 1) untimed rounds of one step of every row, then ``--repeats``
(default 3) interleaved rounds, each running ``--iters`` timed steps of every row in a block,
the order of the rows rotating by one from round to round. A step's time is the wall clock of
the call (device synchronised before and after). On the distributed engine each rank times its
own steps (a barrier before every block, none inside it) and the time of a step is the maximum
over the ranks (one all-reduce with MAX after the measurement, outside the timed region). A
repeat's figure is the median over its steps; the table shows the repeats and their median, and
the ratio of that median to the reference row's. To keep D = 10^7 within minutes on a 2-core
machine (one simulated step of TernGrad there takes ~40 s, of sign ~13 s), ``--iters`` defaults
to 2 for D <= 10^6 and to 1 above, and a row whose step, predicted linear in D from the
previous size's median, exceeds ``WARMUP_SKIP_S`` (2 s) is not warmed up (listed under the
table): one-time costs are negligible next to such a step. The reference rows and PowerSGD are
always warmed up (the first PowerSGD step draws the random Q).

Bytes per worker per step: the increase of peergrad's ``comm.bytes_sent`` over the timed steps,
divided by their number (max over the workers): ``2 (n - 1) / n * 4 D`` for the all-reduce
rows, ``(n - 1) * nbytes(D)`` for an all-gathered message, ``2 (n - 1) / n * 4 k`` for random-k
and ``2 (n - 1) / n * 4 sum_j r (m_j + k_j)`` for PowerSGD; ``fewer`` is the reference row's
bytes over the row's.

Memory: decoding n packed messages expands them to int64 bits first (``_unpack_bits``), so the
peak of a compressor row is a multiple of n * D: measured on the simulated engine at
n = 16, D = 10^6, about 6 (top-k), 1 (random-k), 115 (QSGD), 26 (sign) and 52 (TernGrad) bytes
per element; :data:`PEAK_BYTES` holds these, rounded up. A distributed rank decodes the same n
messages, and the ranks of one host share its memory. A row whose estimate (times the ranks on
the host on the CPU) exceeds :data:`MEM_FRACTION` of the memory available once the common
buffers are allocated (``MemAvailable``, or the free memory of the CUDA device) is skipped with
the reason printed (all ranks agree: the decision is all-reduced). QSGD at D = 10^7 (~18-20 GB) does
not fit on a 24 GiB machine.

Target (issue 16), printed with PASS or MISS: on the distributed engine at D = 10^7,
``powersgd step / allreduce step < 1`` (median over the repeats; per-repeat ratios in
brackets). The other ratios are reported, not judged.

Usage::

    python benchmarks/compression.py --engine simulated        # simulated part only
    torchrun --standalone --nproc-per-node 4 benchmarks/compression.py --engine distributed
        [--sizes 1e6 1e7] [--repeats 3] [--iters N] [--warmup 1] [--device cpu|cuda]
        [--workers 16] [--compressors topk randomk qsgd sign terngrad] [--threads N] [--seed 0]

``--engine both`` (the default) runs the distributed part when started by torchrun, then the
simulated part on rank 0 only; started without torchrun it runs the simulated part and prints
how to run the other. ``--workers`` is the simulated n (the distributed n is the world size).
torchrun sets ``OMP_NUM_THREADS=1``; ``--threads`` overrides the torch thread count.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from _timing import rank_device, timed
from torch import Tensor

from peergrad.algorithms import make_algorithm
from peergrad.algorithms.base import bind_run
from peergrad.comm import SimulatedCommunicator
from peergrad.comm import distributed as pgdist
from peergrad.comm.base import Communicator
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import COMPRESSORS, make_compressor
from peergrad.topology import make_topology

COMPRESSOR_ROWS = ("topk", "randomk", "qsgd", "sign", "terngrad")
RATIO = 0.01  # kept fraction of top-k and random-k
MEAN = "all-reduce (mean)"
ALLREDUCE_STEP = "allreduce step"
POWERSGD_STEP = "powersgd step"
POWERSGD_RANK = 2
SIDE = 1000  # PowerSGD's model: matrices SIDE x SIDE
#: Peak extra memory of a compressor row, bytes per element of the n x D messages it decodes.
PEAK_BYTES = {"topk": 8, "randomk": 2, "qsgd": 128, "sign": 32, "terngrad": 60}
MEM_FRACTION = 0.7  # of the available memory a row's estimated peak may take
TARGET_D = 10**7
WARMUP_SKIP_S = 2.0  # a row predicted slower than this per step is not warmed up
TIMEOUT_S = 600.0  # process group and communicator waits (a slow step must not look like death)
W = 20  # name column
HINT = "torchrun --standalone --nproc-per-node 4 benchmarks/compression.py --engine distributed"

assert set(COMPRESSOR_ROWS) <= set(COMPRESSORS)


@dataclass
class Row:
    """One timed row: ``fn`` is one step; ``ref`` the row its time is divided by."""

    name: str
    ref: str | None
    fn: Callable[[], object] | None = None
    skipped: str | None = None
    times: list[list[float]] = field(default_factory=list)  # [repeat][step], this rank
    sent: float = 0.0  # bytes over the timed steps (max over local workers)
    timed_steps: int = 0


@dataclass
class Result:
    """One D of one engine, reduced over the ranks."""

    D: int
    rows: list[Row]
    per_repeat: dict[str, list[float]]  # name -> median step time of each repeat
    median: dict[str, float]
    bytes_per_step: dict[str, float]
    iters: int
    shapes: list[tuple[int, ...]]
    cold: list[str]  # rows not warmed up (predicted step > WARMUP_SKIP_S)


def matrix_shapes(D: int) -> list[tuple[int, ...]]:
    """PowerSGD's model of D values: SIDE x SIDE matrices and the rest as a 1-D tensor (below
    SIDE^2: one near-square matrix and the rest)."""
    if D >= SIDE * SIDE:
        count, rest = divmod(D, SIDE * SIDE)
        shapes: list[tuple[int, ...]] = [(SIDE, SIDE)] * count
    else:
        rows = max(1, math.isqrt(D))
        shapes, rest = [(rows, D // rows)], D - rows * (D // rows)
    return shapes + ([(rest,)] if rest else [])


def describe_shapes(shapes: list[tuple[int, ...]]) -> str:
    parts: dict[tuple[int, ...], int] = {}
    for s in shapes:
        parts[s] = parts.get(s, 0) + 1
    return " + ".join(f"{c} x {'x'.join(map(str, s))}" for s, c in parts.items())


def available_bytes(device: torch.device) -> float | None:
    """Free memory of the CUDA device, or the host's ``MemAvailable`` (None if unknown)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 1024.0 * int(line.split()[1])
    except OSError:
        pass
    return None


def gradient(worker_ids: Tensor, D: int, seed: int, device: torch.device) -> Tensor:
    """Standard-normal ``[w, D]``; worker i's row from a generator seeded with ``seed + i``."""
    g = torch.empty(len(worker_ids), D, device=device)
    for row, i in enumerate(worker_ids.tolist()):
        gen = torch.Generator().manual_seed(seed + int(i))
        g[row].copy_(torch.randn(D, generator=gen))
    return g


def build_rows(
    comm: Communicator, D: int, args: argparse.Namespace, device: torch.device, procs: int
) -> tuple[list[Row], list[tuple[int, ...]]]:
    """The rows of one D; compressor rows whose memory estimate does not fit are skipped.
    ``procs``: processes sharing this host's memory (CPU) that run the same rows."""
    g = gradient(comm.worker_ids, D, args.seed, device)
    x = torch.zeros_like(g)  # parameters, shared by the two algorithm rows (their cost ignores x)
    shapes = matrix_shapes(D)
    rows = [Row(MEAN, None, lambda: comm.mean(g))]

    for name in args.compressors:
        compressor = make_compressor(name, ratio=RATIO)
        gen = torch.Generator().manual_seed(args.seed)  # same state on every worker

        def step(c=compressor, gen=gen) -> Tensor:
            msg = c.compress(g, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
            return compressed_mean(comm, c, msg)

        rows.append(Row(name, MEAN, step))

    for name, ref, alg in (
        (ALLREDUCE_STEP, None, make_algorithm("allreduce")),
        (
            POWERSGD_STEP,
            ALLREDUCE_STEP,
            bind_run(
                make_algorithm("powersgd", rank=POWERSGD_RANK),
                segments=[math.prod(s) for s in shapes],
                shapes=shapes,
            ),
        ),
    ):
        state = [alg.init(x, comm)]

        def alg_step(alg=alg, state=state) -> None:
            state[0] = alg.step(x, g, state[0], comm)

        rows.append(Row(name, ref, alg_step))

    # memory check, with the common buffers and the algorithms' states allocated
    avail = available_bytes(device)
    sharing = procs if device.type == "cpu" else 1
    reasons: list[str | None] = []
    for row in rows:
        reason = None
        if row.name in PEAK_BYTES and avail is not None:
            need = PEAK_BYTES[row.name] * comm.n_workers * D * sharing
            if need > MEM_FRACTION * avail:
                hosts = f" x {sharing} ranks on this host" if sharing > 1 else ""
                reason = (
                    f"skipped: needs ~{need / 1e9:.1f} GB at its peak ({PEAK_BYTES[row.name]} B "
                    f"per element of the n x D messages it decodes{hosts}), more than "
                    f"{MEM_FRACTION:.0%} of the {avail / 1e9:.1f} GB available"
                )
        reasons.append(reason)
    flags = torch.tensor([r is not None for r in reasons], dtype=torch.float64)
    if dist.is_initialized():  # every rank must skip the same rows
        flags = flags.to(device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        flags = flags.cpu()
    for row, reason, flag in zip(rows, reasons, flags.tolist(), strict=True):
        if flag:
            row.skipped = reason or "skipped: memory check failed on another rank"
            row.fn = None
    return rows, shapes


def measure(
    comm: Communicator,
    rows: list[Row],
    args: argparse.Namespace,
    iters: int,
    device: torch.device,
    cold: list[str],
) -> None:
    """Warm-up rounds (rows named in ``cold`` excepted), then ``args.repeats`` interleaved
    rounds of ``iters`` timed steps per row, the order rotating by one every round."""
    active = [r for r in rows if r.skipped is None]
    distributed = dist.is_initialized()

    def block(row: Row, count: int, keep: bool) -> None:
        if distributed:
            dist.barrier()  # blocks start together; nothing inside a block waits on a barrier
        times = []
        for _ in range(count):
            before = float(comm.bytes_sent.max())
            dt = timed(row.fn, device)
            if keep:
                row.sent += float(comm.bytes_sent.max()) - before
                row.timed_steps += 1
            times.append(dt)
        if keep:
            row.times.append(times)

    order = list(range(len(active)))
    for _ in range(args.warmup):
        for i in order:
            if active[i].name not in cold:
                block(active[i], 1, keep=False)
        order = order[1:] + order[:1]
    for _ in range(args.repeats):
        for i in order:
            block(active[i], iters, keep=True)
        order = order[1:] + order[:1]


def reduce_result(
    D: int,
    rows: list[Row],
    args: argparse.Namespace,
    iters: int,
    shapes: list[tuple[int, ...]],
    device: torch.device,
    cold: list[str],
) -> Result:
    """Max over the ranks of every step's time and of the bytes (outside the timed region)."""
    active = [r for r in rows if r.skipped is None]
    times = torch.tensor([r.times for r in active], dtype=torch.float64)  # [rows, repeats, iters]
    sent = torch.tensor([r.sent / max(1, r.timed_steps) for r in active], dtype=torch.float64)
    if dist.is_initialized():
        both = torch.cat([times.flatten(), sent]).to(device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        both = both.cpu()
        times, sent = both[: times.numel()].reshape(times.shape), both[times.numel() :]
    per_repeat = {
        r.name: [statistics.median(rep) for rep in times[i].tolist()] for i, r in enumerate(active)
    }
    median = {k: statistics.median(v) for k, v in per_repeat.items()}
    sent_of = {r.name: float(sent[i]) for i, r in enumerate(active)}
    return Result(D, rows, per_repeat, median, sent_of, iters, shapes, cold)


def iters_for(D: int, args: argparse.Namespace) -> int:
    if args.iters is not None:
        return args.iters
    return 2 if D <= 10**6 else 1


def cold_rows(rows: list[Row], D: int, prev: Result | None) -> list[str]:
    """Compressor rows whose step, predicted linear in D from the previous size's median (the
    same on every rank), exceeds :data:`WARMUP_SKIP_S`: one-time costs are negligible next to
    such a step, and a warm-up step of it would cost as much as a repeat."""
    if prev is None:
        return []
    return [
        r.name
        for r in rows
        if r.skipped is None
        and r.ref is not None  # the references are always warmed up
        and r.name != POWERSGD_STEP  # so is PowerSGD (its first step draws Q)
        and r.name in prev.median
        and prev.median[r.name] * D / prev.D > WARMUP_SKIP_S
    ]


def run_engine(
    comm: Communicator, args: argparse.Namespace, device: torch.device, procs: int, print_: bool
) -> list[Result]:
    results: list[Result] = []
    for D in args.sizes:
        t0 = time.perf_counter()
        iters = iters_for(D, args)
        rows, shapes = build_rows(comm, D, args, device, procs)
        cold = cold_rows(rows, D, results[-1] if results else None)
        measure(comm, rows, args, iters, device, cold)
        result = reduce_result(D, rows, args, iters, shapes, device, cold)
        results.append(result)
        for row in rows:
            row.fn = None  # frees this D's buffers and states before the next D
        if print_:
            report_size(result, args, time.perf_counter() - t0)
    return results


# ---------------------------------------------------------------------------------- reporting
def report_size(res: Result, args: argparse.Namespace, seconds: float) -> None:
    mb = 4 * res.D / 1e6
    print(
        f"D = {res.D:,} float32 ({mb:.0f} MB per worker); {args.warmup} warm-up round(s), "
        f"{args.repeats} repeats x {res.iters} step(s) per row; powersgd model: "
        f"{describe_shapes(res.shapes)}, rank {POWERSGD_RANK}; {seconds:.0f} s"
    )
    if res.cold and args.warmup:
        print(
            f"not warmed up (step predicted > {WARMUP_SKIP_S:.0f} s from the previous D): "
            + ", ".join(res.cold)
        )
    reps = " ".join(f"{f'r{r + 1} ms':>9}" for r in range(args.repeats))
    print(
        f"{'row':<{W}} {reps} {'median ms':>10} {'ratio':>7}  {'reference':<{W}}"
        f"{'bytes/worker/step':>18} {'fewer':>8}"
    )
    for row in res.rows:
        if row.skipped is not None:
            print(f"{row.name:<{W}} {row.skipped}")
            continue
        cells = " ".join(f"{1e3 * v:>9.1f}" for v in res.per_repeat[row.name])
        m, sent = res.median[row.name], res.bytes_per_step[row.name]
        ref = row.ref if row.ref is not None else row.name
        ratio = m / res.median[ref] if ref in res.median else math.nan
        ref_sent = res.bytes_per_step.get(ref, math.nan)
        fewer = f"{ref_sent / sent:>7.1f}x" if sent > 0 else f"{'-':>8}"
        print(
            f"{row.name:<{W}} {cells} {1e3 * m:>10.1f} {ratio:>6.2f}x  "
            f"{row.ref or '-':<{W}}{sent:>18,.0f} {fewer}"
        )
    print(flush=True)


def report_summary(results: list[Result], title: str) -> None:
    """Ratios to the reference (median step time) for every D, side by side."""
    if not results:
        return
    print(f"{title}: ratio of the median step time to the reference row's, per D")
    print(f"{'row':<{W}} {'reference':<{W}}" + "".join(f"{f'D={r.D:.0e}':>12}" for r in results))
    for row in results[0].rows:
        if row.ref is None:
            continue
        cells = []
        for res in results:
            if row.name in res.median and row.ref in res.median:
                cells.append(f"{res.median[row.name] / res.median[row.ref]:>11.2f}x")
            else:
                cells.append(f"{'skipped':>12}")
        print(f"{row.name:<{W}} {row.ref:<{W}}" + "".join(cells))
    print(flush=True)


def report_target(results: list[Result], n: int, backend: str) -> None:
    label = f"target: powersgd step / allreduce step < 1 at D = {TARGET_D:,} ({n} {backend} ranks)"
    res = next((r for r in results if r.D == TARGET_D), None)
    if res is None:
        print(f"{label}: SKIPPED (D = {TARGET_D:,} is not in --sizes)")
        return
    if POWERSGD_STEP not in res.median or ALLREDUCE_STEP not in res.median:
        print(f"{label}: SKIPPED (a row was not measured)")
        return
    ratio = res.median[POWERSGD_STEP] / res.median[ALLREDUCE_STEP]
    pairs = zip(res.per_repeat[POWERSGD_STEP], res.per_repeat[ALLREDUCE_STEP], strict=True)
    each = " ".join(f"{a / b:.2f}" for a, b in pairs)
    verdict = "PASS" if ratio < 1.0 else "MISS"
    note = "" if len(res.per_repeat[POWERSGD_STEP]) >= 3 else " (fewer than 3 repeats)"
    print(f"{label}: {ratio:.2f}x [{each}]  {verdict}{note}", flush=True)


def header(device: torch.device) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = (
        " load={:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    )
    return (
        f"device={device} threads/process={torch.get_num_threads()} torch={torch.__version__} "
        f"cores={cores}{load}"
    )


# ---------------------------------------------------------------------------------- the engines
def simulated_part(args: argparse.Namespace) -> None:
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    t0 = time.perf_counter()
    comm = SimulatedCommunicator(make_topology("ring", args.workers))
    print(
        f"== simulated engine: n = {args.workers} workers in one process, tensors [{args.workers}"
        f", D]; {header(device)}",
        flush=True,
    )
    results = run_engine(comm, args, device, procs=1, print_=True)
    report_summary(results, "simulated engine")
    print(f"simulated part: {time.perf_counter() - t0:.0f} s\n", flush=True)


def distributed_part(args: argparse.Namespace) -> int:
    """The distributed part (under torchrun); returns this process's rank."""
    device = rank_device(args.device)
    pgdist.init_process_group(device=device, timeout_s=TIMEOUT_S)
    rank, n = dist.get_rank(), dist.get_world_size()
    backend = dist.get_backend()
    comm = pgdist.DistributedCommunicator(make_topology("ring", n), timeout_s=TIMEOUT_S)
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    t0 = time.perf_counter()
    if rank == 0:
        print(
            f"== distributed engine: {n} {backend} processes (ring topology), tensors [1, D] per "
            f"rank; step time = max over ranks; {header(device)}",
            flush=True,
        )
    results = run_engine(comm, args, device, procs=procs, print_=rank == 0)
    if rank == 0:
        report_summary(results, f"distributed engine ({n} {backend} ranks)")
        report_target(results, n, backend)
        print(f"distributed part: {time.perf_counter() - t0:.0f} s\n", flush=True)
    dist.barrier()
    pgdist.destroy_process_group()
    return rank


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        type=lambda s: int(float(s)),
        nargs="+",
        default=[10**6, 10**7],
        help="gradient sizes D (e.g. 1e6 1e7)",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="timed steps per row per round (default: 2 for D <= 1e6, 1 above)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of one step per row")
    p.add_argument("--engine", choices=("simulated", "distributed", "both"), default="both")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workers", type=int, default=16, help="n of the simulated engine")
    p.add_argument(
        "--compressors", nargs="+", choices=COMPRESSOR_ROWS, default=list(COMPRESSOR_ROWS)
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads per process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for key in ("repeats", "workers"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1")
    if args.iters is not None and args.iters < 1:
        p.error("--iters must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if any(D < 1 for D in args.sizes):
        p.error("--sizes must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torchrun = pgdist.launched_by_torchrun()
    if args.engine == "distributed" and not torchrun:
        raise SystemExit(f"the distributed part must be started by torchrun, e.g. `{HINT}`")
    rank = int(os.environ.get("RANK", "0")) if torchrun else 0
    if args.engine in ("distributed", "both") and torchrun:
        rank = distributed_part(args)
    if args.engine in ("simulated", "both") and rank == 0:
        simulated_part(args)
    if args.engine == "both" and not torchrun:
        print(f"distributed part (and its target) not run: start it with `{HINT}`")


if __name__ == "__main__":
    main()
