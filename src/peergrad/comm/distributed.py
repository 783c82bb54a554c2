"""Distributed engine: one worker per process, communication through ``torch.distributed``.

This is the only module of peergrad that imports ``torch.distributed``. The worker axis has size
1: this process holds row ``rank`` of the simulated engine's ``[n, D]`` buffers. Algorithms run
unchanged; only the three cross-worker operations are implemented here:

- ``mix(x, W)``: one send to every out-neighbour and one receive from every in-neighbour of W
  (batched point-to-point, ``batch_isend_irecv``), then the weighted sum
  ``W_ii x_i + sum_j W_ij x_j`` locally. ``mix_start`` posts the messages and returns a handle, so
  a gossip can be in flight while the gradient is computed (combine-then-adapt forms).
- ``mean(x)``: an all-reduce (sum) divided by n.
- per-worker reductions need no communication (see :mod:`peergrad.comm.base`).

Byte accounting and ``simulated_comm_time_s`` use the same formulas as the simulated engine, from
the global W every process knows, so both engines report identical numbers. ``bytes_sent`` counts
exactly the tensors handed to ``torch.distributed`` (compressed messages travel packed, see
:mod:`peergrad.comm.compressed`): a gossip send of b bytes costs b, an all-gather of b bytes per
worker (n − 1)·b and an all-reduce of b bytes 2(n − 1)/n·b (ring schedules). With
``record_wire=True`` every such tensor is logged in ``wire_log`` (:class:`WireRecord`), which the
tests compare with ``bytes_sent``.

System profiles (issue 26 item 5): with ``profile=`` a
:class:`~peergrad.system.SystemProfile` is imposed on the real processes: sleeps for the
profile's compute (:meth:`DistributedCommunicator.compute`), each gossip send posted at the time
the profile's links say, a sleep of the profile's ring cost before each accounted collective,
and the profile's link drops (Metropolis–Hastings weights of the surviving graph). The model and
what it leaves out: :mod:`peergrad.system.impose`.

Failures: every wait is bounded by ``timeout_s``, by default the timeout the default process
group was created with (``init_process_group(timeout_s=...)``), so one number decides when a
hung peer is reported. When a peer dies or stops answering, :class:`PeerFailure` names the step,
the operation and the missing peer(s), instead of a bare error from inside the backend. Every
worker publishes a heartbeat in the process group's store (a key per worker, the step announced
at every :meth:`begin_step`) and, when it gives up, a failure key. A worker that gives up waits
a short grace period (:func:`report_grace_s`) for the others to do the same: the workers that
are alive but blocked on the missing one (directly, or in the same collective) time out too and
report, so they are excluded, and the report names only the peers that neither reported a
failure nor got past this worker's step.
"""

from __future__ import annotations

import bisect
import datetime
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from peergrad.comm.base import (
    AllReduceAccounting,
    Decode,
    MixFromStart,
    NetworkModel,
    PeerFailure,
    Workspace,
    message_nbytes,
)
from peergrad.system.impose import ImposedSystem, RankRound
from peergrad.system.profile import SystemProfile
from peergrad.topology import MixingMatrix, Topology

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
HEARTBEAT_PREFIX = "peergrad/heartbeat/"
FAILED_PREFIX = "peergrad/failed/"
#: Seconds a communicator waits when the process group's timeout cannot be read (torch keeps it
#: in a private attribute), and the default of :func:`init_process_group`.
DEFAULT_TIMEOUT_S = 60.0


