"""Elastic engine (issue 29): no-fault step-time overhead vs the plain distributed engine, and the
times to recover from a killed worker and from a hung one.

Every run is 4 workers of ``peergrad train`` on one machine (default data ``mnist``, the default
MLP, ``--eval-every 5``, ``--seed 0``), for each of ``--algorithms`` (default: ``dpsgd`` on a
ring and ``allreduce``). The elastic runs use :class:`peergrad.testing.elastic.ElasticWorkers`
(torchft's lighthouse in this process, one ``peergrad train --engine distributed --elastic``
process per worker, ``REPLICA_GROUP_ID=i``, ``--timeout-s`` 5 s, lighthouse heartbeat timeout
1 s); the plain runs use ``torchrun --standalone --nproc-per-node 4 -m peergrad train --engine
distributed``. Every process runs with ``OMP_NUM_THREADS=1``: torchrun's default, set here for
the elastic workers too, whose harness leaves it unset (4 processes on a 2-core machine, each
with as many intra-op threads as there are cores, make every step 5 to 18 times slower).

1. **No-fault overhead** (``--steps``, default 100). Plain and elastic runs with the same
   arguments, alternated (plain, elastic) ``--repeats`` times (default 2). Mean step time of a
   run = the training wall time of its last record (``wall_time_s`` of ``metrics.jsonl``: the
   step loop, evaluations excluded; on the elastic engine each step includes its quorum and its
   commit agreement) / steps. Printed: each repeat's ms/step, their means, the ratio
   elastic/plain of the means and its range over the repeats (each repeat's pair), target
   <= 1.10 (PASS / NOT MET), the added ms/step, and whether the final ``test_loss`` of the two
   engines are equal (bit for bit: with every worker present the elastic engine does the same
   arithmetic). ``--heavy`` adds the same comparison with ``--heavy-args`` (default
   ``--batch-size 256 --model-set hidden=1024,1024``: more computation per step), one repeat:
   the elastic engine adds a roughly constant time per step (a lighthouse round trip for the
   quorum, a 1-element agreement all-reduce, torchft's commit), so the ratio falls as the step
   grows.
2. **Recovery** (``--fault-steps``, default 600, per algorithm). ``prepare_restart(2)`` (a
   pre-imported standby), SIGKILL worker 2 when the record of step ``--kill-at`` (30) appears,
   restart the standby when the record of step ``--restart-at`` (50) appears; once worker 2 has
   rejoined and one more record is written, SIGKILL it again and restart it at once as a fresh
   process (``--cold-restart``, on by default: the imports of torch, torchft and peergrad
   included), and wait for the end. The runs are longer than part 1's because a restarted
   worker needs seconds to get ready (about 3 s with the standby, 8 s cold, on 2 cores) and 50
   steps of this small model take about 1 s: with 100 steps the run would end before it
   rejoins. From the harness's events (wall-clock times of the kills and the restarts) and the
   run folder's ``membership.jsonl`` (``left`` / ``joined`` / ``served``, each with the time the
   worker wrote it), per kill and restart: ``kill -> left`` (the survivors' first quorum
   without worker 2, written before that quorum's step runs), ``next step`` (estimated: ``kill
   -> left`` + the survivors' median step time), ``stall`` (the survivors' own measure: the
   training wall time of the records' interval holding the failure minus the median interval),
   ``restart -> joined`` (worker 2's first quorum back, its model and algorithm state received
   from a live peer), the step of each event, and whether the model worker 2 received equals
   the one its peer served (SHA-1); for the first kill also ``kill -> next record`` (the
   harness sees the survivors' next record, up to ``--eval-every`` steps later: an upper bound
   of the time to their next completed step). Then the last step of the records and each
   worker's exit code, ``workers_present`` over the records, and the final test accuracy vs a
   no-fault run of the same length and algorithm (target: within 1 point). The no-fault run is
   part 1's elastic run when ``--fault-steps`` equals ``--steps``; else ``peergrad train
   --engine simulated`` with the same arguments (one process, about half the time of an
   elastic run; the elastic engine without faults gives the same iterates as the simulated
   one, up to float32 rounding of the reductions: tests/test_elastic.py checks it in float64).
3. **Hang** (``--fault-steps``; ``--hang-algorithms``, default ``--algorithms``). SIGSTOP worker
   2 at the record of step ``--kill-at``; SIGCONT it ``--cont-after`` s later (10) or as soon as
   the other workers have exited, whichever comes first; report ``stop -> left`` (expected:
   about the workers' ``--timeout-s``, 5 s: a stopped peer keeps its connections open, so the
   survivors' pending wait fails only at the timeout, and by then the lighthouse's 1 s
   heartbeat timeout has passed), the survivors' stall, and what the resumed worker did: its
   ``joined`` event (healed from a live peer), its exit code, records written by it alone
   (``workers_present`` 1), and its own ``elastic:`` log lines.

Caveats: 4 processes on 2 cores share the CPU with the lighthouse, the harness and whatever
else runs; times are wall-clock and vary from run to run (by 10% on an idle machine, by far more
on a busy one: compare the ratios measured side by side). ``wall_time_s`` of the elastic engine
leaves out the attempts of a step that failed (dropped and retried): the overhead figure is the
no-fault one, and the stall of a hang does not show the timeout. The membership times are
written by the workers with ``time.time()`` on the same machine as the harness (one clock).

Usage::

    python benchmarks/elastic.py [--steps 100] [--repeats 2] [--fault-steps 600]
        [--algorithms dpsgd allreduce] [--heavy] [--skip-overhead] [--skip-recovery]
        [--skip-hang] [--device cpu] [--out DIR] [--json PATH]

Run folders go to a temporary directory, removed at the end, unless ``--out DIR`` is given
(a new or empty folder; it is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peergrad.testing.elastic import ElasticWorkers, read_jsonl

N_WORKERS = 4
VICTIM = 2
TARGET_RATIO = 1.10
ALGORITHMS = {
    "dpsgd": ["--algorithm", "dpsgd", "--topology", "ring"],
    "allreduce": ["--algorithm", "allreduce"],
}
ENV = {"OMP_NUM_THREADS": "1"}
Record = dict[str, Any]


# ---------------------------------------------------------------------------------- runs
def train_args(
    args: argparse.Namespace, algorithm: str, steps: int, extra: Sequence[str] = ()
) -> list[str]:
    """The ``peergrad train`` arguments shared by the plain and the elastic runs."""
    return [
        *ALGORITHMS[algorithm],
        *("--steps", str(steps), "--eval-every", str(args.eval_every)),
        *("--seed", str(args.seed), "--device", args.device, "--no-progress"),
        *extra,
    ]


def last_record(out: Path) -> Record:
    records = read_jsonl(out / "metrics.jsonl")
    if not records:
        raise RuntimeError(f"no records in {out / 'metrics.jsonl'}")
    return records[-1]


def run_plain(
    args: argparse.Namespace,
    algorithm: str,
    out: Path,
    steps: int,
    extra: Sequence[str] = (),
    engine: str = "distributed",
) -> Record:
    """One plain run: under torchrun (``engine="distributed"``), or in one process
    (``"simulated"``, all workers vectorised); its last record."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(N_WORKERS), "-m", "peergrad", "train"]
    if engine == "simulated":
        cmd = [sys.executable, "-m", "peergrad", "train"]
    cmd += [*train_args(args, algorithm, steps, extra), "--engine", engine]
    cmd += ["--workers", str(N_WORKERS), "--out", str(out)]
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as fh:
        env = {**os.environ, **ENV}
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise RuntimeError(f"plain run failed ({code}): {shlex.join(cmd)}; see {log}")
    return last_record(out)


