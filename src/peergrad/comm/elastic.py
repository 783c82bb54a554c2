"""Elastic distributed engine: one worker per process on torchft, membership changing per step.

torchft (PyTorch organisation, https://github.com/pytorch/torchft, ``pip install
'peergrad[ft]'``) keeps a per-step *quorum* of replica groups through a coordinator, the
*lighthouse*, lets replicas leave and rejoin, and recovers a rejoining replica from a live peer.
Here every peergrad worker is one torchft replica group of size 1 (its own ``Manager`` and
reconfigurable ``ProcessGroupGloo``); peergrad does not coordinate anything itself. The
communicator implements the same protocol as the other engines (worker axis of size 1), over the
workers of the current quorum ("present"):

- ``mean(x)``: an all-reduce (sum) over the present workers divided by their number m (the
  quorum semantics of torchft's all-reduce, and of the simulated engine's churn). With every
  worker present it is the plain distributed engine's all-reduce, bit for bit.
- ``mix(x, W)``: a gossip round over the surviving graph: the Metropolis–Hastings weights of W's
  graph restricted to the present workers (:func:`~peergrad.topology.surviving_weights`, the rule
  the simulated engine uses for churn, so both engines agree on what a failure does); with every
  worker present, W itself. One send per present out-neighbour and one receive per present
  in-neighbour (``send``/``recv`` on the quorum's process group), then the weighted sum.
- ``all_gather``: the present workers' payloads, ``[1, m, P]`` in worker order (as the simulated
  engine under churn). ``all_to_all`` needs every worker (refused while one is absent). No
  ``gather`` (a run's result holds this worker's row only).
- ``mean_start``/``wait_for``: the all-reduce runs blocking at the post (no overlap here).

Per step (:mod:`peergrad.train.elastic` drives it): :meth:`ElasticCommunicator.begin_step` joins
the step's quorum (``Manager.start_quorum``; a worker behind the others is healed there from a
live peer through torchft's checkpoint transport, handed to the ``load`` callback), the
algorithm runs, and :meth:`ElasticCommunicator.commit` keeps the step only if it succeeded on
every worker present (a 1-element all-reduce, then ``Manager.should_commit``; a worker that dies
inside that all-reduce can let it finish on some survivors only, and the others, one step
behind, are healed at the next quorum). A peer that dies or hangs makes a wait fail or time out
(:class:`WorkerLost`): the step is dropped and retried in the next quorum, which the lighthouse
forms without the lost worker once its heartbeat times out.

Accounting: ``bytes_sent`` counts what this worker sends (present out-neighbours; collectives
among the m present workers); ``simulated_comm_time_s`` keeps the nominal n-worker formulas.

Limits (``docs/guide/elastic.md``): ``mean_start`` does not overlap; a dropped step costs its
gradient; a wait that fails while the membership stays the same cannot be cured (torchft
rebuilds its process group only when the membership changes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor

from peergrad.comm.base import (
    AllReduceAccounting,
    Decode,
    MixFromStart,
    NetworkModel,
    PeerFailure,
    Workspace,
    memory_key,
    message_nbytes,
    post_key,
)
from peergrad.comm.pending import PendingMix
from peergrad.topology import MixingMatrix, Topology
from peergrad.topology.failures import graph_edges, surviving_weights

__all__ = [
    "DEFAULT_LIGHTHOUSE_PORT",
    "ElasticCommunicator",
    "WorkerLost",
    "elastic_worker_id",
    "preload",
    "require_torchft",
    "start_lighthouse",
    "tensor_sha1",
]

log = logging.getLogger("peergrad.elastic")

#: Port of the lighthouse peergrad starts on worker 0 when ``TORCHFT_LIGHTHOUSE`` is not set.
DEFAULT_LIGHTHOUSE_PORT = 29510
INSTALL_HINT = "pip install 'peergrad[ft]' (torchft >= 0.2)"
#: Consecutive failed steps after which a worker stops (torchft's ``max_retries``): a failure
#: that a new quorum does not cure, e.g. a broken network with every worker still alive.
MAX_FAILED_STEPS = 20


class WorkerLost(PeerFailure):
    """A wait of an elastic step failed or timed out: some worker of the quorum died, hung or
    left. The step is dropped and retried in the next quorum (:mod:`peergrad.train.elastic`)."""


def tensor_sha1(x: Tensor) -> str:
    """SHA-1 of a tensor's bytes (the model a worker served or received when rejoining)."""
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def require_torchft() -> Any:
    """The ``torchft`` module; ``ValueError`` naming the extra to install when it is missing."""
    os.environ.setdefault("RUST_LOG", "warn")  # torchft's coordinator logs every quorum at info
    try:
        import torchft
    except ImportError as exc:  # pragma: no cover - the CI environment has it
        raise ValueError(f"--elastic needs torchft: {INSTALL_HINT} ({exc})") from exc
    return torchft


