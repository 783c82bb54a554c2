"""The distributed checks (``engine_parity``, ``overlap``): one launch of n gloo processes on
loopback per worker count, shared by every algorithm and dtype asked for.

The launcher is torchrun's contract without torchrun: n copies of ``python -m
peergrad.testing._worker SPEC OUT`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` (a free port) and ``OMP_NUM_THREADS=1``, ``PYTHONPATH`` = this process's
``sys.path`` (so the workers import the algorithm's class, by module and qualified name, as this
process does), stdout/stderr in ``rank{r}.out``/``.err`` of a temporary folder. The workers run
every unit and rank 0 writes the results; the comparisons with the simulated engine run here.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from peergrad.comm import SimulatedCommunicator
from peergrad.testing._checks import Ctx, Fail, Skip, dtype_name
from peergrad.testing._report import CheckResult
from peergrad.testing._run import StepError, accepts, bind, fmt, run
from peergrad.topology import make_topology

#: a plan of :mod:`peergrad.testing._api` (``settings``, ``optimizer_options``); not imported
#: from there, which imports this module
_Plan = Any

#: Steps of the engine-parity run and of the overlap runs (the resumed run stops at half).
PARITY_STEPS = 20
OVERLAP_STEPS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(
    argv: Sequence[str], world_size: int, *, cwd: Path, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """``world_size`` copies of ``python argv...`` with torchrun's environment variables."""
    port = free_port()
    # sys.path's "" is the current folder (python -c, a REPL); the workers start elsewhere
    entries = [(p or os.getcwd()) for p in sys.path if isinstance(p, str)]
    path = os.pathsep.join(entries)
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": path,
        }
        with (
            open(log_dir / f"rank{rank}.out", "wb") as out,
            open(log_dir / f"rank{rank}.err", "wb") as err,
        ):
            procs.append(
                subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd, stdout=out, stderr=err)
            )
    return procs


def wait_all(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int | None]:
    """Exit codes (None for a process still running after ``timeout_s``, then killed)."""
    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return codes


def _unit_spec(plan: _Plan, name: str, dtype: torch.dtype, key: str) -> dict[str, Any]:
    s = plan.settings
    assert s is not None
    return {
        "key": key,
        "check": name,
        "module": s.cls.__module__,
        "qualname": s.cls.__qualname__,
        "options": s.options,
        "dtype": dtype_name(dtype),
        "n": s.n,
        "topology": s.topology,
        "param_shapes": s.param_shapes,
        "optimizer_options": dict(plan.optimizer_options),
    }


def _importable(plan: _Plan) -> str | None:
    s = plan.settings
    assert s is not None
    if s.cls.__module__ == "__main__" or "<locals>" in s.cls.__qualname__:
        return (
            f"the gloo processes cannot import {s.cls.__module__}.{s.cls.__qualname__} (a class "
            "of __main__ or defined inside a function); define it at the top level of a module"
        )
    return None


def run_distributed_checks(
    units: Sequence[tuple[_Plan, str, torch.dtype | None]], *, timeout_s: float
) -> list[tuple[_Plan, CheckResult]]:
    """Run the distributed checks ``units`` (plan, check name, dtype): one launch per worker
    count; a result per unit."""
    out: list[tuple[_Plan, CheckResult]] = []
    by_n: dict[int, list[tuple[str, _Plan, str, torch.dtype]]] = {}
    for i, (plan, name, dtype) in enumerate(units):
        assert plan.settings is not None and dtype is not None
        dt = dtype_name(dtype)
        problem = _importable(plan)
        if problem is not None:
            out.append((plan, CheckResult(name, "failed", problem, dt)))
            continue
        refused = _precheck(plan, name, dtype)
        if refused is not None:
            out.append((plan, refused))
            continue
        by_n.setdefault(plan.settings.n, []).append((f"{i}", plan, name, dtype))
    for n, group in by_n.items():
        out += _launch(n, group, timeout_s)
    return out


def _precheck(plan: _Plan, name: str, dtype: torch.dtype) -> CheckResult | None:
    """A skip (topology refused) before any process starts, else None."""
    s = plan.settings
    assert s is not None
    alg = bind(s.algorithm(), s.param_shapes)
    refused = accepts(alg, SimulatedCommunicator(make_topology(s.topology, s.n)))
    if refused is not None:
        return CheckResult(
            name,
            "skipped",
            f"the algorithm refuses topology {s.topology!r}: {refused}",
            dtype_name(dtype),
        )
    return None


