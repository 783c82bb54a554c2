"""What the system clock (``--system``) adds to a whole simulated training step, and the memory
of a run with n = 1024 workers under a profile (issue 26, "Performance").

Timing (default). For each graph (ring, one-peer exponential; n = 256 by default) this script
builds, with the training loop's own machinery, one run per variant: ``prepare()`` of a
:class:`~peergrad.train.TrainConfig` (``--dataset mnist1d``, the default MLP, D-PSGD, the
default per-worker batch capped so that n shards of 4,000 samples each hold one batch), the
:class:`~peergrad.train.session.Session` that :func:`peergrad.train.train` builds, and with a
profile the communicator of ``peergrad train --system FILE.toml``
(:func:`~peergrad.train.loop.clocked_communicator`). It then times the step loop itself
(:func:`peergrad.train.steps._steps`: schedule, ``begin_step``, absent rows, pre-gradient rounds,
``compute``, sampling, ``vmap`` gradient, the algorithm's step with its gossip, and the clock's
work in every communicator call), leaving out only the recorder (NaN guard, evaluations,
checkpoints: the same work with and without a profile). The variants are stepped in blocks of
``--block`` steps, interleaved (the order reversed every other repeat), so that a change of the
machine's load hits all of them alike. Variants:

- ``none``: no profile (no clock);
- ``stragglers``: 100 GFLOP/s devices (the step time from the model's FLOPs), 30% log-normal
  jitter, 10% transient 4x stragglers, random per-link latency (0.1-10 ms) and bandwidth
  (0.1-10 Gbit/s), no failures; on both graphs;
- ``faults``: the same plus 10% link drops per round and churn (1% of the workers leave per
  step, for 10 steps on average); ring only (the one-peer exponential graph is directed, and a
  directed W has no doubly stochastic surviving matrix: such a profile is refused there).

It prints ms per step (median over the repeats) and the ratio ``profile / none`` as the median
of the per-repeat ratios (each from the same interleaved block) with their min-max and
interquartile range. Targets: <= 1.05 on the ring, <= 1.10 on the one-peer exponential graph.

Memory (``--memory``): runs ``peergrad train`` (:func:`peergrad.train.train`, no run folder)
for ``--memory-steps`` steps on ``--memory-workers`` workers (1024) on the ring, once without a
profile and once per ``--memory-profiles`` entry (default: the ``edge`` preset: stragglers,
link drops, churn), each in a fresh Python process, and prints each process's peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its wall time.

Usage: ``python benchmarks/system_overhead.py [--device cuda] [--workers 256] [--repeats 15]
[--block 5] [--batch-size B] [--threads T] [--memory [--memory-only] [--memory-workers 1024]
[--memory-steps 5] [--memory-profiles edge faults]]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import timed

from peergrad.train.config import TrainConfig
from peergrad.train.loop import prepare
from peergrad.train.session import Session
from peergrad.train.steps import _steps

DATASET = "mnist1d"
TRAIN_SAMPLES = 4000  # MNIST-1D's default training set: n shards must each hold one batch

#: The benchmark's own profiles, as ``peergrad train --system FILE.toml`` reads them.
PROFILES: dict[str, str] = {
    "stragglers": """\
name = "stragglers"
[compute]
device_flops = 1.0e11
jitter_sigma = 0.3
straggler_prob = 0.1
straggler_slowdown = 4.0
[links]
random_latency_ms = [0.1, 10.0]
random_bandwidth_gbps = [0.1, 10.0]
""",
}
PROFILES["faults"] = (
    PROFILES["stragglers"].replace('"stragglers"', '"faults"')
    + """\
[failures]
link_drop_prob = 0.1
leave_prob = 0.01
mean_downtime_steps = 10.0
"""
)


def system_arg(name: str, folder: Path) -> str:
    """``--system`` for ``name``: a TOML file written into ``folder`` for this script's own
    profiles, else ``name`` itself (a preset or a TOML path)."""
    if name not in PROFILES:
        return name
    path = folder / f"{name}.toml"
    path.write_text(PROFILES[name])
    return str(path)


def default_batch(n: int) -> int:
    return max(1, min(TrainConfig.batch_size, TRAIN_SAMPLES // n))


class _NoRecorder:
    """The recorder's place in the step loop, doing nothing (same with and without a clock)."""

    def after_step(self, step: int, losses: Any, g: Any, seconds: float) -> None:
        pass


def make_stepper(config: TrainConfig) -> Callable[[int], None]:
    """``run(k)``: the next k steps of ``config``'s run through the training loop's ``_steps``,
    built as :func:`peergrad.train.train` builds it (``prepare`` + its Session)."""
    prep = prepare(config)
    built, n = prep.task, config.workers
    model = built.model
    x = built.x0.expand(n, -1).clone()
    buffers = model.init_buffers(n)

    def grad(x: Any, xb: Any, yb: Any, out: Any = None) -> Any:
        return model.grad(x, buffers, xb, yb, out)

    session = Session(
        algorithm=prep.algorithm,
        schedule=prep.schedule,
        comm=prep.comm,
        sampler=prep.sampler,
        grad=grad,
        loss=lambda xt, xb, yb: model.loss(xt, buffers, xb, yb),
        x=x,
        state=prep.algorithm.init(x, prep.comm),
        buffers=buffers,
        average_buffers=None,
        device=prep.device,
    )
    session.read = built.train.reader(prep.sampler)
    recorder = _NoRecorder()
    done = [0]

    def run(k: int) -> None:
        done[0] = _steps(session, recorder, done[0], done[0] + k, None)  # type: ignore[arg-type]

    return run


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def bench_graph(
    args: argparse.Namespace, topology: str, profiles: list[str], folder: Path
) -> dict[str, dict[str, Any]]:
    n = args.workers
    batch = args.batch_size or default_batch(n)
    base = TrainConfig(
        workers=n,
        topology=topology,
        dataset=DATASET,
        batch_size=batch,
        steps=10**9,  # the schedule's length only; the benchmark steps as it likes
        device=args.device,
        progress=False,
    )
    names = ["none", *profiles]
    steppers = {
        name: make_stepper(
            base if name == "none" else dataclasses.replace(base, system=system_arg(name, folder))
        )
        for name in names
    }
    device = torch.device(args.device)
    for run in steppers.values():  # warm-up
        run(args.block)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            c0 = time.process_time()
            times[name].append(timed(lambda run=steppers[name]: run(args.block), device))
            cpu[name].append(time.process_time() - c0)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        ratios = [t / t0 for t, t0 in zip(times[name], times["none"], strict=True)]
        cpu_ratios = [t / t0 for t, t0 in zip(cpu[name], cpu["none"], strict=True)]
        out[name] = {
            "ms": 1e3 * statistics.median(times[name]) / args.block,
            "ratios": ratios,
            "cpu_ratio": statistics.median(cpu_ratios),
        }
    out["_meta"] = {"batch": batch}
    return out