def elastic_worker_id(n: int, environ: dict[str, str] | None = None) -> int:
    """This process's worker id in ``[0, n)``: ``REPLICA_GROUP_ID`` (torchft's variable), else
    ``RANK`` (one torchrun for all workers). ``ValueError`` when neither is set or it is out of
    range."""
    env = os.environ if environ is None else environ
    raw = env.get("REPLICA_GROUP_ID", env.get("RANK"))
    if raw is None:
        raise ValueError(
            "--elastic: set REPLICA_GROUP_ID (this worker's id in [0, --workers)) in each "
            "worker's environment, or launch under torchrun (RANK)"
        )
    try:
        worker = int(raw)
    except ValueError:
        raise ValueError(
            f"REPLICA_GROUP_ID must be an integer in [0, {n - 1}], got {raw!r}"
        ) from None
    if not 0 <= worker < n:
        raise ValueError(f"REPLICA_GROUP_ID must be in [0, {n - 1}] (--workers {n}), got {worker}")
    return worker


def preload() -> None:
    """Import now what a worker's first step would import (torchft, its checkpoint transport,
    ``torch._dynamo`` that ``torch.func`` pulls in): a standby process that will replace a dead
    worker calls it while it waits, so that its rejoin is not seconds of imports."""
    require_torchft()
    import torch._dynamo  # noqa: F401
    import torchft.checkpointing.pg_transport  # noqa: F401


def start_lighthouse(
    port: int = DEFAULT_LIGHTHOUSE_PORT,
    *,
    min_replicas: int = 1,
    heartbeat_timeout_ms: int = 1000,
    join_timeout_ms: int = 5000,
    quorum_tick_ms: int = 10,
) -> Any:
    """Start torchft's lighthouse in this process (``torchft.coordination.LighthouseServer``)
    on ``port`` (0: any free port); read its address with ``.address()``, stop it with
    ``.shutdown()``. The same as the ``torchft_lighthouse`` command with these options."""
    require_torchft()
    from torchft.coordination import LighthouseServer

    return LighthouseServer(
        bind=f"[::]:{port}",
        min_replicas=min_replicas,
        join_timeout_ms=join_timeout_ms,
        quorum_tick_ms=quorum_tick_ms,
        heartbeat_timeout_ms=heartbeat_timeout_ms,
    )


def _quorum_group_class() -> type:
    """torchft's reconfigurable ``ProcessGroupGloo`` that also remembers who is in the quorum
    (the worker ids of its ranks, which torchft passes to ``configure`` as ``global_ranks``)."""
    from torchft.process_group import ProcessGroupGloo

    class QuorumGloo(ProcessGroupGloo):  # type: ignore[misc]
        members: list[int] = []

        def configure(  # noqa: PLR0913 - torchft's signature
            self,
            store_addr: str,
            replica_id: str,
            rank: int,
            world_size: int,
            quorum_id: int | None = None,
            group_rank: int | None = None,
            group_world_size: int | None = None,
            global_ranks: list[int] | None = None,
        ) -> None:
            super().configure(
                store_addr,
                replica_id,
                rank,
                world_size,
                quorum_id,
                group_rank,
                group_world_size,
                global_ranks,
            )
            self.members = list(global_ranks or [])

    return QuorumGloo