def _launch(
    n: int, group: list[tuple[str, _Plan, str, torch.dtype]], timeout_s: float
) -> list[tuple[_Plan, CheckResult]]:
    specs = [_unit_spec(plan, name, dtype, key) for key, plan, name, dtype in group]
    with tempfile.TemporaryDirectory(prefix="peergrad-conformance-") as tmp:
        folder = Path(tmp)
        spec_path, out_path = folder / "spec.pkl", folder / "results.pt"
        with open(spec_path, "wb") as f:
            pickle.dump(
                {"units": specs, "parity_steps": PARITY_STEPS, "overlap_steps": OVERLAP_STEPS}, f
            )
        procs = start_workers(
            ["-m", "peergrad.testing._worker", str(spec_path), str(out_path)],
            n,
            cwd=folder,
            log_dir=folder,
        )
        codes = wait_all(procs, timeout_s)
        results: dict[str, Any] = {}
        if out_path.exists():
            results = torch.load(out_path, weights_only=False)
        logs = "\n".join(
            f"--- rank {r} ---\n" + (folder / f"rank{r}.err").read_text(errors="replace")[-1500:]
            for r in range(n)
        )
    out = []
    for key, plan, name, dtype in group:
        dt = dtype_name(dtype)
        row = results.get(key)
        if row is None:
            why = "timed out" if None in codes else f"exited with codes {codes}"
            out.append(
                (
                    plan,
                    CheckResult(
                        name,
                        "failed",
                        f"the {n} gloo processes {why} before reporting this check\n{logs}",
                        dt,
                    ),
                )
            )
            continue
        assert plan.settings is not None
        ctx = Ctx(plan.settings, dtype)
        try:
            if "error" in row:
                raise Fail(row["error"], step=row.get("step"))
            if name == "engine_parity":
                message = _compare_parity(ctx, row)
            else:
                message = _compare_overlap(ctx, plan, row)
        except Skip as exc:
            out.append((plan, CheckResult(name, "skipped", str(exc), dt)))
        except Fail as exc:
            out.append(
                (plan, CheckResult(name, "failed", exc.message, dt, None, exc.step, exc.diff))
            )
        except Exception as exc:
            from peergrad.testing._run import describe_exception

            out.append((plan, CheckResult(name, "failed", f"raised {describe_exception(exc)}", dt)))
        else:
            out.append((plan, CheckResult(name, "passed", message, dt)))
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    scale = float(b.abs().max()) or 1.0
    return float((a.double() - b.double()).abs().max()) / scale


def _compare_parity(ctx: Ctx, row: dict[str, Any]) -> str:
    """The simulated run of the same units, compared with the gloo processes' results."""
    s = ctx.settings
    tol = s.tolerance("engine_parity", ctx.dtype, 1e-10 if ctx.dtype == torch.float64 else 1e-5)
    comm = SimulatedCommunicator(make_topology(s.topology, s.n))
    rp = s.problem(ctx.dtype).rows(None)
    x = rp.x0()
    try:
        run(bind(s.algorithm(), s.param_shapes), comm, x, rp, range(PARITY_STEPS))
    except StepError as exc:
        raise Fail(f"the simulated run: {exc}", step=exc.step) from None
    x_dist = row["x"]
    if x_dist.dtype != x.dtype or x_dist.shape != x.shape:
        raise Fail(
            f"the gloo processes' x is {x_dist.dtype}{tuple(x_dist.shape)}, the simulated "
            f"engine's {x.dtype}{tuple(x.shape)}"
        )
    rel = _rel(x_dist, x)
    if rel > tol:
        raise Fail(
            f"after {PARITY_STEPS} steps x on {s.n} gloo processes differs from the simulated "
            f"engine's by up to {fmt(rel)} relative to max |x| (tolerance {tol}): an operation "
            "over the worker axis that is not a comm call (mix, mean, all_gather)?",
            step=PARITY_STEPS,
            diff=rel,
        )
    sim_bytes = comm.bytes_sent
    if not torch.equal(row["bytes"], sim_bytes):
        raise Fail(
            f"bytes_sent per worker: gloo {row['bytes'].tolist()}, simulated {sim_bytes.tolist()}; "
            "both engines must count the same messages"
        )
    if float(sim_bytes.min()) <= 0:
        raise Fail(f"a worker sent no byte in {PARITY_STEPS} steps: {sim_bytes.tolist()}")
    if row["rounds"] != comm.rounds:
        raise Fail(f"rounds: gloo {row['rounds']}, simulated {comm.rounds}")
    t_sim, t_dist = comm.simulated_comm_time_s, row["comm_time"]
    if abs(t_dist - t_sim) > 1e-12 * max(abs(t_sim), 1e-300):
        raise Fail(f"simulated_comm_time_s: gloo {t_dist!r}, simulated {t_sim!r}")
    return (
        f"{PARITY_STEPS} steps on {s.n} gloo processes: x within {fmt(rel)} relative "
        f"(tolerance {tol}), bytes, rounds and modelled time identical"
    )


