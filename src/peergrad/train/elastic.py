"""Training on the elastic engine (``peergrad train --engine distributed --elastic``): keep
training when a worker dies, and let a restarted worker rejoin from a live peer.

Every worker is its own process (``REPLICA_GROUP_ID=i``, or ``RANK`` under torchrun) and one
torchft replica group (:mod:`peergrad.comm.elastic`). One step:

1. ``comm.begin_step()``: the step's quorum. A worker that is behind (restarted, or whose last
   step failed while the others kept theirs) is healed here: :func:`serve_state` on a live peer,
   :meth:`ElasticRun.load` here (model, algorithm state, buffers, the records so far, the
   counters); its sampler is moved on to the run's step, so its data shard continues where the
   run is, and it skips the minibatches of the steps it missed.
2. The usual step (:func:`peergrad.train.steps.one_step`), from a snapshot of x, the state, the
   buffers, the sampler and the counters.
3. ``comm.commit()``: kept only when it succeeded on every worker present; otherwise (a peer died
   or hung: :class:`~peergrad.comm.elastic.WorkerLost`) the snapshot is put back and the step is
   run again in the next quorum, without the lost worker, from the same minibatch.

Records: each one carries ``workers_present``; the lowest worker present writes them (and the
summary and plots at the end), so the run folder keeps being written when worker 0 dies. Each
worker leaving or joining is one line on stderr and one line of ``membership.jsonl`` in the run
folder (``{"event": "left" | "joined", "worker", "step", "workers_present"}``; a join also
names the live peer the state came from and the SHA-1 of the model received, and that peer adds
``{"event": "served", ...}`` with the SHA-1 of the model it sent).

Not available with ``--elastic`` (refused with one line before any work): checkpoints
(``--checkpoint-every``, ``--resume``: the state lives on the live workers), ``--system``,
``--loader-workers`` > 0, algorithms that cannot survive a change of membership
(:func:`~peergrad.algorithms.check_elastic`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from peergrad.algorithms import check_elastic
from peergrad.comm.base import PeerFailure
from peergrad.comm.elastic import (
    DEFAULT_LIGHTHOUSE_PORT,
    ElasticCommunicator,
    WorkerLost,
    elastic_worker_id,
    start_lighthouse,
    tensor_sha1,
)
from peergrad.optim.state import clone_tree
from peergrad.topology import Topology
from peergrad.train import checkpoint as ckpt
from peergrad.train.config import TrainConfig
from peergrad.train.recorder import Recorder, clock
from peergrad.train.sampler import worker_seed
from peergrad.train.session import Session
from peergrad.train.steps import one_step

__all__ = [
    "MEMBERSHIP_FILE",
    "ElasticRun",
    "StaleWorker",
    "check_not_finished",
    "check_elastic_config",
    "elastic_communicator",
    "start_fresh",
]

MEMBERSHIP_FILE = "membership.jsonl"


class StaleWorker(PeerFailure):
    """This worker fell behind a run that went on without it (see
    :meth:`ElasticRun._check_not_behind`); ``peergrad train`` reports it in one line."""


def check_not_finished(run_dir: Path | None, *, overwrite: bool = False) -> None:
    """``ValueError`` when the run folder holds a finished run (``summary.json``), unless
    ``overwrite``: a worker restarted after the others finished has nothing to rejoin (it would
    otherwise wait for a quorum that never comes)."""
    if run_dir is not None and not overwrite and (run_dir / "summary.json").exists():
        raise ValueError(
            f"--out {str(run_dir)!r}: that run has finished (summary.json is there), so there is "
            "nothing to rejoin; start a new run in another folder, or pass --overwrite"
        )


def check_elastic_config(
    config: TrainConfig, *, resume: bool = False, stop_after: int | None = None, write: bool = True
) -> None:
    """One-line ``ValueError`` for what ``--elastic`` cannot do (before any work)."""
    if config.engine != "distributed":
        raise ValueError("--elastic needs --engine distributed (one worker per process)")
    if write and not config.out:
        raise ValueError(
            "--elastic needs --out DIR: the run folder every worker writes to (the lowest "
            "worker present writes the records)"
        )
    if stop_after is not None:
        raise ValueError("--elastic: stop_after is not available (stop a worker to test this)")
    refused = {
        "--checkpoint-every": config.checkpoint_every is not None,
        "--resume": resume,
        "--system": config.system is not None,
        "--tensorboard": bool(config.tensorboard),
        "--loader-workers > 0": bool(getattr(config, "loader_workers", 0)),
    }
    for flag, given in refused.items():
        if given:
            raise ValueError(
                f"--elastic: {flag} is not available (a rejoining worker takes its state from a "
                "live peer, not from files, and the steps of the elastic engine are not paced)"
            )
    from peergrad.train.build import build_algorithm, build_topology

    # refused methods, directed gossip: before the manager starts
    check_elastic(build_algorithm(config), build_topology(config))


def elastic_communicator(
    config: TrainConfig, topology: Topology, network: Any
) -> ElasticCommunicator:
    """The elastic communicator of this process (worker ``REPLICA_GROUP_ID`` / ``RANK``) over
    ``topology``.

    Lighthouse: ``--lighthouse``, else ``$TORCHFT_LIGHTHOUSE``; with neither, worker 0 starts one
    in its own process on port :data:`DEFAULT_LIGHTHOUSE_PORT` (single machine: the run then
    ends if worker 0 dies; start ``torchft_lighthouse`` separately to survive that) and the
    others connect to it on localhost."""
    worker = elastic_worker_id(config.workers)
    address = config.lighthouse or os.environ.get("TORCHFT_LIGHTHOUSE")
    server = None
    if not address:
        address = f"http://localhost:{DEFAULT_LIGHTHOUSE_PORT}"
        if worker == 0:
            server = start_lighthouse(DEFAULT_LIGHTHOUSE_PORT)
    comm = ElasticCommunicator(
        topology, worker=worker, lighthouse=address, network=network, timeout_s=config.timeout_s
    )
    comm.lighthouse_server = server  # kept alive with the communicator
    return comm


class ElasticRun:
    """The elastic step loop of one worker (see the module docstring)."""

    def __init__(
        self, config: TrainConfig, session: Session, recorder: Recorder, run_dir: Path | None
    ) -> None:
        self.config, self.s, self.recorder, self.run_dir = config, session, recorder, run_dir
        comm = session.comm
        assert isinstance(comm, ElasticCommunicator)
        self.comm = comm
        self.done = 0  # steps this worker has committed (= the run's step once it has joined)
        self.healed: dict[str, Any] | None = None
        comm.set_state_fns(self.serve, self.load)

    # ------------------------------------------------------------------ rejoining
    def serve(self) -> dict[str, Any]:
        """What a rejoining worker receives from this one (torchft's ``state_dict``)."""
        s, r = self.s, self.recorder
        digest = tensor_sha1(s.x)
        self._membership({"event": "served", "worker": self.comm.worker, "step": self.done,
                          "x_sha1": digest}, force=True)
        return {
            "worker": self.comm.worker,
            "step": self.done,
            "x": ckpt.to_plain(s.x),
            "x_sha1": digest,
            "state": ckpt.to_plain(s.state),
            "buffers": ckpt.to_plain(s.buffers),
            "lines": list(r.lines),
            "loop": {"wall": r.wall, "loss_sum": r.loss_sum.clone(), "loss_count": r.loss_count},
            "comm": self.comm.counters(),
        }

    def load(self, saved: dict[str, Any]) -> None:
        """Apply a live peer's state (torchft's ``load_state_dict``); move the sampler on."""
        s, r, comm = self.s, self.recorder, self.comm
        s.x.copy_(ckpt.restore_into(s.x.clone(), saved["x"], "x"))
        s.state = ckpt.restore_into(s.state, saved["state"], "state")
        for name, buf in s.buffers.items():
            buf.copy_(ckpt.restore_into(buf.clone(), saved["buffers"][name], f"buffer {name}"))
        r.lines = list(saved["lines"])
        r.records = [json.loads(line) for line in r.lines]
        loop = saved["loop"]
        r.wall, r.loss_count = float(loop["wall"]), int(loop["loss_count"])
        r.loss_sum.copy_(loop["loss_sum"])
        comm.set_counters(saved["comm"])
        step = int(saved["step"])
        for _ in range(step - self.done):  # this worker's shard continues at the run's step
            s.sampler.next()
        torch.manual_seed(worker_seed(self.config.seed, 7919 * step + comm.worker + 1))
        self.done = r.reached = step
        self.healed = {"source": int(saved["worker"]), "step": step + 1, "x_sha1": tensor_sha1(s.x)}

    # ------------------------------------------------------------------ records
    def _membership(self, event: dict[str, Any], *, force: bool = False) -> None:
        if self.run_dir is None or not (force or self.is_writer):
            return
        event = {**event, "workers_present": self.comm.workers_present, "time": time.time()}
        with open(self.run_dir / MEMBERSHIP_FILE, "a") as fh:
            fh.write(json.dumps(event) + "\n")

    @property
    def is_writer(self) -> bool:
        return self.comm.is_lowest

    def _report_membership(self) -> None:
        """One line per worker that left or joined since the last quorum (the writer's; a
        rejoining worker reports its own join)."""
        comm = self.comm
        events = comm.take_events()
        if self.healed is not None:  # this worker rejoined (self.load) in this quorum
            joined = {"event": "joined", "worker": comm.worker, **self.healed}
            self.healed = None
            tqdm.write(comm.describe(joined, "model and algorithm state"), file=sys.stderr)
            self._membership(joined, force=True)
        if not comm.is_lowest:
            return
        for ev in events:
            tqdm.write(comm.describe(ev), file=sys.stderr)
            if ev["event"] == "left":
                self._membership(ev)

    def _check_not_behind(self) -> None:
        """Stop a worker that the run went on without: after a hang (SIGSTOP, a long pause) the
        others may have dropped it, gone on and even finished, so that it finds itself in a
        quorum of its own, behind. The run folder says how far the run got: a worker that is
        writer of a new membership while the folder holds a later step stops here
        (``RuntimeError``), before it writes anything."""
        if self.run_dir is None or not self.is_writer:
            return
        path = self.run_dir / "metrics.jsonl"
        last = 0
        if path.exists():
            for line in path.read_text().splitlines()[::-1]:
                try:
                    last = int(json.loads(line)["step"])
                    break
                except (ValueError, KeyError):
                    continue
        if last > self.done:
            raise StaleWorker(
                f"elastic: worker {self.comm.worker} is at step {self.done} but the run folder "
                f"{str(self.run_dir)!r} has records up to step {last}: the run went on without "
                "this worker (it hung or was cut off); it stops here. Start it again to rejoin "
                "a run that is still under way."
            )

    # ------------------------------------------------------------------ the loop
    def run(self, total: int, bar: Any = None, *, record_first: bool = False) -> int:
        """Steps until ``total`` is committed (``record_first``: record step 0 first, a fresh
        run); returns the last step."""
        s, comm, recorder = self.s, self.comm, self.recorder
        recorder.bar = bar
        if record_first:
            recorder.out_dir = self.run_dir if self.is_writer else None
            recorder.record(0)
        g_out = torch.empty_like(s.x)
        lost_s = 0.0  # time of the dropped attempts, counted in the next kept step's
        while self.done < total:
            if s.stop_requested():
                raise KeyboardInterrupt
            t0 = clock()
            before = self.done
            comm.begin_step()  # the quorum; a worker behind is healed here (self.load)
            if comm.events or self.healed is not None:  # the workers present changed
                self._check_not_behind()  # before it writes anything
                self._report_membership()
                s.state = s.algorithm.membership_changed(s.x, s.state, comm)
            if bar is not None:
                if self.done != before:
                    bar.update(self.done - before)
                bar.set_description(f"{self.config.algorithm_label} {comm.workers_present}/"
                                    f"{comm.n_workers} workers")
            if self.done >= total:
                break
            step = self.done + 1
            saved = self._snapshot()
            ok, losses, g = True, None, None
            try:
                losses, g = one_step(s, step, g_out)
            except WorkerLost as exc:
                comm.report_error(exc)
                ok = False
            if not comm.commit(ok):
                self._restore(saved)
                lost_s += clock() - t0
                continue
            self.done = step
            assert losses is not None and g is not None
            recorder.out_dir = self.run_dir if self.is_writer else None
            seconds, lost_s = clock() - t0 + lost_s, 0.0
            try:
                recorder.after_step(step, losses, g, seconds)
            except WorkerLost as exc:  # a peer died during the record: the step is kept
                if bar is not None:
                    bar.update(1)
                warnings.warn(f"step {step}'s record was lost: {exc}", UserWarning, stacklevel=2)
        return self.done

    def _snapshot(self) -> dict[str, Any]:
        """What a dropped step must give back, cloned where it lives (no copy to the CPU)."""
        s, comm = self.s, self.comm
        return {
            "x": s.x.clone(),
            "state": clone_tree(s.state),
            "buffers": {k: b.clone() for k, b in s.buffers.items()},
            "sampler": s.sampler.state_dict(),
            "rng": torch.get_rng_state(),
            "comm": comm.counters(),
            "first_bad": list(self.recorder.first_bad),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        s, comm = self.s, self.comm
        s.x.copy_(saved["x"])
        s.state = saved["state"]
        for k, b in s.buffers.items():
            b.copy_(saved["buffers"][k])
        s.sampler.load_state_dict(saved["sampler"])
        torch.set_rng_state(saved["rng"])
        comm.set_counters(saved["comm"])
        comm.synchronize()
        self.recorder.first_bad = saved["first_bad"]


def start_fresh(
    config: TrainConfig,
    session: Session,
    *,
    check_folder: Callable[[], None],
    write_first_files: Callable[[], None],
) -> None:
    """A fresh run (every worker at step 0): every worker checks the run folder
    (``check_folder``), starts from the lowest worker's model and buffers, waits for the others,
    and the writer writes the first files (``write_first_files``)."""
    comm = session.comm
    assert isinstance(comm, ElasticCommunicator)
    check_folder()
    comm.broadcast(session.x)
    for b in session.buffers.values():
        comm.broadcast(b)
    comm.barrier()  # every worker checked the folder before the writer touches it
    if comm.is_lowest:
        write_first_files()