class ElasticCommunicator(AllReduceAccounting, MixFromStart):
    """Communicator of the elastic engine: worker ``worker`` of ``topology.n`` on torchft.

    Args:
        topology: the gossip schedule W(k) over all n workers (undirected when gossiping:
            a directed W cannot stay doubly stochastic when a worker is missing).
        worker: this worker's id in ``[0, n)`` (torchft replica id ``peergrad_<worker>``).
        lighthouse: the lighthouse address (``http://host:port``).
        network: latency/bandwidth model for ``simulated_comm_time_s``.
        timeout_s: seconds a collective or a gossip wait may take before the step is dropped
            (a hung peer), > 0.
        quorum_timeout_s: seconds to wait for a quorum (> 0).
        min_workers: the fewest workers a step may commit with (torchft's
            ``min_replica_size``), in ``[1, n]``.
        host: the name or address the other workers reach this one at (its torchft manager
            and the store of the quorum's process group). Default: ``socket.gethostname()``,
            as torchft's; it must resolve on every machine of the run.

    The model and algorithm state a rejoining worker receives come from the callbacks set with
    :meth:`set_state_fns` (torchft's ``state_dict`` / ``load_state_dict``).

    Raises ``ValueError`` for arguments out of range, and when torchft is not installed.
    """

    mix_start_takes_workspace = True
    system = None  # no system profile is imposed on the elastic engine

    def __init__(
        self,
        topology: Topology,
        *,
        worker: int,
        lighthouse: str,
        network: NetworkModel | None = None,
        timeout_s: float = 10.0,
        quorum_timeout_s: float = 60.0,
        min_workers: int = 1,
        host: str | None = None,
    ) -> None:
        n = topology.n
        if not 0 <= worker < n:
            raise ValueError(f"worker must be in [0, {n - 1}], got {worker}")
        if not timeout_s > 0 or not quorum_timeout_s > 0:
            raise ValueError(
                f"timeout_s and quorum_timeout_s must be > 0, got {timeout_s}, {quorum_timeout_s}"
            )
        if not 1 <= min_workers <= n:
            raise ValueError(f"min_workers must be in [1, {n}], got {min_workers}")
        require_torchft()
        for name in ("torchft", "torchft.manager"):  # its per-quorum notes (NCCL flight recorder)
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.ERROR)
        from torch.distributed import TCPStore
        from torchft import Manager
        from torchft.checkpointing.pg_transport import PGTransport

        self.topology = topology
        self.n_workers = n
        self.worker = self.rank = worker  # ``rank``: the worker id (PendingMix reads it)
        self.network = network if network is not None else NetworkModel()
        self.timeout_s = float(timeout_s)
        self.bytes_sent = torch.zeros(1, dtype=torch.float64)
        self.simulated_comm_time_s = 0.0
        self.rounds = 0
        self.workspace = Workspace()
        self._worker_ids = torch.tensor([worker])
        self._posted: dict[tuple[object, ...], Tensor] = {}
        self._edges: dict[int, tuple[Tensor, Tensor]] = {}
        self._serve: Callable[[], Any] | None = None
        self._load: Callable[[Any], None] | None = None
        self._members: list[int] = []  # the worker ids of the current quorum, ascending
        self.events: list[dict[str, Any]] = []  # every leave / join seen, in order
        self.current_step = 0
        timeout = timedelta(seconds=timeout_s)
        host = host or socket.gethostname()
        self._store = TCPStore(host, 0, is_master=True, wait_for_workers=False)
        self.pg = _quorum_group_class()(timeout=timeout)
        self.manager = Manager(
            pg=self.pg,
            load_state_dict=self._load_state,
            state_dict=self._serve_state,
            min_replica_size=min_workers,
            use_async_quorum=False,
            timeout=timeout,
            quorum_timeout=timedelta(seconds=quorum_timeout_s),
            connect_timeout=timedelta(seconds=quorum_timeout_s),
            rank=0,
            world_size=1,
            store_addr=host,
            store_port=self._store.port,
            lighthouse_addr=lighthouse,
            replica_id=f"peergrad_{worker:05d}",
            hostname=host,
            checkpoint_transport=PGTransport(self.pg, timeout=timeout, device=torch.device("cpu")),
            init_sync=False,
            max_retries=MAX_FAILED_STEPS,
        )
        self._joined = False
        self._present_mask: Tensor | None = None
        self._pg_rank: dict[int, int] = {}
        #: the lighthouse this process started (worker 0 without one given), else None
        self.lighthouse_server: Any = None

    # ------------------------------------------------------------------ state for rejoining
    def set_state_fns(self, serve: Callable[[], Any], load: Callable[[Any], None]) -> None:
        """``serve()`` returns what a rejoining worker needs (tensors, numbers, strings, lists,
        dicts); ``load(state)`` applies what this worker received when it rejoins."""
        self._serve, self._load = serve, load

    def _serve_state(self) -> Any:
        return self._serve() if self._serve is not None else {}

    def _load_state(self, state: Any) -> None:
        if self._load is not None:
            self._load(state)

    # ------------------------------------------------------------------ quorum
    @property
    def worker_ids(self) -> Tensor:
        return self._worker_ids

    @property
    def present(self) -> list[int]:
        """The worker ids of the current quorum, ascending."""
        return self._members

    @property
    def workers_present(self) -> int:
        return len(self._members)

    @property
    def is_lowest(self) -> bool:
        """Whether this worker is the lowest of the current quorum (the one that writes the run
        folder and prints the membership changes)."""
        return bool(self._members) and self.worker == self._members[0]

    def take_events(self) -> list[dict[str, Any]]:
        """The leaves and joins seen since the last call (a worker always is in its own
        quorums, so its own rejoin is never among them: it reports that itself)."""
        events, self.events = self.events, []
        return events

    def describe(self, event: dict[str, Any], what: str = "its state") -> str:
        """The one line that reports a leave or a join; for this worker's own rejoin (``event``
        with ``source`` and ``x_sha1`` of the model received) it names ``what`` came from which
        peer."""
        where = f"{self.workers_present} of {self.n_workers} workers present"
        w, step = event["worker"], event["step"]
        if "source" not in event:
            return f"elastic: worker {w} {event['event']} at step {step} ({where})"
        sha, source = event["x_sha1"][:12], event["source"]
        return (
            f"elastic: worker {w} rejoined at step {step}: {what} from worker {source} "
            f"(x sha1 {sha}; {where})"
        )

    def join(self, start_timeout_s: float = 60.0) -> int:
        """Join the run: the first quorum. Returns the number of steps committed so far (0 for a
        fresh run; > 0 when this worker rejoins a run under way, its state then received from a
        live peer through the ``load`` callback). A fresh run waits until all n workers are in
        the quorum (at most ``start_timeout_s``, then it starts with those present), so that
        every worker starts from step 0 together. The next :meth:`begin_step` uses this
        quorum."""
        deadline = time.monotonic() + start_timeout_s
        while True:
            self._quorum()
            if self.current_step > 0 or self.workers_present == self.n_workers:
                break
            if time.monotonic() > deadline:
                log.warning(
                    "elastic start: %d of %d workers after %.0f s; starting with them",
                    self.workers_present,
                    self.n_workers,
                    start_timeout_s,
                )
                break
        self._joined = True
        return self.current_step

    def _quorum(self) -> None:
        before = list(self._members)
        self.manager.start_quorum()
        self._quorum_fresh = True
        self.current_step = int(self.manager.current_step())
        members = sorted(self.pg.members)
        self._members = members
        self._present_mask = None
        if len(members) < self.n_workers:
            mask = torch.zeros(self.n_workers, dtype=torch.bool)
            mask[members] = True
            self._present_mask = mask
        self._pg_rank = {w: i for i, w in enumerate(self.pg.members)}
        if before:
            step = self.current_step + 1
            for w in sorted(set(before) - set(members)):
                self.events.append({"event": "left", "worker": w, "step": step})
            for w in sorted(set(members) - set(before)):
                self.events.append({"event": "joined", "worker": w, "step": step})

    def begin_step(self, step: int | None = None) -> None:
        """Join this step's quorum (``Manager.start_quorum``; a worker behind the quorum is
        healed here). A quorum is formed once per step: a call after :meth:`join`, or a second
        call before :meth:`commit` (``DistributedOptimizer.step`` calls it too, inside a step
        that :class:`~peergrad.optim.ElasticLoop` has begun), uses the quorum already formed."""
        if not self._joined:
            self.join()
        if self._quorum_fresh:
            return
        self._quorum()

    #: a quorum formed (by join or begin_step) and not yet ended by commit
    _quorum_fresh = False

    def commit(self, ok: bool = True) -> bool:
        """End the step: ``True`` when it succeeded on every present worker (then torchft counts
        it). One 1-element all-reduce (MIN of the workers' ``ok``); a failure of that all-reduce
        counts as ``False``. The caller drops the step when this is ``False``."""
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
        if ok and self.workers_present > 1:
            try:
                self._wait(self.pg.allreduce([flag], _reduce_op("MIN")), "commit agreement")
            except WorkerLost as exc:
                self.report_error(exc)
                flag.zero_()
        if not bool(flag[0]) and self.manager.errored() is None:
            self.report_error(RuntimeError("a worker of the quorum failed this step"))
        self._quorum_fresh = False  # the next step forms its own quorum
        committed = bool(self.manager.should_commit())
        if committed:
            self.current_step = int(self.manager.current_step())
        return committed

    def counters(self) -> dict[str, Any]:
        """A copy of the byte, time and round counters (a step's snapshot, a served state)."""
        return {
            "bytes_sent": self.bytes_sent.clone(),
            "simulated_comm_time_s": self.simulated_comm_time_s,
            "rounds": self.rounds,
        }

    def set_counters(self, saved: dict[str, Any]) -> None:
        """Put back counters from :meth:`counters` (a dropped step; a live peer's when
        rejoining)."""
        self.bytes_sent.copy_(saved["bytes_sent"])
        self.simulated_comm_time_s = float(saved["simulated_comm_time_s"])
        self.rounds = int(saved["rounds"])

    def report_error(self, exc: BaseException) -> None:
        """Tell torchft this worker's step failed (its :meth:`commit` then returns False) and
        abort the quorum's process group, so that the peers still waiting on this worker fail
        at once instead of after ``timeout_s`` and all survivors reach the next quorum
        together (torchft builds a new group when the membership changes)."""
        self.manager.report_error(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        try:
            self.pg.abort()
        except Exception:  # an already broken group: nothing left to stop
            pass

    def shutdown(self) -> None:
        """Stop this worker's torchft manager (its heartbeat ends: the others go on without it)."""
        self.manager.shutdown(wait=False)

    # ------------------------------------------------------------------ waits
    def _wait(self, work: Any, what: str, peers: list[int] | None = None) -> None:
        try:
            finished = work.wait(timedelta(seconds=self.timeout_s))
        except Exception as exc:
            raise self._lost(what, peers, exc) from exc
        if finished is False:
            raise self._lost(what, peers, TimeoutError(f"no answer within {self.timeout_s} s"))

    def _lost(self, what: str, peers: list[int] | None, exc: BaseException) -> WorkerLost:
        text = str(exc).strip().splitlines()
        reason = text[0][:200] if text else type(exc).__name__
        who = ", ".join(map(str, peers)) if peers else ", ".join(map(str, self.present))
        return WorkerLost(
            f"elastic worker {self.worker}, step {self.current_step + 1}: {what} failed "
            f"(workers {who}): {reason}"
        )

    def compute(self) -> None:
        """No-op (no system clock on this engine); kept for the Communicator protocol."""

    def _end_compute(self) -> None:  # PendingMix's hooks (no system profile here)
        pass

    def _flush_sends(self) -> None:
        pass

    def _sleep_until(self, deadline: float) -> None:
        pass

    # ------------------------------------------------------------------ accounting
    def _charge_collective(
        self,
        nbytes: float,
        sent: Callable[[float, int], float],
        duration: Callable[[NetworkModel, float, int], float],
    ) -> None:
        """A collective among the m present workers (bytes), at the nominal n-worker time."""
        self.bytes_sent += sent(nbytes, max(self.workers_present, 1))
        self.simulated_comm_time_s += duration(self.network, nbytes, self.n_workers)
        self.rounds += 1

    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        """Charge one gossip round over W: this worker's present out-neighbours."""
        out = [j for j, _ in W.out_neighbors(self.worker) if self._is_present(j)]
        self.bytes_sent += float(len(out)) * nbytes
        busiest = float(W.out_degrees.max()) * nbytes
        self.simulated_comm_time_s += self.network.gossip_time_s(busiest)
        self.rounds += 1

    def _is_present(self, j: int) -> bool:
        return self._present_mask is None or bool(self._present_mask[j])

    # ------------------------------------------------------------------ communication
    def _check(self, x: Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != 1:
            raise ValueError(
                f"{what}: x must have the worker axis first with size 1 on the elastic engine, "
                f"got shape {tuple(x.shape)}"
            )

    def _round(self, W: MixingMatrix) -> tuple[list[int], list[tuple[int, float]], float | None]:
        """This round's out-peers, ``(in-peer, weight)`` pairs and self weight (None: W's)."""
        i = self.worker
        if self._present_mask is None:
            return [j for j, _ in W.out_neighbors(i)], list(W.in_neighbors(i)), None
        key = id(W)
        if key not in self._edges:
            self._edges = {key: graph_edges(W)}
        src, dst = self._edges[key]
        s, d, w, diag = surviving_weights(W.n, src, dst, present=self._present_mask)
        mine = d == i
        ins = [(int(a), float(b)) for a, b in zip(s[mine].tolist(), w[mine].tolist(), strict=True)]
        outs = [int(b) for b in d[s == i].tolist()]
        return outs, ins, float(diag[i])

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
        """Post one gossip round over the surviving graph (see the module docstring)."""
        self._check(x, "mix")
        if W.n != self.n_workers:
            raise ValueError(f"mix: W is {W.n}x{W.n} but there are n = {self.n_workers} workers")
        out_peers, in_peers, self_weight = self._round(W)
        payload = x[0].contiguous()
        ws = workspace or self.workspace
        buffers = [(j, wt, ws(payload, f"recv{k}")) for k, (j, wt) in enumerate(in_peers)]
        sends, recvs = [], []
        try:
            for j in out_peers:
                sends.append((j, self.pg.send([payload], self._pg_rank[j], 0)))
            for j, _, buf in buffers:
                recvs.append((j, self.pg.recv([buf], self._pg_rank[j], 0)))
        except Exception as exc:
            raise self._lost("posting a gossip round", out_peers, exc) from exc
        if account:
            self.account_gossip(W, message_nbytes(x, message_bytes))
        return PendingMix(self, W, x, recvs, sends, buffers, decode, self_weight)

    def _allreduce_sum(self, x: Tensor, what: str) -> Tensor:
        out = self.workspace(x, what).copy_(x)
        if self.workers_present > 1:
            try:
                work = self.pg.allreduce([out], _reduce_op("SUM"))
            except Exception as exc:
                raise self._lost(what, None, exc) from exc
            self._wait(work, what)
        return out

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        """All-reduce average over the present workers (shape ``[1, ...]``); ``account=False``:
        not charged (metrics). ``record`` is accepted for symmetry (there is no wire log)."""
        self._check(x, "mean")
        out = self._allreduce_sum(x, "all-reduce" if account else "metrics all-reduce")
        out.div_(max(self.workers_present, 1))
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
        """``out.copy_(mean(x))`` at once (no overlap on this engine); ``out`` stays posted until
        :meth:`wait_for`, and posting into it again raises ``ValueError``."""
        key = post_key(x, out, self._posted)
        out.copy_(self.mean(x, message_bytes=message_bytes, account=account, record=record))
        self._posted[key] = out

    def wait_for(self, out: Tensor) -> Tensor:
        self._posted.pop(memory_key(out), None)
        return out

    def synchronize(self) -> None:
        self._posted.clear()

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[1, P] -> [1, m, P]``: the m present workers' payloads, in worker order."""
        self._check(payload, "all_gather")
        if payload.dim() != 2:
            raise ValueError(f"all_gather: payload must be [w, P], got {tuple(payload.shape)}")
        src = payload.contiguous()
        rows = [torch.empty_like(src) for _ in self.pg.members] if self.workers_present > 1 else []
        if rows:
            try:
                work = self.pg.allgather([rows], [src], _options("AllgatherOptions"))
            except Exception as exc:
                raise self._lost("all-gather", None, exc) from exc
            self._wait(work, "all-gather")
            order = sorted(range(len(rows)), key=lambda r: self.pg.members[r])
            rows = [rows[r] for r in order]
        else:
            rows = [src]
        if account:
            self.account_all_gather(message_nbytes(payload, message_bytes))
        return torch.cat(rows).unsqueeze(0)

    def all_to_all(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[1, n, P] -> [1, n, P]`` (slot j goes to worker j); only with every worker present
        (``ValueError`` otherwise, as on the simulated engine under churn)."""
        if self._present_mask is not None:
            raise ValueError(
                "all_to_all needs every worker, but some are absent in this step (elastic: "
                f"present {self.present}); use the allgather or allreduce exchange"
            )
        self._check(payload, "all_to_all")
        src = payload[0].contiguous()
        out = torch.empty_like(src)
        if self.n_workers > 1:
            try:
                work = self.pg.alltoall_base(out, src, [], [], _options("AllToAllOptions"))
            except Exception as exc:
                raise self._lost("all-to-all", None, exc) from exc
            self._wait(work, "all-to-all")
        else:
            out.copy_(src)
        if account:
            self.account_all_to_all(message_nbytes(payload[:, 0], message_bytes))
        return out.unsqueeze(0)

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """``x`` of worker ``src`` (of the lowest present worker when ``src`` is absent), in
        place on every present worker; not accounted."""
        if self.workers_present > 1:
            root = src if src in self._pg_rank else self.present[0]
            try:
                work = self.pg.broadcast_one(x, self._pg_rank[root])
            except Exception as exc:
                raise self._lost("broadcast", None, exc) from exc
            self._wait(work, "broadcast")
        return x

    def max_over_workers(self, value: int) -> int:
        """The largest ``value`` of the present workers (one 1-element all-reduce)."""
        flag = torch.tensor([int(value)], dtype=torch.int64)
        if self.workers_present > 1:
            self._wait(self.pg.allreduce([flag], _reduce_op("MAX")), "agreement all-reduce")
        return int(flag[0])

    def barrier(self) -> None:
        self.max_over_workers(0)


def _reduce_op(name: str) -> Any:
    from torch.distributed import ReduceOp

    return getattr(ReduceOp, name)


def _options(name: str) -> Any:
    import torch.distributed.distributed_c10d as c10d

    return getattr(c10d, name)()
