"""Distributed engine: one worker per process, communication through ``torch.distributed``.

This is the only module of peergrad that imports ``torch.distributed``. The worker axis has size
1: this process holds row ``rank`` of the simulated engine's ``[n, D]`` buffers. Algorithms run
unchanged; only the three cross-worker operations are implemented here:

- ``mix(x, W)``: one send to every out-neighbour and one receive from every in-neighbour of W
  (batched point-to-point, ``batch_isend_irecv``), then the weighted sum
  ``W_ii x_i + sum_j W_ij x_j`` locally. ``mix_start`` posts the messages and returns a handle, so
  a gossip can be in flight while the gradient is computed (combine-then-adapt forms).
- ``mean(x)``: an all-reduce (sum) divided by n. ``mean_start(x, out=)`` posts the same
  all-reduce (``async_op=True``) on the communicator's group and returns; ``wait_for(out)``
  waits for it and divides, bit for bit as ``mean``; ``synchronize()`` waits for all.
- ``all_gather``, ``all_to_all`` (``all_to_all_single``): the compressed exchanges.
- per-worker reductions need no communication (see :mod:`peergrad.comm.base`).

Byte accounting and ``simulated_comm_time_s`` use the same formulas as the simulated engine, from
the global W every process knows, so both engines report identical numbers. ``bytes_sent`` counts
exactly the tensors handed to ``torch.distributed`` (compressed messages travel packed, see
:mod:`peergrad.comm.compressed`): a gossip send of b bytes costs b, an all-gather of b bytes per
worker (n − 1)·b, an all-to-all of b bytes per slot (n − 1)·b and an all-reduce of b bytes
2(n − 1)/n·b (ring schedules). With
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
the operation and the missing peer(s), from the heartbeats every worker publishes in the process
group's store (:mod:`peergrad.comm.peer_failure`).

Layout (issue 25): this module holds the process-group helpers and every call into
``torch.distributed``; the parts of the communicator that need none are mixins in modules of
their own, :class:`~peergrad.comm.peer_failure.PeerWatch` (heartbeats, failure reports) and
:class:`~peergrad.comm.pacing.ImposedPacing` (the sleeps and held-back sends of a system
profile). Their public names stay importable from here.
"""

from __future__ import annotations

