"""Is the simulated clock right? A profile imposed on real processes vs the clock's prediction.

Issue 26 item 5. Run under torchrun with 4 processes (gloo, CPU)::

    .venv/bin/torchrun --standalone --nproc-per-node 4 benchmarks/system_reality.py

Every process trains an MLP 784-H-H-10 (default H = 256, about 270k parameters, 1.07 MB float32
messages) on random data, per-worker batch B (default 64), one thread per process, with
``allreduce``, ``dpsgd`` (CTA, ring) and ``local-sgd`` (period 5, all-reduce averaging), on
:class:`peergrad.comm.distributed.DistributedCommunicator` with a system profile imposed
(:mod:`peergrad.system.impose`), in two cases:

- *straggler*: worker 3 is a 4x persistent straggler, relative to the measured compute (its
  compute phase is made 4 times as long as it measures); links add nothing;
- *slow link*: the ring edge 1 <-> 2 (both directions) adds 20 ms of latency and a bandwidth
  at which one message takes 20 ms more; every other link adds nothing; no straggler.

Measured: before the cases, the plain compute time per step ``c`` (forward, backward and
update, all 4 processes computing at once, median over steps, averaged over the workers), and
the loopback latency ``alpha0`` and bandwidth ``beta0`` of the same process group (ping-pong
between workers 0 and 1: 8-byte messages for the latency, model-sized ones for the bandwidth).
Then, per case and algorithm, ``--warmup`` steps and ``--repeats`` windows of ``--steps``
steps; every process records the ``time.monotonic()`` (one clock for all processes of the
machine) at which it finishes each step, and a window's time is that of the slowest worker,
``max_i t_i(end) - max_i t_i(start)``, divided by its steps.

Predicted: the simulated engine runs the same algorithm on 4 stacked workers of the same size
(random gradients: the clock depends on the messages, not their values) with a
:class:`peergrad.system.SystemClock` whose profile is *the measured system plus the imposed
profile*: ``step_ms = c`` with the case's speed factors, every link ``alpha0`` and ``beta0``, and
the slow link ``alpha0 + 20 ms`` and ``1 / (1 / beta0 + 1 / beta_slow)``. The prediction per step
is the clock's slowest-worker time over the same windows.

Two calibrations (both measured at start, in the same run): gossip is predicted with the
ping-pong's ``alpha0`` and ``beta0``; the algorithms that all-reduce (``allreduce``,
``local-sgd``) with ``alpha0`` and the bandwidth at which the ring formula reproduces the measured
all-reduce of one message (gloo's all-reduce on loopback is bound by the CPU's reductions and
copies, 5-8 ms for 0.5-1 MB here, where the ping-pong fit predicts under 1 ms).

``--sleep-compute-ms S`` imposes the compute as a sleep instead (the profile's ``step_ms = S``,
a straggler sleeping ``4 S``) on top of a real gradient: the prediction's compute of worker i is
then ``c + S / speed_i``. Use it when the machine has fewer cores than processes: stretching
real compute there changes how fast the *other* processes compute (they share the cores), which
no clock without CPU contention can predict. The table in docs/benchmarks.md uses
``--sleep-compute-ms 20 --hidden 128 --batch 64``.

Printed: one line per case and algorithm with the measured ms/step (median over the windows and
their range), the prediction and the ratio measured / predicted. Timings on a shared machine
are noisy: run it when the machine is quiet and repeat it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from peergrad.algorithms import Algorithm
from peergrad.algorithms.registry import make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.comm import distributed as pgdist
from peergrad.comm.base import allreduce_bytes
from peergrad.system import ComputeProfile, LinkOverride, LinkProfile, SystemClock, SystemProfile
from peergrad.topology import make_topology
from peergrad.train.params import FlatParams, bind_flat

#: links that add nothing: zero latency and a bandwidth at which 1 MB takes 1 ns
FREE = LinkProfile(latency_s=0.0, bandwidth_bytes_per_s=1e15)
SLOW_EDGE = (1, 2)
SLOW_LATENCY_S = 20e-3
SLOW_SERIAL_S = 20e-3  # one message's extra serialisation on the slow link
STRAGGLER = 3
SLOWDOWN = 4.0
ALGORITHMS: dict[str, dict[str, Any]] = {
    "allreduce": {"lr": 0.01},
    "dpsgd": {"lr": 0.01},
    "local-sgd": {"lr": 0.01, "period": 5},
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256, help="MLP width H")
    p.add_argument("--batch", type=int, default=256, help="per-worker batch size")
    p.add_argument("--steps", type=int, default=30, help="steps per timed window")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per case")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before the windows")
    p.add_argument(
        "--sleep-compute-ms",
        type=float,
        default=0.0,
        help="impose the compute as a sleep of this many ms per step (the profile's step_ms; a "
        "straggler sleeps 4x as long) on top of the real gradient, instead of stretching the "
        "measured compute: use it when the machine has fewer cores than processes, where real "
        "compute contends for the cores (default 0: relative mode)",
    )
    return p.parse_args()


class Worker:
    """One process's model bound to flat ``x``/``g`` rows and its gradient function."""

    def __init__(self, hidden: int, batch: int, seed: int) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 10),
        )  # fmt: skip
        layout = FlatParams.of(self.model)
        self.x = layout.flatten(self.model).reshape(1, -1).clone()
        self.g = torch.zeros_like(self.x)
        bind_flat(self.model, layout, self.x[0], self.g[0])
        gen = torch.Generator().manual_seed(seed)
        self.xb = torch.randn(batch, 784, generator=gen)
        self.yb = torch.randint(0, 10, (batch,), generator=gen)

    def grad(self) -> Tensor:
        self.g.zero_()
        F.cross_entropy(self.model(self.xb), self.yb).backward()
        return self.g