def elastic_workers(
    args: argparse.Namespace, algorithm: str, out: Path, steps: int, extra: Sequence[str] = ()
) -> ElasticWorkers:
    targs = train_args(args, algorithm, steps, extra)
    return ElasticWorkers(N_WORKERS, targs, out=out, timeout_s=args.timeout_s, env=ENV)


def run_elastic(
    args: argparse.Namespace, algorithm: str, out: Path, steps: int, extra: Sequence[str] = ()
) -> Record:
    """One elastic run without faults; its last record."""
    with elastic_workers(args, algorithm, out, steps, extra) as run:
        codes = run.wait(args.run_timeout)
    if any(code != 0 for code in codes.values()):
        raise RuntimeError(f"elastic run {out} failed: exit codes {codes}; see {run.logs}")
    return last_record(out)


# ---------------------------------------------------------------------------------- 1. overhead
def overhead(
    args: argparse.Namespace,
    algorithm: str,
    root: Path,
    label: str,
    extra: Sequence[str],
    repeats: int,
) -> dict[str, Any]:
    """Plain and elastic runs alternated ``repeats`` times: ms/step of each, ratio, equality."""
    plain_ms: list[float] = []
    elastic_ms: list[float] = []
    equal: list[bool] = []
    accuracy = 0.0
    for rep in range(repeats):
        tag = f"{algorithm}{label.replace(' ', '-')}-{rep}"
        p = run_plain(args, algorithm, root / f"plain-{tag}", args.steps, extra)
        e = run_elastic(args, algorithm, root / f"elastic-{tag}", args.steps, extra)
        plain_ms.append(1000 * p["wall_time_s"] / p["step"])
        elastic_ms.append(1000 * e["wall_time_s"] / e["step"])
        equal.append(p["test_loss"] == e["test_loss"])
        accuracy = e["test_accuracy"]
        print(
            f"  {algorithm}{label} repeat {rep}: plain {plain_ms[-1]:.2f} ms/step, elastic "
            f"{elastic_ms[-1]:.2f} ms/step, final test_loss {p['test_loss']!r} (plain) vs "
            f"{e['test_loss']!r} (elastic)",
            flush=True,
        )
    mean_p, mean_e = statistics.fmean(plain_ms), statistics.fmean(elastic_ms)
    ratios = [e / p for p, e in zip(plain_ms, elastic_ms, strict=True)]
    return {
        "algorithm": algorithm + label,
        "plain_ms": plain_ms,
        "elastic_ms": elastic_ms,
        "plain_ms_mean": mean_p,
        "elastic_ms_mean": mean_e,
        "ratio": mean_e / mean_p,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "added_ms": mean_e - mean_p,
        "test_loss_equal": all(equal),
        "test_accuracy": accuracy,
        "pass": mean_e / mean_p <= TARGET_RATIO,
    }