def _compare_overlap(ctx: Ctx, plan: _Plan, row: dict[str, Any]) -> str:
    s = ctx.settings
    plain, overlap, resumed = row["plain"], row["overlap"], row["resumed"]
    alg = s.algorithm()
    clip = plan.optimizer_options.get("clip_grad_norm")
    if alg.coordinatewise and not alg.needs_closure:
        if row["buckets"] <= 2:
            raise Fail(
                f"a coordinate-wise algorithm was cut into {row['buckets']} bucket(s), not > 2"
            )
        if row["overlapping"] != (clip is None):
            raise Fail(
                "buckets were "
                + ("" if row["overlapping"] else "not ")
                + "stepped from the gradient hooks"
                + (" although clip_grad_norm needs every gradient" if clip is not None else "")
            )
    elif row["buckets"] != 1 or row["overlapping"]:
        raise Fail(
            f"an algorithm that is not coordinate-wise was cut into {row['buckets']} buckets "
            f"(overlapping={row['overlapping']}); it must be stepped over the whole buffer"
        )
    exact = ctx.dtype == torch.float64 and not row["allreduce"]
    if exact:
        if not torch.equal(overlap, plain):
            d = float((overlap.double() - plain.double()).abs().max())
            raise Fail(
                f"after {OVERLAP_STEPS} steps overlap=True differs from overlap=False by up to "
                f"{fmt(d)} (float64 gossip only: must be bit-exact)",
                step=OVERLAP_STEPS,
                diff=d,
            )
        tol = 0.0
    else:
        default = 1e-12 if ctx.dtype == torch.float64 else 1e-6
        tol = s.tolerance("overlap", ctx.dtype, default)
        rel = _rel(overlap, plain)
        if rel > tol:
            raise Fail(
                f"after {OVERLAP_STEPS} steps overlap=True differs from overlap=False by up to "
                f"{fmt(rel)} relative (tolerance {tol})",
                step=OVERLAP_STEPS,
                diff=rel,
            )
    if not torch.equal(row["bytes_overlap"], row["bytes_plain"]):
        raise Fail(
            f"bytes_sent: overlap {row['bytes_overlap'].flatten().tolist()}, plain "
            f"{row['bytes_plain'].flatten().tolist()}"
        )
    if float(row["bytes_plain"].min()) <= 0:
        raise Fail(f"a worker sent no byte in {OVERLAP_STEPS} steps")
    if row["rounds_overlap"] != row["rounds_plain"]:
        raise Fail(f"rounds: overlap {row['rounds_overlap']}, plain {row['rounds_plain']}")
    if abs(row["time_overlap"] - row["time_plain"]) > 1e-12 * max(abs(row["time_plain"]), 1e-300):
        raise Fail(f"modelled time: overlap {row['time_overlap']}, plain {row['time_plain']}")
    if not torch.equal(resumed, overlap):
        d = float((resumed.double() - overlap.double()).abs().max())
        raise Fail(
            f"the overlapped run resumed from its state_dict after step {OVERLAP_STEPS // 2} "
            f"differs from the uninterrupted one by up to {fmt(d)}",
            step=OVERLAP_STEPS,
            diff=d,
        )
    if exact:
        how = "bit-exact"
    elif row["allreduce"]:
        how = f"within {tol} relative (an all-reduce sums in an order that depends on the bucket)"
    else:
        how = f"within {tol} relative"
    return (
        f"{OVERLAP_STEPS} steps on {s.n} gloo processes in {row['buckets']} bucket(s): overlap "
        f"{how}, same bytes and rounds; resumed overlapped run bit-exact"
    )