def launched_by_torchrun() -> bool:
    """True when the torchrun / ``env://`` variables are set in the environment."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def init_process_group(
    *, backend: str | None = None, timeout_s: float = 60.0, device: torch.device | None = None
) -> None:
    """Join the process group described by torchrun's environment variables.

    ``backend`` defaults to NCCL for CUDA devices and gloo otherwise. Raises ``ValueError`` when
    the variables are missing (not started by torchrun) or ``timeout_s <= 0``.
    """
    if dist.is_initialized():
        return
    if not launched_by_torchrun():
        missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
        raise ValueError(
            "--engine distributed must be started by torchrun (e.g. `torchrun --standalone "
            f"--nproc-per-node 4 -m peergrad train --engine distributed ...`); missing "
            f"environment variables: {', '.join(missing)}"
        )
    if not timeout_s > 0:
        raise ValueError(f"--timeout-s must be > 0, got {timeout_s}")
    if backend is None:
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl" and device is not None:
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs
    )


def process_group_timeout_s(group: dist.ProcessGroup | None = None) -> float | None:
    """Seconds of the timeout ``group`` (default: the default group) was created with.

    torch has no public getter: this reads the backend's options (``_timeout``, present on
    gloo and NCCL backends since torch 2.0). None when no process group is initialised or torch
    does not expose the value.
    """
    if not dist.is_initialized():
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_group

        pg = group if group is not None else _get_default_group()
    except Exception:
        return None
    for device_type in ("cpu", "cuda"):
        try:
            timeout = pg._get_backend(torch.device(device_type)).options._timeout
            seconds = float(timeout.total_seconds())
        except Exception:  # no backend for this device type, or another torch
            continue
        if seconds > 0:
            return seconds
    return None


def report_grace_s(timeout_s: float) -> float:
    """Seconds a worker that gave up waits for the other blocked workers to report before it
    names the missing peers: ``min(2, timeout_s / 2)``. A worker hosting the store must live
    that long after its own report (the ``peergrad`` CLI waits ``min(3, timeout_s)``)."""
    return min(2.0, timeout_s / 2)


def hosts_store() -> bool:
    """True when this process hosts the rendezvous store (rank 0 started without torchrun's
    agent, which otherwise hosts it): peers read heartbeats from it while they report errors."""
    return os.environ.get("RANK") == "0" and "TORCHELASTIC_RUN_ID" not in os.environ


def destroy_process_group() -> None:
    """Destroy the default process group and every group created on it, and drop peergrad's
    references to its private groups (:func:`_private_groups`).

    Dropping them here matters: a gloo group whose last reference lives until interpreter exit
    keeps its worker threads alive into finalization, and a thread that then releases a
    finished work (its tensors need the GIL) aborts the process with ``terminate called
    without an active exception`` after all work is done. Communicators built before stay
    unusable afterwards (their group is shut down), as with ``torch.distributed``'s own
    groups. Calling it with no process group initialised is a no-op."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _PRIVATE_GROUPS.clear()


@dataclass(frozen=True)
class WireRecord:
    """One tensor this worker handed to ``torch.distributed`` in an accounted operation.

    ``op``: ``"send"`` (a gossip message to worker ``peer``), ``"all_reduce"`` or
    ``"all_gather"``; ``nbytes``: ``numel * itemsize`` of the tensor handed over.
    """

    op: str
    nbytes: int
    peer: int | None = None


@dataclass
class PendingMix:
    """A gossip in flight: call :meth:`wait` for ``W x`` (``W decode(x)`` with ``decode``),
    shape ``[1, ...]``."""

    comm: DistributedCommunicator
    W: MixingMatrix
    x: Tensor
    requests: list[tuple[int, object]]  # (peer, work handle) for every posted receive
    sends: list[tuple[int, object]]
    buffers: list[tuple[int, float, Tensor]]  # (peer j, W_ij, receive buffer)
    decode: Decode | None = None
    self_weight: float | None = None  # W'[i, i] of a round with dropped links, else W's

    done: bool = False

    def wait(self, out: Tensor | None = None) -> Tensor:
        if self.done:  # a second wait on gloo would block for a message that never comes
            raise RuntimeError("PendingMix.wait() was already called for this gossip round")
        self.done = True
        comm = self.comm
        if comm.system is not None:  # the compute phase ends; the due sends leave
            comm._end_compute()
            comm._flush_sends()
        for peer, work in self.requests:
            comm._wait(work, f"gossip receive from worker {peer}", [peer])
        for peer, work in self.sends:
            comm._wait(work, f"gossip send to worker {peer}", [peer])
        i = comm.rank
        decode = self.decode if self.decode is not None else (lambda rows: rows)
        own = decode(self.x)
        if out is None:
            out = torch.empty_like(own)
        weight = self.W.self_weight(i) if self.self_weight is None else self.self_weight
        torch.mul(own, weight, out=out)
        for _, weight, buf in self.buffers:
            out.add_(decode(buf.view_as(self.x)), alpha=weight)
        return out