def all_mean(value: float, group: Any) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, group=group)
    return float(t[0]) / dist.get_world_size(group)


def loopback(group: Any, nbytes: int, rank: int) -> tuple[float, float]:
    """Latency (s) and bandwidth (bytes/s) between workers 0 and 1 by ping-pong."""

    def one_way(numel: int, reps: int) -> float:
        buf = torch.zeros(numel, dtype=torch.float32)
        times = []
        for _ in range(reps):
            t0 = time.monotonic()
            if rank == 0:
                dist.send(buf, 1, group=group)
                dist.recv(buf, 1, group=group)
            elif rank == 1:
                dist.recv(buf, 0, group=group)
                dist.send(buf, 0, group=group)
            times.append((time.monotonic() - t0) / 2)
        return statistics.median(times)

    alpha = one_way(2, 200)
    big = one_way(nbytes // 4, 20)
    out = torch.tensor([alpha, nbytes / max(big - alpha, 1e-9)], dtype=torch.float64)
    dist.broadcast(out, 0, group=group)
    return float(out[0]), float(out[1])


def run_steps(
    alg: Algorithm, comm: Any, x: Tensor, state: Any, grad: Callable[[], Tensor], steps: int
) -> tuple[Any, list[float]]:
    """``steps`` steps in the training loop's call order; the monotonic time after each."""
    ends = []
    for _ in range(steps):
        step = getattr(state, "step", 0) + 1
        comm.begin_step(step)
        pending = alg.pre_gradient(x, state, comm)
        comm.compute()
        g = grad()
        state = alg.step(x, g, state, comm, pending=pending)
        ends.append(time.monotonic())
    return state, ends


def profiles(case: str, nbytes: int, sleep_ms: float) -> SystemProfile:
    """The imposed profile of a case, for 4 workers (``sleep_ms > 0``: compute imposed as a
    sleep of ``sleep_ms / speed_i`` per step, absolute mode)."""
    step_ms = sleep_ms if sleep_ms > 0 else None
    if case == "straggler":
        speed = tuple(1 / SLOWDOWN if i == STRAGGLER else 1.0 for i in range(4))
        compute = ComputeProfile(step_ms=step_ms, speed=speed)
        return SystemProfile(4, compute=compute, links=FREE, name=case)
    a, b = SLOW_EDGE
    bw = nbytes / SLOW_SERIAL_S
    slow = (LinkOverride(a, b, SLOW_LATENCY_S, bw), LinkOverride(b, a, SLOW_LATENCY_S, bw))
    links = LinkProfile(latency_s=0.0, bandwidth_bytes_per_s=1e15, overrides=slow)
    return SystemProfile(4, compute=ComputeProfile(step_ms=step_ms), links=links, name=case)


def predicting(
    imposed: SystemProfile, c: float | list[float], alpha0: float, beta0: float
) -> SystemProfile:
    """The measured system plus the imposed profile (module docstring); ``c``: the compute of
    every worker (seconds) or of each (the in-run measurement). With an imposed ``step_ms``
    (absolute mode), worker i computes ``c_i + step_ms / speed_i``."""
    speed = imposed.compute.speed
    step_s = imposed.compute.step_s
    if step_s:  # absolute mode: the real gradient plus the slept compute
        base = speed if speed is not None else (1.0,) * 4
        cs = c if isinstance(c, list) else [c] * 4
        c = [ci + step_s / si for ci, si in zip(cs, base, strict=True)]
        speed = None
    if isinstance(c, list):  # per-worker compute c_i: step c_max, speed_i = speed * c_max / c_i
        base = speed if speed is not None else (1.0,) * len(c)
        top = max(c)
        speed = tuple(s * top / ci for s, ci in zip(base, c, strict=True))
        c = top
    overrides = tuple(
        LinkOverride(
            o.src, o.dst, alpha0 + o.latency_s, 1 / (1 / beta0 + 1 / o.bandwidth_bytes_per_s)
        )
        for o in imposed.links.overrides
    )
    return SystemProfile(
        4,
        compute=ComputeProfile(step_ms=c * 1e3, speed=speed),
        links=LinkProfile(latency_s=alpha0, bandwidth_bytes_per_s=beta0, overrides=overrides),
    )


def predict(name: str, profile: SystemProfile, dim: int, args: argparse.Namespace) -> list[float]:
    """Seconds per step of each window on the simulated clock (same steps as measured)."""
    comm = SimulatedCommunicator(make_topology("ring", 4), clock=SystemClock(profile))
    alg = make_algorithm(name, **ALGORITHMS[name])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, dim, generator=gen) * 0.01
    state = alg.init(x, comm)
    g = torch.randn(4, dim, generator=gen)
    state, _ = run_steps(alg, comm, x, state, lambda: g, args.warmup)
    out = []
    assert comm.clock is not None
    for _ in range(args.repeats):
        t0 = comm.clock.simulated_time_s
        state, _ = run_steps(alg, comm, x, state, lambda: g, args.steps)
        out.append((comm.clock.simulated_time_s - t0) / args.steps)
    return out


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    pgdist.init_process_group(timeout_s=120)
    rank, n = dist.get_rank(), dist.get_world_size()
    if n != 4:
        raise SystemExit(f"run with 4 processes (--nproc-per-node 4), got {n}")
    topo = make_topology("ring", n)
    worker = Worker(args.hidden, args.batch, seed=rank)
    dim = worker.x.shape[1]
    nbytes = dim * 4
    plain = pgdist.DistributedCommunicator(topo)
    group = plain.group

    # plain compute: forward, backward and an SGD-like update, all workers at once
    for _ in range(5):
        worker.grad()
    times = []
    for _ in range(30):
        t0 = time.monotonic()
        worker.x.sub_(worker.grad(), alpha=1e-4)
        times.append(time.monotonic() - t0)
    c = all_mean(statistics.median(times), group)
    alpha0, beta0 = loopback(group, nbytes, rank)
    # the real all-reduce of one message (not fed to the model: a check of the alpha-beta fit)
    buf, ar = worker.g.clone(), []
    for _ in range(20):
        dist.barrier(group=group)
        t0 = time.monotonic()
        dist.all_reduce(buf, group=group)
        ar.append(time.monotonic() - t0)
    t_ar = all_mean(statistics.median(ar), group)
    ar_model = pgdist.NetworkModel(alpha0, beta0).allreduce_time_s(nbytes, n)
    # gloo's all-reduce on loopback is bound by the CPU (reductions and copies), not by the
    # ping-pong's bandwidth: the algorithms that all-reduce are predicted with the bandwidth at
    # which the ring formula gives the measured all-reduce time (the "collective" calibration)
    ring_bytes = allreduce_bytes(nbytes, n)
    beta_ar = ring_bytes / max(t_ar - 2 * (n - 1) * alpha0, 1e-9)
    if rank == 0:
        print(
            f"4 gloo processes, MLP 784-{args.hidden}-{args.hidden}-10 ({dim} parameters, "
            f"{nbytes / 1e6:.2f} MB messages), batch {args.batch}; measured compute "
            f"{c * 1e3:.1f} ms/step, loopback latency {alpha0 * 1e6:.0f} us, bandwidth "
            f"{beta0 / 1e9:.2f} GB/s; all-reduce {t_ar * 1e3:.1f} ms (alpha-beta model "
            f"{ar_model * 1e3:.1f} ms; fitted all-reduce bandwidth {beta_ar / 1e9:.2f} GB/s); "
            f"imposed compute sleep {args.sleep_compute_ms:g} ms; "
            f"{args.repeats} windows of {args.steps} steps after "
            f"{args.warmup}",
            flush=True,
        )
        print(
            f"{'case':<10} {'algorithm':<10} {'measured ms':>22} {'predicted':>10} "
            f"{'ratio':>6} {'in-run':>8} {'ratio':>6}   in-run compute ms (workers 0/1/2/3)"
        )
    for case in ("straggler", "slow-link"):
        imposed = profiles(case, nbytes, args.sleep_compute_ms)
        for name in ALGORITHMS:
            comm = pgdist.DistributedCommunicator(topo, profile=imposed)
            alg = make_algorithm(name, **ALGORITHMS[name])
            state = alg.init(worker.x, comm)
            state, e = run_steps(alg, comm, worker.x, state, worker.grad, args.warmup)
            ends = [e[-1]]  # no barrier: the pipeline runs on as the clock's does
            comm.compute_phase_s, comm.compute_phases = 0.0, 0
            for _ in range(args.repeats):
                state, e = run_steps(alg, comm, worker.x, state, worker.grad, args.steps)
                ends.append(e[-1])
            # in-run compute: this worker's mean measured compute phase (before the sleeps)
            phases = comm.compute_phases  # counted in relative mode only
            ends.append(comm.compute_phase_s / phases if phases else c)
            # the slowest worker's finish of the warm-up and of every window
            everyone = comm.gather(torch.tensor([ends], dtype=torch.float64))
            comm.barrier()
            if rank != 0:
                continue
            assert everyone is not None
            t = everyone[:, :-1].amax(0)
            measured = [float(t[w + 1] - t[w]) / args.steps for w in range(args.repeats)]
            beta = beta_ar if name in ("allreduce", "local-sgd") else beta0
            predicted = predict(name, predicting(imposed, c, alpha0, beta), dim, args)
            in_run = [float(v) for v in everyone[:, -1]]
            predicted_in_run = predict(name, predicting(imposed, in_run, alpha0, beta), dim, args)
            m, p = statistics.median(measured), statistics.median(predicted)
            q = statistics.median(predicted_in_run)
            spread = f"[{min(measured) * 1e3:.1f}-{max(measured) * 1e3:.1f}]"
            print(
                f"{case:<10} {name:<10} {m * 1e3:>8.1f} {spread:>13} {p * 1e3:>10.1f} "
                f"{m / p:>6.2f} {q * 1e3:>8.1f} {m / q:>6.2f}   "
                + "/".join(f"{v * 1e3:.1f}" for v in in_run),
                flush=True,
            )
    pgdist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