import atexit
import datetime
import os
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from peergrad.comm.base import (
    AllReduceAccounting,
    Decode,
    GossipRounds,
    MixFromStart,
    NetworkModel,
    PeerFailure,
    Workspace,
    memory_key,
    message_nbytes,
    post_key,
)
from peergrad.comm.pacing import ImposedPacing
from peergrad.comm.peer_failure import FAILED_PREFIX as FAILED_PREFIX
from peergrad.comm.peer_failure import HEARTBEAT_PREFIX as HEARTBEAT_PREFIX
from peergrad.comm.peer_failure import PeerWatch
from peergrad.comm.peer_failure import report_grace_s as report_grace_s
from peergrad.comm.pending import PendingMean
from peergrad.comm.pending import PendingMix as PendingMix
from peergrad.system.impose import RankRound
from peergrad.system.profile import SystemProfile
from peergrad.topology import MixingMatrix, Topology

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FAILED_PREFIX",
    "HEARTBEAT_PREFIX",
    "TORCHRUN_VARIABLES",
    "DistributedCommunicator",
    "NetworkModel",
    "PeerFailure",
    "PendingMix",
    "WireRecord",
    "destroy_process_group",
    "hosts_store",
    "init_process_group",
    "launched_by_torchrun",
    "process_group_timeout_s",
    "report_grace_s",
]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
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
    groups. For the same reason the means still in flight (``mean_start`` without
    ``wait_for``) are waited for first (each wait bounded by the communicator's ``timeout_s``;
    a failed one is dropped; also at exit): no work handle outlives the group. Calling it with
    no process group initialised is a no-op."""
    _drain_posted()
    if dist.is_initialized():
        dist.destroy_process_group()
    _PRIVATE_GROUPS.clear()


@dataclass(frozen=True)
class WireRecord:
    """One tensor this worker handed to ``torch.distributed`` in an accounted operation.

    ``op``: ``"send"`` (a gossip message to worker ``peer``), ``"all_reduce"``,
    ``"all_gather"`` or ``"all_to_all"``; ``nbytes``: ``numel * itemsize`` of the tensor handed
    over (for an all-to-all the n slots, of which the n − 1 for the other workers leave).
    """

    op: str
    nbytes: int
    peer: int | None = None


class DistributedCommunicator(
    AllReduceAccounting, GossipRounds[RankRound], MixFromStart, PeerWatch, ImposedPacing
):
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
        self._worker_ids = torch.tensor([self.rank])
        self._nccl = dist.get_backend(group) == "nccl"
        #: means posted with mean_start, not yet waited for, by the memory of their out
        self._in_flight: dict[tuple[object, ...], PendingMean] = {}
        self._watch_peers(_default_store())  # heartbeats, failure reports (PeerWatch)
        self._impose(profile)  # the system profile's sleeps and held sends (ImposedPacing)

    @property
    def worker_ids(self) -> Tensor:
        return self._worker_ids

    def begin_step(self, step: int) -> None:
        """Record the step (for error messages) and publish this worker's heartbeat; with a
        system profile, end the previous compute phase and start the step's draws."""
        if self.system is not None:
            self._end_compute()
            self.system.begin_step()
        self._publish_heartbeat(step)

    # last_seen, _fail, _wait: PeerWatch; compute and the sleeps: ImposedPacing
    def _isend(self, payload: Tensor, peer: int) -> object:
        """Post one gossip send now (a send the profile's links held back, ImposedPacing)."""
        return dist.isend(payload, peer, group=self.group)

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
    # account_gossip: GossipRounds's. Under a profile's link drops the bytes are those of the
    # surviving links: of the last unaccounted round over this W, else of a fresh draw (as the
    # simulated engine does).
    @property
    def _draws_rounds(self) -> bool:
        """Whether gossip rounds draw their surviving links (the profile drops links)."""
        return self.system is not None and self.system.link_drops

    def _draw_round(self, W: MixingMatrix) -> RankRound | None:
        assert self.system is not None
        return self.system.draw_round(W)

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
        nbytes = message_nbytes(x, message_bytes)
        if self.system is not None:
            self._end_compute()
        survivors = self._new_round(W, account=account)  # link drops: the surviving graph
        if survivors is None:
            out_peers = [j for j, _ in W.out_neighbors(self.rank)]
            in_peers = list(W.in_neighbors(self.rank))
        else:
            out_peers, in_peers = list(survivors.out_peers), list(survivors.in_peers)
        payload = x[0].contiguous()
        delayed = self._send_times(out_peers, nbytes)  # the profile's link delays, if any
        send_peers = [] if delayed else out_peers
        for j in out_peers:
            self._record("send", payload, j)
        buffers = [  # (peer j, W_ij, receive buffer)
            (j, weight, (workspace or self.workspace)(payload, f"recv{k}"))
            for k, (j, weight) in enumerate(in_peers)
        ]
        sends, recvs = self._post_round(payload, send_peers, buffers)
        if account:
            self._account_gossip(W, nbytes, survivors)
        self_weight = None if survivors is None else survivors.self_weight
        pending = PendingMix(self, W, x, recvs, sends, buffers, decode, self_weight)
        self._hold_sends(delayed, payload, pending)  # each leaves at its time
        return pending

    def _post_round(
        self, payload: Tensor, send_peers: list[int], buffers: list[tuple[int, float, Tensor]]
    ) -> tuple[list[tuple[int, object]], list[tuple[int, object]]]:
        """Post a round's sends of ``payload`` and its receives into ``buffers`` as one batch
        (``batch_isend_irecv``); ``(sends, receives)`` as ``(peer, work handle)`` pairs."""
        ops = [dist.P2POp(dist.isend, payload, j, self.group) for j in send_peers]
        ops += [dist.P2POp(dist.irecv, buf, j, self.group) for j, _, buf in buffers]
        recv_peers = [j for j, _, _ in buffers]
        works: list[object] = []
        if ops:
            try:
                works = list(dist.batch_isend_irecv(ops))
            except Exception as exc:
                raise self._fail("posting a gossip round", recv_peers + send_peers, exc) from exc
        n_send = len(send_peers)
        sends = list(zip(send_peers, works[:n_send], strict=True))
        recvs = list(zip(recv_peers, works[n_send:], strict=True))
        return sends, recvs

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

    def mean_start(
        self,
        x: Tensor,
        *,
        out: Tensor,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> None:
        """Post the all-reduce average of ``x`` (``[1, ...]``) into ``out`` and return at once
        (see :meth:`peergrad.comm.base.Communicator.mean_start`): ``x`` is copied into ``out``
        (unless ``out`` is ``x``), the sum all-reduce is posted with ``async_op=True`` on the
        communicator's group and its work handle kept until :meth:`wait_for` divides by n, the
        same operations as :meth:`mean`, so the result is bit for bit ``mean``'s. A
        non-contiguous ``out`` (NCCL: one on the CPU) is reduced in a contiguous (device) copy
        and written back at the wait. Charged (bytes, wire log) at the post, as ``mean``; a
        profile's ring time is slept at the wait, as far as it has not passed since the real
        all-reduce completed (:class:`PendingMean`). ``ValueError``: ``out`` unlike ``x``, or
        still in flight."""
        self._check(x, "mean_start")
        key = post_key(x, out, self._in_flight)
        nbytes = message_nbytes(x, message_bytes)
        modelled = account if record is None else record
        delay = 0.0
        if self.system is not None:  # the profile's ring cost: slept at the wait (PendingMean)
            self._end_compute()
            delay = self.system.all_reduce_s(nbytes) if modelled else 0.0
        staged = out
        if not out.is_contiguous() or (self._nccl and out.device.type == "cpu"):
            device = torch.device("cuda", torch.cuda.current_device()) if self._nccl else None
            staged = torch.empty(out.shape, dtype=out.dtype, device=device or out.device)
        if staged is not x:
            staged.copy_(x)
        everyone = list(range(self.n_workers))
        try:
            work = dist.all_reduce(staged, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
        except Exception as exc:
            raise self._fail("all-reduce", everyone, exc) from exc
        pending = self._in_flight[key] = PendingMean(out, staged, work, delay)
        pending.watch()
        if not _POSTING:  # also at exit, for a process that never destroys its group
            atexit.unregister(_drain_posted)  # registered at most once
            atexit.register(_drain_posted)
        _POSTING.add(self)
        if modelled:
            self._record("all_reduce", staged)
        if account:
            self.account_mean(nbytes)

    def wait_for(self, out: Tensor) -> Tensor:
        """Wait for the mean posted into ``out`` (or an equal view of its memory), bounded by
        ``timeout_s`` (:class:`PeerFailure`), and return ``out``; ``out`` at once when nothing
        is in flight into it."""
        pending = self._in_flight.pop(memory_key(out), None)
        if pending is not None:
            pending.finish(self)
        return out

    def synchronize(self) -> None:
        """Wait for every mean posted with :meth:`mean_start`, in posting order."""
        while self._in_flight:
            key = next(iter(self._in_flight))
            self._in_flight.pop(key).finish(self)

    def _drop_in_flight(self) -> None:
        """Before the process group goes: wait for what is in flight, drop what fails."""
        try:
            self.synchronize()
        except Exception:  # a dead peer: the group is being destroyed anyway
            pass
        finally:
            self._in_flight.clear()

    def all_to_all(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[1, n, P] -> [1, n, P]``: slot j goes to worker j; slot j of the result is what
        worker j sent here (``all_to_all_single`` on the communicator's group; gloo supports
        it on CPU tensors). ``message_bytes`` overrides the size of one slot (default ``P *
        itemsize``; charged ``(n - 1)`` times); ``account=False``: not charged (the wire log
        still records the tensor). ``ValueError`` for a payload that is not ``[1, n, P]``."""
        self._check(payload, "all_to_all")
        if payload.dim() != 3 or payload.shape[1] != self.n_workers:
            raise ValueError(
                f"all_to_all: payload must be [w, n, P] with n = {self.n_workers}, got "
                f"{tuple(payload.shape)}"
            )
        nbytes = message_nbytes(payload[:, 0], message_bytes)
        if self.system is not None:  # the profile's cost, before the real exchange
            cost = self.system.ring.alltoall_time_s(float(nbytes), self.n_workers)
            self._before_collective(cost if account else 0.0)
        src = payload.contiguous()
        if self._nccl and src.device.type == "cpu":
            src = src.to(torch.device("cuda", torch.cuda.current_device()))
        received = torch.empty_like(src)
        everyone = list(range(self.n_workers))
        try:
            work = dist.all_to_all_single(
                received.view(-1), src.view(-1), group=self.group, async_op=True
            )
        except Exception as exc:
            raise self._fail("all-to-all", everyone, exc) from exc
        self._wait(work, "all-to-all", everyone)
        self._record("all_to_all", src)
        if account:
            self.account_all_to_all(nbytes)
        return received.to(payload.device)

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


#: communicators that posted a mean with ``mean_start``: destroy_process_group waits for them
_POSTING: weakref.WeakSet[DistributedCommunicator] = weakref.WeakSet()


def _drain_posted() -> None:
    """Wait for (or drop) every mean still in flight, before the groups or the interpreter go."""
    for comm in list(_POSTING):
        comm._drop_in_flight()
    _POSTING.clear()


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