# ---------------------------------------------------------------------------------- helpers
def first_after(membership: list[Record], kind: str, t0: float) -> Record | None:
    """The first membership line of ``kind`` about worker 2 written at or after ``t0``."""
    hits = (m for m in membership if m["event"] == kind and m["worker"] == VICTIM)
    return next((m for m in hits if m["time"] >= t0), None)


def present_over_time(records: list[Record]) -> str:
    """``workers_present`` of the records as runs of steps: ``0-30: 4, 35-50: 3, ...``."""
    runs: list[list[int]] = []  # [first step, last step, present]
    for r in records:
        w, step = int(r.get("workers_present", N_WORKERS)), int(r["step"])
        if runs and runs[-1][2] == w and step > runs[-1][1]:
            runs[-1][1] = step
        else:
            runs.append([step, step, w])
    return ", ".join(f"{a}-{b}: {w}" if a != b else f"{a}: {w}" for a, b, w in runs)


def stall_s(records: list[Record], step: int) -> float | None:
    """Training wall time of the records' interval holding step ``step + 1`` minus the median
    interval (the survivors' first record of each step only)."""
    seen: dict[int, float] = {}
    for r in records:
        seen.setdefault(int(r["step"]), float(r["wall_time_s"]))
    steps = sorted(seen)
    deltas = {b: seen[b] - seen[a] for a, b in zip(steps, steps[1:], strict=False)}
    hit = next((b for b in deltas if b > step), None)
    if hit is None or len(deltas) < 3:
        return None
    return deltas[hit] - statistics.median(deltas.values())


def step_ms(records: list[Record], eval_every: int) -> float | None:
    """Median training wall time per step between records, in ms."""
    walls = [float(r["wall_time_s"]) for r in records]
    deltas = [b - a for a, b in zip(walls, walls[1:], strict=False)]
    return 1000 * statistics.median(deltas) / eval_every if deltas else None