def print_timing(args: argparse.Namespace) -> None:
    print(
        f"device={args.device} threads={torch.get_num_threads()} n={args.workers} "
        f"dataset={DATASET} model=mlp algorithm=dpsgd; ms per step (median of {args.repeats} "
        f"interleaved blocks of {args.block} steps); ratio = profile / none, median of the "
        "per-block ratios [min-max] (interquartile range); cpu = the same from the process's "
        "CPU time (less sensitive to other processes on the machine)"
    )
    print(f"{'graph':<22}{'batch':>6}{'profile':>12}{'ms/step':>10}{'ratio':>8}{'cpu':>7}  spread")
    graphs = [("ring", ["stragglers", "faults"]), ("one-peer-exponential", ["stragglers"])]
    with tempfile.TemporaryDirectory() as tmp:
        for topology, profiles in graphs:
            r = bench_graph(args, topology, profiles, Path(tmp))
            batch = r.pop("_meta")["batch"]
            for name, v in r.items():
                ratios = v["ratios"]
                q1, q3 = quartiles(ratios)
                spread = (
                    f"[{min(ratios):.3f}-{max(ratios):.3f}] ({q1:.3f}-{q3:.3f})"
                    if name != "none"
                    else ""
                )
                print(
                    f"{topology:<22}{batch:>6}{name:>12}{v['ms']:>10.2f}"
                    f"{statistics.median(ratios):>8.3f}{v['cpu_ratio']:>7.3f}  {spread}",
                    flush=True,
                )


def memory_child(args: argparse.Namespace) -> None:
    """One run of ``peergrad train`` (no folder) in this process; print its peak RSS as JSON."""
    from peergrad.train import train

    n = args.memory_workers
    with tempfile.TemporaryDirectory() as tmp:
        system = None if args.memory_child == "none" else system_arg(args.memory_child, Path(tmp))
        config = TrainConfig(
            workers=n,
            topology="ring",
            dataset=DATASET,
            batch_size=args.batch_size or default_batch(n),
            steps=args.memory_steps,
            device=args.device,
            system=system,
            progress=False,
        )
        t0 = time.perf_counter()
        result = train(config, write=False, plots=False)
        seconds = time.perf_counter() - t0
    rec = result.records[-1]
    print(
        json.dumps(
            {
                "profile": args.memory_child,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": seconds,
                "steps": rec["step"],
                "batch": config.batch_size,
                "simulated_time_s": rec.get("simulated_time_s"),
                "cuda_peak_mib": (
                    torch.cuda.max_memory_allocated() / 2**20
                    if torch.device(args.device).type == "cuda"
                    else None
                ),
            }
        )
    )


def print_memory(args: argparse.Namespace) -> None:
    print(
        f"peak memory: peergrad train --workers {args.memory_workers} --topology ring --dataset "
        f"{DATASET} --steps {args.memory_steps} (a fresh process each; RSS = "
        "getrusage ru_maxrss)"
    )
    print(f"{'profile':>12}{'batch':>6}{'peak RSS MiB':>14}{'seconds':>9}{'sim. time s':>12}")
    for name in ["none", *args.memory_profiles]:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            name,
            "--memory-workers",
            str(args.memory_workers),
            "--memory-steps",
            str(args.memory_steps),
            "--device",
            args.device,
        ]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name:>12}  failed:\n{done.stderr.strip()}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        sim = "-" if r["simulated_time_s"] is None else f"{r['simulated_time_s']:.2f}"
        cuda = "" if r["cuda_peak_mib"] is None else f"  (CUDA peak {r['cuda_peak_mib']:.0f} MiB)"
        print(
            f"{name:>12}{r['batch']:>6}{r['maxrss_mib']:>14.0f}{r['seconds']:>9.1f}{sim:>12}{cuda}",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=256)
    p.add_argument(
        "--batch-size", type=int, default=None, help="per worker (default: min(32, 4000 // n))"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--block", type=int, default=5, help="steps per timed block")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--memory", action="store_true", help="also measure peak memory at n = 1024")
    p.add_argument("--memory-only", action="store_true", help="only the memory part")
    p.add_argument("--memory-workers", type=int, default=1024)
    p.add_argument("--memory-steps", type=int, default=5)
    p.add_argument("--memory-profiles", nargs="+", default=["edge"])
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return
    if not args.memory_only:
        print_timing(args)
    if args.memory or args.memory_only:
        print_memory(args)


if __name__ == "__main__":
    main()