class DistributedCommunicator(AllReduceAccounting, MixFromStart):
    """Communicator of the distributed engine (worker axis of size 1; this process is ``rank``).

    ``mix`` (from :class:`~peergrad.comm.base.MixFromStart`) is ``mix_start(...).wait(out)``:
    this worker's row ``W_ii x_i + sum_j W_ij x_j`` (shape ``[1, ...]``); with ``decode``,
    ``W_ii decode(x_i) + sum_j W_ij decode(x_j)``.

    Args:
        topology: the gossip schedule W(k); its n must equal the process group's world size.
        network: latency/bandwidth model for ``simulated_comm_time_s``.
        group: process group. Default: peergrad's own group over all ranks of the default
            process group, created (``dist.new_group``, collective: build the communicator on
            every rank) by the first communicator of the process group and shared by the later
            ones. Every message of the communicator goes there, so the user's collectives on
            the default group (``dist.all_reduce(loss)`` for logging, between ``backward()`` and
            ``step()``, while the optimizer's messages are in flight) never interleave with
            peergrad's: each group is a communicator of its own (gloo: its own connections;
            NCCL: its own communicator and stream). A group given here is used as is: nothing
            else may use it while peergrad's messages are in flight.
        timeout_s: seconds any single wait may take before :class:`PeerFailure` (> 0). None
            (default): the timeout of the process group given as ``group``, else of the
            default group, i.e. ``init_process_group(timeout_s=...)``'s;
            :data:`DEFAULT_TIMEOUT_S` when torch does not expose it. Read back as ``timeout_s``.
        record_wire: log every tensor handed to ``torch.distributed`` by an accounted
            operation in ``wire_log`` (a list of :class:`WireRecord`; ``None`` when off).
        profile: a :class:`~peergrad.system.SystemProfile` for n workers to impose on the real
            processes (sleeps for its compute, its links and its collectives; its link drops),
            see :mod:`peergrad.system.impose`; read back as ``system``
            (:class:`~peergrad.system.impose.ImposedSystem`, None without a profile). Every
            process draws the profile's randomness from the same seed, so they agree on the
            stragglers and dropped links of every step without a message, and with the
            simulated engine under the same profile.

    Raises ``ValueError`` when the process group is not initialised or its size differs from
    ``topology.n``, or the profile is for another number of workers or has churn.
    """

    #: ``mix_start`` accepts ``workspace=`` (see :class:`peergrad.comm.segments.SegmentComm`).
    mix_start_takes_workspace = True

    def __init__(
        self,
        topology: Topology,
        *,
        network: NetworkModel | None = None,
        group: dist.ProcessGroup | None = None,
        timeout_s: float | None = None,
        record_wire: bool = False,
        profile: SystemProfile | None = None,
    ) -> None:
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not dist.is_initialized():
            raise ValueError(
                "the distributed engine needs an initialised process group; call "
                "peergrad.comm.distributed.init_process_group() under torchrun first"
            )
        if timeout_s is None:  # one timeout: the process group's (the user's group, if given)
            timeout_s = process_group_timeout_s(group) or DEFAULT_TIMEOUT_S
        self.timeout_s = float(timeout_s)
        # peergrad's own process groups (issue 24): its messages never share a communicator
        # with the user's collectives on the default group (see the class doc)
        self.user_group = group
        if group is None:
            group, control = _private_groups()
        else:
            control = group
        self.group = group
        self._control = control
        self._control_nccl = dist.get_backend(control) == "nccl"
        self.rank = dist.get_rank(group)
        world = dist.get_world_size(group)
        if world != topology.n:
            raise ValueError(
                f"world size {world} (torchrun --nproc-per-node x --nnodes) differs from the "
                f"number of workers n = {topology.n} (--workers); they must be equal"
            )
        self.topology = topology
        self.n_workers = topology.n
        self.network = network if network is not None else NetworkModel()
        self.bytes_sent = torch.zeros(1, dtype=torch.float64)
        self.simulated_comm_time_s = 0.0
        self.rounds = 0
        self.wire_log: list[WireRecord] | None = [] if record_wire else None
        self.workspace = Workspace()
        self.current_step = 0
        self._worker_ids = torch.tensor([self.rank])
        self._store = _default_store()
        if self._store is not None:  # a fresh run: forget an earlier run's heartbeat and failure
            self._store.set(f"{HEARTBEAT_PREFIX}{self.rank}", "0")
            self._store.delete_key(f"{FAILED_PREFIX}{self.rank}")
        self._nccl = dist.get_backend(group) == "nccl"
        self.timeout = datetime.timedelta(seconds=self.timeout_s)
        if profile is not None and profile.n_workers != self.n_workers:
            raise ValueError(
                f"the system profile is for {profile.n_workers} workers but there are "
                f"n = {self.n_workers}"
            )
        self.system = ImposedSystem(profile, self.rank) if profile is not None else None
        self._link_free = 0.0  # time.monotonic() at which this worker's link is free again
        # sends posted later (link delays): (due time, order, peer, payload, owning round)
        self._due: list[tuple[float, int, int, Tensor, PendingMix]] = []
        self._order = 0  # tie-break of equal due times: posting order
        self._compute: tuple[float, float] | None = None  # (start, factor): relative mode
        #: relative mode: the measured compute phases (seconds, before the imposed sleeps)
        self.compute_phase_s = 0.0
        self.compute_phases = 0
        self._unaccounted: tuple[MixingMatrix, RankRound | None] | None = None

    @property
    def worker_ids(self) -> Tensor:
        return self._worker_ids

    # ------------------------------------------------------------------ failure handling
    def begin_step(self, step: int) -> None:
        """Record the step (for error messages) and publish this worker's heartbeat; with a
        system profile, end the previous compute phase and start the step's draws."""
        if self.system is not None:
            self._end_compute()
            self.system.begin_step()
        self.current_step = step
        if self._store is not None:
            try:
                self._store.set(f"{HEARTBEAT_PREFIX}{self.rank}", str(step))
            except Exception as exc:
                raise PeerFailure(
                    f"worker {self.rank}: the rendezvous store is unreachable at step {step} "
                    f"(its host, worker 0 or the torchrun agent, stopped): {exc}"
                ) from exc

    def last_seen(self) -> dict[int, tuple[int | None, bool]] | None:
        """For every other worker: (last step it announced or None, whether it reported a failure).

        None when there is no store or it cannot be reached.
        """
        if self._store is None:
            return None
        seen: dict[int, tuple[int | None, bool]] = {}
        try:
            for j in range(self.n_workers):
                if j == self.rank:
                    continue
                beat, failed = f"{HEARTBEAT_PREFIX}{j}", f"{FAILED_PREFIX}{j}"
                step = int(self._store.get(beat)) if self._store.check([beat]) else None
                seen[j] = (step, bool(self._store.check([failed])))
        except Exception:  # the store's host may be the process that died
            return None
        return seen

    def _silent_peers(
        self,
    ) -> tuple[dict[int, tuple[int | None, bool]] | None, dict[int, int | None]]:
        """The heartbeats, and the peers that neither reported a failure nor announced a step
        past this worker's (with their last step, None if never seen).

        Alive workers blocked on the missing peer time out at about the same time as this one
        and report a failure; so while more than one peer is silent, poll the store for up to
        :func:`report_grace_s` seconds. ``(None, {})`` without a reachable store.
        """
        deadline = time.monotonic() + report_grace_s(self.timeout_s)
        while True:
            seen = self.last_seen()
            if seen is None:
                return None, {}
            silent = {
                j: st
                for j, (st, failed) in seen.items()
                if not failed and (st is None or st <= self.current_step)
            }
            if len(silent) <= 1 or time.monotonic() >= deadline:
                return seen, silent
            time.sleep(0.05)

    def _fail(self, what: str, peers: list[int], exc: BaseException) -> PeerFailure:
        """Build the error: suspects are peers that went silent without reporting a failure
        (alive workers blocked on them report one, see :meth:`_silent_peers`)."""
        if self._store is not None:
            try:  # tell the others this worker stopped because of an error, not silently
                self._store.set(f"{FAILED_PREFIX}{self.rank}", str(self.current_step))
            except Exception:
                pass
        seen, silent = self._silent_peers()
        if seen is None:
            suspects = ", ".join(str(p) for p in peers) or "unknown"
            detail = "heartbeats unavailable"
        else:
            behind = {j: st for j, (st, _) in seen.items() if st is None or st < self.current_step}
            chosen = silent or behind or {j: seen[j][0] for j in peers if j in seen}
            suspects = (
                ", ".join(
                    f"{j} (last seen at step {st})" if st is not None else f"{j} (never seen)"
                    for j, st in sorted(chosen.items())
                )
                or "unknown"
            )
            detail = f"this worker is at step {self.current_step}"
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        return PeerFailure(
            f"worker {self.rank}: {what} failed at step {self.current_step}; missing or "
            f"unresponsive peer(s): {suspects}; {detail} (backend: {reason})"
        )

    def _wait(self, work: object, what: str, peers: list[int]) -> None:
        try:
            finished = work.wait(self.timeout)  # type: ignore[attr-defined]
        except Exception as exc:  # gloo raises RuntimeError / DistBackendError subclasses
            raise self._fail(what, peers, exc) from exc
        if finished is False:
            raise self._fail(what, peers, TimeoutError(f"no answer within {self.timeout}"))

    # ------------------------------------------------------------------ system profile
    def compute(self) -> None:
        """The gradient is computed now (called by the training loop after ``begin_step`` and
        the pre-gradient rounds). With a system profile giving a step time: sleep this
        worker's compute time of the profile for this step, seconds. With one that gives none
        (relative speeds): start timing the compute phase; the extra ``(f - 1) x measured``
        seconds are slept when it ends (:mod:`peergrad.system.impose`). No-op without a
        profile."""
        if self.system is None:
            return
        self._end_compute()
        value = self.system.compute()
        if self.system.relative:
            self._compute = (time.monotonic(), value)
        else:
            self._sleep_until(time.monotonic() + value)

    def _end_compute(self) -> None:
        """End a relative-mode compute phase: sleep ``(f - 1)`` times its measured length."""
        if self._compute is None:
            return
        start, factor = self._compute
        self._compute = None
        now = time.monotonic()
        self.compute_phase_s += now - start
        self.compute_phases += 1
        if factor > 1.0:
            self._sleep_until(now + (factor - 1.0) * (now - start))

    def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (``time.monotonic()`` seconds), posting the sends that
        fall due on the way, each at its time."""
        while True:
            now = time.monotonic()
            due = self._due[0][0] if self._due else float("inf")
            if due <= now:
                self._post_due(now)
                continue
            until = min(due, deadline)
            if until <= now:
                return
            time.sleep(until - now)

    def _post_due(self, now: float) -> None:
        """Post every pending send whose time has come (in due order)."""
        while self._due and self._due[0][0] <= now:
            _, _, peer, payload, pending = self._due.pop(0)
            try:
                work = dist.isend(payload, peer, group=self.group)
            except Exception as exc:
                raise self._fail("posting a gossip send", [peer], exc) from exc
            pending.sends.append((peer, work))

    def _flush_sends(self) -> None:
        """Post every pending send, sleeping until each is due (before a blocking wait)."""
        if self._due:
            self._sleep_until(self._due[-1][0])
            self._post_due(float("inf"))

    def _before_collective(self, seconds: float) -> None:
        """End the compute phase, post the pending sends, sleep the modelled collective."""
        self._end_compute()
        self._flush_sends()
        if seconds > 0:
            self._sleep_until(time.monotonic() + seconds)

    # ------------------------------------------------------------------ communication
    def _check(self, x: Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != 1:
            raise ValueError(
                f"{what}: x must have the worker axis first with size 1 on the distributed "
                f"engine, got shape {tuple(x.shape)}"
            )

    def _record(self, op: str, tensor: Tensor, peer: int | None = None) -> None:
        if self.wire_log is not None:
            self.wire_log.append(WireRecord(op, tensor.numel() * tensor.element_size(), peer))

    # ------------------------------------------------------------------ accounting
    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        """Charge one gossip round over W of ``nbytes`` per message (bytes, time, one round).

        Under a profile's link drops the bytes are those of the surviving links: of the last
        unaccounted round over this W, else of a fresh draw (as the simulated engine does)."""
        survivors = None
        if self.system is not None and self.system.link_drops:
            kept, self._unaccounted = self._unaccounted, None
            survivors = kept[1] if kept is not None and kept[0] is W else self.system.draw_round(W)
        self._account_gossip(W, nbytes, survivors)

    def _account_gossip(self, W: MixingMatrix, nbytes: float, survivors: RankRound | None) -> None:
        deg = W.out_degrees
        sent = deg[self.rank] if survivors is None else len(survivors.out_peers)
        self.bytes_sent += float(sent) * nbytes
        self.simulated_comm_time_s += self.network.gossip_time_s(float(deg.max()) * nbytes)
        self.rounds += 1

    def mix_start(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        decode: Decode | None = None,
        account: bool = True,
        workspace: Workspace | None = None,
    ) -> PendingMix:
        """Post the sends and receives of one gossip round; ``x`` must not change until wait.

        ``x`` (``[1, P]``) is what crosses the wire; with ``decode`` it is a payload (e.g. packed
        bytes) and every row, this worker's and each received one, is decoded before the
        weighted sum (see :meth:`peergrad.comm.base.Communicator.mix`). ``account=False``: the
        round is not charged to the counters (the caller charges it, see :meth:`account_gossip`);
        the wire log still records every tensor. ``workspace`` holds the receive buffers
        (default: the communicator's own); rounds in flight at the same time need different ones.
        """
        self._check(x, "mix")
        if W.n != self.n_workers:
            raise ValueError(f"mix: W is {W.n}x{W.n} but there are n = {self.n_workers} workers")
        i = self.rank
        nbytes = message_nbytes(x, message_bytes)
        system = self.system
        survivors: RankRound | None = None
        if system is not None:
            self._end_compute()
            if system.link_drops:  # this round's surviving graph (the simulated engine's draw)
                survivors = system.draw_round(W)
                if not account:
                    self._unaccounted = (W, survivors)
        if survivors is None:
            out_peers = [j for j, _ in W.out_neighbors(i)]
            in_peers = list(W.in_neighbors(i))
        else:
            out_peers, in_peers = list(survivors.out_peers), list(survivors.in_peers)
        payload = x[0].contiguous()
        ops, recv_peers, send_peers = [], [], []
        buffers: list[tuple[int, float, Tensor]] = []  # (peer j, W_ij, receive buffer)
        delayed: list[tuple[float, int]] = []  # (due time, peer): link delays of the profile
        if system is not None and out_peers:
            offsets, busy = system.send_offsets(out_peers, nbytes)
            depart = max(time.monotonic(), self._link_free)
            self._link_free = depart + busy
            delayed = [(depart + o, j) for o, j in zip(offsets, out_peers, strict=True)]
            if self._nccl:  # NCCL needs a round's sends and receives in one group: post all
                self._sleep_until(max(d for d, _ in delayed))  # at the last one's time
                delayed = []
        if not delayed:
            for j in out_peers:
                ops.append(dist.P2POp(dist.isend, payload, j, self.group))
                send_peers.append(j)
        for j in out_peers:
            self._record("send", payload, j)
        for j, weight in in_peers:
            buf = (workspace or self.workspace)(payload, f"recv{len(buffers)}")
            ops.append(dist.P2POp(dist.irecv, buf, j, self.group))
            recv_peers.append(j)
            buffers.append((j, weight, buf))
        works: list[object] = []
        if ops:
            try:
                works = list(dist.batch_isend_irecv(ops))
            except Exception as exc:
                raise self._fail("posting a gossip round", recv_peers + send_peers, exc) from exc
        n_send = len(send_peers)
        sends = list(zip(send_peers, works[:n_send], strict=True))
        recvs = list(zip(recv_peers, works[n_send:], strict=True))
        if account:
            self._account_gossip(W, nbytes, survivors)
        self_weight = None if survivors is None else survivors.self_weight
        pending = PendingMix(self, W, x, recvs, sends, buffers, decode, self_weight)
        for due, j in delayed:  # each send leaves at its time (posted by _sleep_until)
            self._order += 1
            bisect.insort(self._due, (due, self._order, j, payload, pending))
        if delayed:
            self._post_due(time.monotonic())
        return pending

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        """All-reduce average over the n workers (shape ``[1, ...]``).

        The result lives in a workspace buffer that the next ``mean`` of the same shape reuses.
        ``account=False`` is for metrics: nothing is charged to the byte and time counters.
        ``record`` (default: ``account``): log the tensor in ``wire_log``; a caller that charges
        the all-reduce itself (:meth:`account_mean`) passes ``account=False, record=True``.
        """
        self._check(x, "mean")
        if self.system is not None:  # the profile's ring cost, before the real all-reduce
            modelled = account if record is None else record
            nbytes = message_nbytes(x, message_bytes)
            self._before_collective(self.system.all_reduce_s(nbytes) if modelled else 0.0)
        out = self.workspace(x, "mean" if account else "mean-metrics").copy_(x)
        staged = out
        if self._nccl and out.device.type == "cpu":  # metrics kept on the CPU
            staged = out.to(torch.device("cuda", torch.cuda.current_device()))
        try:
            work = dist.all_reduce(staged, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("all-reduce", list(range(self.n_workers)), exc) from exc
        self._wait(work, "all-reduce", list(range(self.n_workers)))
        if staged is not out:
            out.copy_(staged)
        out.div_(self.n_workers)
        if account if record is None else record:
            self._record("all_reduce", staged)
        if account:
            self.account_mean(message_nbytes(x, message_bytes))
        return out

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[1, P] -> [1, n, P]``: every worker's payload, in rank order.

        ``message_bytes`` overrides the size of one worker's payload (default ``P * itemsize``);
        ``account=False``: not charged to the counters (the wire log still records it).
        """
        self._check(payload, "all_gather")
        if payload.dim() != 2:
            raise ValueError(f"all_gather: payload must be [w, P], got {tuple(payload.shape)}")
        if self.system is not None:  # the profile's ring cost, before the real all-gather
            nbytes = message_nbytes(payload, message_bytes)
            self._before_collective(self.system.all_gather_s(nbytes) if account else 0.0)
        src = payload.contiguous()
        if self._nccl and src.device.type == "cpu":
            src = src.to(torch.device("cuda", torch.cuda.current_device()))
        rows = [torch.empty_like(src) for _ in range(self.n_workers)]
        everyone = list(range(self.n_workers))
        try:
            work = dist.all_gather(rows, src, group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("all-gather", everyone, exc) from exc
        self._wait(work, "all-gather", everyone)
        out = torch.cat(rows).to(payload.device).unsqueeze(0)
        self._record("all_gather", src)
        if account:
            self.account_all_gather(message_nbytes(payload, message_bytes))
        return out

    def gather(self, x: Tensor) -> Tensor | None:
        """Rows of all workers stacked ``[n, ...]`` on rank 0 (None elsewhere); not accounted."""
        self._check(x, "gather")
        if self.system is not None:
            self._before_collective(0.0)
        rows = [torch.empty_like(x) for _ in range(self.n_workers)] if self.rank == 0 else None
        try:
            work = dist.gather(x.contiguous(), rows, dst=0, group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("gather", list(range(self.n_workers)), exc) from exc
        self._wait(work, "gather", list(range(self.n_workers)))
        return torch.cat(rows) if rows is not None else None

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """Overwrite ``x`` (``[1, ...]``) in place with worker ``src``'s row; not accounted."""
        self._check(x, "broadcast")
        if self.system is not None:
            self._before_collective(0.0)
        if not 0 <= src < self.n_workers:
            raise ValueError(f"src must be in [0, {self.n_workers - 1}], got {src}")
        try:
            work = dist.broadcast(x, src=src, group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("broadcast", [src], exc) from exc
        self._wait(work, "broadcast", [src])
        return x

    def max_over_workers(self, value: int) -> int:
        """The largest of every worker's ``value`` (a small non-negative int): one 1-element
        all-reduce on the control group (CPU, so no device synchronisation); not accounted and
        not in the wire log. Collective. Raises :class:`PeerFailure` when a peer is missing."""
        if self.system is not None:
            self._before_collective(0.0)
        flag = torch.tensor([int(value)], dtype=torch.int32)
        if self._control_nccl:  # a group given by the user: NCCL reduces device tensors only
            flag = flag.to(torch.device("cuda", torch.cuda.current_device()))
        everyone = list(range(self.n_workers))
        try:
            work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._control, async_op=True)
        except Exception as exc:
            raise self._fail("agreement all-reduce", everyone, exc) from exc
        self._wait(work, "agreement all-reduce", everyone)
        return int(flag[0])

    def barrier(self) -> None:
        if self.system is not None:
            self._before_collective(0.0)
        try:
            work = dist.barrier(group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("barrier", list(range(self.n_workers)), exc) from exc
        self._wait(work, "barrier", list(range(self.n_workers)))


#: peergrad's private process groups, created once per default group: ``(world, data, control)``.
_PRIVATE_GROUPS: list[tuple[object, dist.ProcessGroup, dist.ProcessGroup]] = []


def _private_groups() -> tuple[dist.ProcessGroup, dist.ProcessGroup]:
    """peergrad's own groups over all ranks of the default group: ``(data, control)``.

    ``data`` has the default group's backend and carries every message of the communicators
    built without ``group=``; ``control`` carries the optimizer's 1-element agreements on CPU
    tensors (a gloo group under NCCL, else ``data`` itself). Created at the first call after
    ``init_process_group`` with ``new_group`` (collective: every rank builds its first
    communicator at the same point) and shared by the later communicators of that process group.
    """
    world = dist.group.WORLD
    for owner, data, control in _PRIVATE_GROUPS:
        if owner is world:
            return data, control
    _PRIVATE_GROUPS.clear()  # an earlier process group was destroyed
    # new_group would otherwise take the backend's default timeout (30 min), not the one the
    # user gave init_process_group.
    seconds = process_group_timeout_s()
    timeout = None if seconds is None else datetime.timedelta(seconds=seconds)
    data = dist.new_group(timeout=timeout)
    control = (
        dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() == "nccl" else data
    )
    _PRIVATE_GROUPS.append((world, data, control))
    return data, control


def _default_store() -> dist.Store | None:
    """The world group's key-value store (torchrun's rendezvous store), if reachable."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:
        return None