def diff(a: Record | None, b: Record | None) -> float | None:
    return None if a is None or b is None else b["time"] - a["time"]


def elastic_lines(run: ElasticWorkers, worker: int) -> list[str]:
    """The ``elastic:`` lines of the logs of ``worker``'s processes, and the last line of each
    log whose process failed (its error)."""
    lines = []
    for log in sorted(run.logs.glob(f"worker{worker}-*.log")):
        text = [line.strip() for line in log.read_text(errors="replace").splitlines()]
        keep = [line for line in text if line.startswith("elastic")]
        last = next((line for line in reversed(text) if line), "")
        if last and last not in keep and "error" in last.lower():
            keep.append(last)
        lines += [f"[{log.stem}] {line[:200]}" for line in keep]
    return lines


# ---------------------------------------------------------------------------------- 2. recovery
def wait_joined(run: ElasticWorkers, since: float, timeout_s: float) -> Record | None:
    """Wait for worker 2's ``joined`` line written after ``since`` (None: the run ended first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        joined = first_after(run.membership(), "joined", since)
        if joined is not None or all(p.poll() is not None for p in run.procs.values()):
            return joined
        time.sleep(0.05)
    return None


def cycle(membership: list[Record], records: list[Record], kill: Record, restart: Record) -> Record:
    """The figures of one kill and restart of worker 2 (see the module docstring)."""
    left = first_after(membership, "left", kill["time"])
    joined = first_after(membership, "joined", restart["time"])
    same = False  # the model worker 2 loaded is the one its live peer served (SHA-1)
    if joined is not None:
        for m in membership:
            if m["event"] == "served" and m["worker"] == joined["source"]:
                same = same or (m["step"] + 1 == joined["step"] and m["x_sha1"] == joined["x_sha1"])
    return {
        "kill_step": kill["step"],
        "left_step": left and left["step"],
        "kill_to_left_s": diff(kill, left),
        "stall_s": stall_s(records, kill["step"]),
        "restart_step": restart["step"],
        "joined_step": joined and joined["step"],
        "restart_to_joined_s": diff(restart, joined),
        "joined_from": joined and joined["source"],
        "model_equal_to_served": same,
    }


def recovery(args: argparse.Namespace, algorithm: str, root: Path, reference: float) -> Record:
    """Kill worker 2 at step ``--kill-at``, restart its standby at ``--restart-at``; once it has
    rejoined, kill it again and restart it cold at once (``--cold-restart``); let the run end."""
    with elastic_workers(args, algorithm, root / f"recovery-{algorithm}", args.fault_steps) as run:
        run.prepare_restart(VICTIM)
        run.wait_for_step(args.kill_at, args.run_timeout)
        run.kill(VICTIM)
        next_step = run.wait_for_step(run.events[-1]["step"] + 1, args.run_timeout)
        next_seen = time.time()
        run.wait_for_step(args.restart_at, args.run_timeout)
        run.restart(VICTIM)
        if args.cold_restart and wait_joined(run, run.events[-1]["time"], args.run_timeout):
            run.wait_for_step(run.step() + 1, args.run_timeout)  # a step with worker 2 back
            run.kill(VICTIM)
            run.restart(VICTIM)  # no standby prepared: imports, then the rest
        codes = run.wait(args.run_timeout)
        events, membership, records = list(run.events), run.membership(), run.records()
        lines = elastic_lines(run, VICTIM)
    kills = [e for e in events if e["event"] == "kill"]
    restarts = [e for e in events if e["event"] == "restart"]
    cycles = [cycle(membership, records, k, r) for k, r in zip(kills, restarts, strict=True)]
    final = records[-1]
    return {
        "algorithm": algorithm,
        **cycles[0],
        "next_record_step": next_step,
        "kill_to_next_record_s": next_seen - kills[0]["time"],
        "step_ms": step_ms(records, args.eval_every),
        "cold": cycles[1] if len(cycles) > 1 else None,
        "final_step": int(final["step"]),
        "exit_codes": codes,
        "workers_present": present_over_time(records),
        "test_accuracy": final["test_accuracy"],
        "reference_accuracy": reference,
        "victim_lines": lines,
        "membership": membership,
        "events": events,
    }


# ---------------------------------------------------------------------------------- 3. hang
def hang(args: argparse.Namespace, algorithm: str, root: Path) -> Record:
    """SIGSTOP worker 2 at step ``--kill-at``; SIGCONT it after ``--cont-after`` s or when the
    others have exited; see what it does."""
    out = root / f"hang-{algorithm}"
    with elastic_workers(args, algorithm, out, args.fault_steps) as run:
        run.wait_for_step(args.kill_at, args.run_timeout)
        run.stop(VICTIM)
        stop = run.events[-1]
        others = [p for w, p in run.procs.items() if w != VICTIM]
        while time.time() < stop["time"] + args.cont_after and any(
            p.poll() is None for p in others
        ):
            time.sleep(0.02)
        others_done = all(p.poll() is not None for p in others)
        n_records = len(run.records())
        run.cont(VICTIM)
        cont = run.events[-1]
        codes = run.wait(args.run_timeout)
        membership, records = run.membership(), run.records()
        lines = elastic_lines(run, VICTIM)
    left = first_after(membership, "left", stop["time"])
    joined = first_after(membership, "joined", cont["time"])
    alone = [int(r["step"]) for r in records[n_records:] if r.get("workers_present") == 1]
    summary = (
        json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    )
    return {
        "algorithm": algorithm,
        "stop_step": stop["step"],
        "left_step": left and left["step"],
        "stop_to_left_s": diff(stop, left),
        "stall_s": stall_s(records, stop["step"]),
        "cont_after_s": cont["time"] - stop["time"],
        "others_done_at_cont": others_done,
        "cont_to_joined_s": diff(cont, joined),
        "joined_step": joined and joined["step"],
        "final_step": max((int(r["step"]) for r in records), default=None),
        "records_alone": f"{alone[0]}-{alone[-1]}" if alone else None,
        "summary_workers_present": summary.get("workers_present"),
        "exit_codes": codes,
        "workers_present": present_over_time(records),
        "victim_lines": lines,
    }


# ---------------------------------------------------------------------------------- printing
def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_overhead(rows: list[Record]) -> None:
    print(
        f"\nno-fault step time, {N_WORKERS} workers (ms/step = wall_time_s / steps, mean over "
        "the repeats; range: the per-repeat ratios)"
    )
    print(
        f"{'algorithm':<16} {'plain ms':>9} {'elastic ms':>11} {'added ms':>9} {'ratio':>6} "
        f"{'range':>11} {'target':>7} {'verdict':>8} {'equal test_loss':>16}"
    )
    for r in rows:
        print(
            f"{r['algorithm']:<16} {r['plain_ms_mean']:9.2f} {r['elastic_ms_mean']:11.2f} "
            f"{r['added_ms']:9.2f} {r['ratio']:6.2f} {r['ratio_min']:5.2f}-{r['ratio_max']:<5.2f} "
            f"{'<=' + format(TARGET_RATIO, '.2f'):>7} {'PASS' if r['pass'] else 'NOT MET':>8} "
            f"{'yes' if r['test_loss_equal'] else 'NO':>16}"
        )


def print_recovery(rows: list[Record]) -> None:
    print(
        f"\nrecovery: SIGKILL worker {VICTIM}, restart it (seconds; [steps]). next step (est.): "
        "kill->left + the survivors' median step time; standby: restarted from a pre-imported "
        "process at the record of --restart-at; cold: killed again once back, and restarted at "
        "once as a fresh process"
    )
    print(
        f"{'algorithm':<10} {'restart':<8} {'kill->left':>15} {'next step':>10} "
        f"{'next record':>13} {'stall':>6} {'restart->joined':>18} {'model==served':>13}"
    )
    for r in rows:
        for kind, c in (("standby", r), ("cold", r["cold"])):
            if c is None:
                continue
            est = None
            if c["kill_to_left_s"] is not None and r["step_ms"] is not None:
                est = c["kill_to_left_s"] + r["step_ms"] / 1000
            nxt = f"{fmt(r['kill_to_next_record_s']):>6} [{r['next_record_step']}]"
            print(
                f"{r['algorithm']:<10} {kind:<8} {fmt(c['kill_to_left_s']):>6} "
                f"[{c['kill_step']}->{c['left_step']}]{'':<2} {fmt(est):>10} "
                f"{nxt if kind == 'standby' else '':>13} {fmt(c['stall_s']):>6} "
                f"{fmt(c['restart_to_joined_s']):>6} [{c['restart_step']}->{c['joined_step']}] "
                f"{'yes' if c['model_equal_to_served'] else 'NO':>13}"
            )
        ref, acc = r["reference_accuracy"], r["test_accuracy"]
        gap = 100 * abs(acc - ref)
        print(
            f"{'':<10} last step {r['final_step']}, exit codes {r['exit_codes']}, final test "
            f"accuracy {100 * acc:.2f}% vs {100 * ref:.2f}% without faults: {gap:.2f} points "
            f"{'(<= 1: ok)' if gap <= 1.0 else '(> 1: NOT MET)'}; survivors' step "
            f"{fmt(r['step_ms'])} ms"
        )
        print(f"{'':<10} workers_present by step: {r['workers_present']}")


def print_hang(rows: list[Record], timeout_s: float) -> None:
    print(
        f"\nhang: SIGSTOP worker {VICTIM}, SIGCONT later (workers' --timeout-s {timeout_s:g}, "
        "lighthouse heartbeat timeout 1 s; seconds; [steps])"
    )
    print(
        f"{'algorithm':<10} {'stop->left':>15} {'stall':>6} {'SIGCONT after':>13} "
        f"{'others done':>11} {'cont->joined':>14} {'last step':>9} {'alone':>9} "
        f"{'exit codes':>26}"
    )
    for r in rows:
        print(
            f"{r['algorithm']:<10} {fmt(r['stop_to_left_s']):>6} [{r['stop_step']}->"
            f"{r['left_step']}]{'':<3} {fmt(r['stall_s']):>6} {r['cont_after_s']:12.2f}s "
            f"{'yes' if r['others_done_at_cont'] else 'no':>11} "
            f"{fmt(r['cont_to_joined_s']):>6} [{r['joined_step']}] {str(r['final_step']):>9} "
            f"{str(r['records_alone']):>9} {str(r['exit_codes']):>26}"
        )
        print(f"{'':<10} workers_present by step: {r['workers_present']}")
        if r["records_alone"]:
            print(
                f"{'':<10} worker {VICTIM} trained ALONE after SIGCONT and wrote records "
                f"{r['records_alone']} into the run folder (summary.json workers_present "
                f"{r['summary_workers_present']})"
            )
        for line in r["victim_lines"][:4]:
            print(f"{'':<10} worker {VICTIM}: {line}")


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--steps", type=int, default=100, help="steps of the no-fault runs (>= 1)")
    add(
        "--fault-steps",
        type=int,
        default=600,
        help="steps of the recovery and hang runs (>= --restart-at + 10)",
    )
    add("--eval-every", type=int, default=5, help="steps between records (>= 1)")
    add("--repeats", type=int, default=2, help="plain/elastic pairs per algorithm (>= 1)")
    add("--algorithms", nargs="+", choices=sorted(ALGORITHMS), default=["dpsgd", "allreduce"])
    add(
        "--hang-algorithms",
        nargs="*",
        choices=sorted(ALGORITHMS),
        default=None,
        help="algorithms of the hang runs (default: --algorithms)",
    )
    add("--kill-at", type=int, default=30, help="kill / stop worker 2 at this step's record")
    add("--restart-at", type=int, default=50, help="restart worker 2 at this step's record")
    add(
        "--cold-restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recovery: once worker 2 has rejoined, kill it again and restart it cold",
    )
    add("--cont-after", type=float, default=10.0, help="SIGCONT the stopped worker after s")
    add("--timeout-s", type=float, default=5.0, help="the elastic workers' --timeout-s (> 0)")
    add("--seed", type=int, default=0)
    add("--device", default="cpu", help="peergrad train --device (the elastic engine: cpu)")
    add("--heavy", action="store_true", help="also compare plain/elastic with --heavy-args")
    add(
        "--heavy-args",
        default="--batch-size 256 --model-set hidden=1024,1024",
        help="extra train arguments of the --heavy comparison",
    )
    add("--skip-overhead", action="store_true")
    add("--skip-recovery", action="store_true")
    add("--skip-hang", action="store_true")
    add("--run-timeout", type=float, default=300.0, help="seconds one run may take")
    add("--out", type=Path, default=None, help="keep the run folders here (new or empty)")
    add("--json", type=Path, default=None, help="also write the full results to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1 or args.repeats < 1:
        parser.error("--steps, --eval-every and --repeats must be >= 1")
    if not 0 < args.kill_at < args.restart_at <= args.fault_steps - 10:
        parser.error(
            "need 0 < --kill-at < --restart-at <= --fault-steps - 10, got "
            f"{args.kill_at}, {args.restart_at}, {args.fault_steps}"
        )
    if not args.timeout_s > 0 or not args.cont_after > 0:
        parser.error("--timeout-s and --cont-after must be > 0")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} must be a new or empty folder")
    if args.hang_algorithms is None:
        args.hang_algorithms = args.algorithms
    return args


def faults(
    args: argparse.Namespace, root: Path, result: Record, reference: dict[str, float]
) -> None:
    """Parts 2 and 3 (the no-fault reference runs of ``--fault-steps`` first, when needed)."""
    if not args.skip_recovery:
        print("\n2. recovery", flush=True)
        for alg in args.algorithms:
            if args.fault_steps != args.steps or alg not in reference:
                out = root / f"reference-{alg}"
                ref = run_plain(args, alg, out, args.fault_steps, engine="simulated")
                reference[alg] = ref["test_accuracy"]
            result["recovery"].append(recovery(args, alg, root, reference[alg]))
            row = result["recovery"][-1]
            print(
                f"  {alg}: kill->left {fmt(row['kill_to_left_s'])} s, restart->joined "
                f"{fmt(row['restart_to_joined_s'])} s",
                flush=True,
            )
    if not args.skip_hang:
        print("\n3. hang", flush=True)
        for alg in args.hang_algorithms:
            result["hang"].append(hang(args, alg, root))
            print(f"  {alg}: stop->left {fmt(result['hang'][-1]['stop_to_left_s'])} s", flush=True)


def benchmark(args: argparse.Namespace, root: Path) -> Record:
    print(
        f"run folders: {root}; {N_WORKERS} workers, {args.steps} steps (no faults), "
        f"{args.fault_steps} steps (faults), eval every {args.eval_every}, seed {args.seed}, "
        "OMP_NUM_THREADS=1",
        flush=True,
    )
    result: Record = {
        "steps": args.steps,
        "fault_steps": args.fault_steps,
        "workers": N_WORKERS,
        "overhead": [],
        "recovery": [],
        "hang": [],
    }
    reference: dict[str, float] = {}
    if not args.skip_overhead:
        print("\n1. no-fault overhead", flush=True)
        for alg in args.algorithms:
            result["overhead"].append(overhead(args, alg, root, "", [], args.repeats))
            reference[alg] = result["overhead"][-1]["test_accuracy"]
        if args.heavy:
            extra = shlex.split(args.heavy_args)
            for alg in args.algorithms:
                result["overhead"].append(overhead(args, alg, root, " heavy", extra, 1))
    faults(args, root, result, reference)
    if result["overhead"]:
        print_overhead(result["overhead"])
        if args.heavy:
            print(f"(heavy: {args.heavy_args})")
    if result["recovery"]:
        print_recovery(result["recovery"])
    if result["hang"]:
        print_hang(result["hang"], args.timeout_s)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = benchmark(args, args.out.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="peergrad-elastic-") as tmp:
            result = benchmark(args, Path(tmp))
    result["total_s"] = time.perf_counter() - t0
    print(f"\ntotal {result['total_s']:.0f} s")
    compact = {
        **result,
        "recovery": [
            {k: v for k, v in r.items() if k not in ("membership", "events", "victim_lines")}
            for r in result["recovery"]
        ],
        "hang": [{k: v for k, v in r.items() if k != "victim_lines"} for r in result["hang"]],
    }
    print(json.dumps(compact, default=str))
    if args.json is not None:
        args.json.write_text(json.dumps(result, default=str, indent=1) + "\n")


if __name__ == "__main__":
    main()
