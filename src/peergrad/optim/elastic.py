"""Elastic training from your own loop: :class:`ElasticLoop` around a
:class:`~peergrad.optim.DistributedOptimizer` on the elastic engine (issue 29).

The elastic engine (:mod:`peergrad.comm.elastic`) runs every worker as one torchft replica
group (torchft, PyTorch organisation, https://github.com/pytorch/torchft, ``pip install
'peergrad[ft]'``): a worker may die and the others keep training; a restarted worker rejoins
and receives the model and the optimizer's state from a live peer. ``ElasticLoop`` gives a
user's own training loop that behaviour::

    from peergrad.comm.elastic import ElasticCommunicator, tensor_sha1
    from peergrad.optim import DistributedOptimizer, ElasticLoop

    comm = ElasticCommunicator(make_topology("ring", n), worker=worker_id,
                               lighthouse="http://host:29510", timeout_s=5)
    opt = DistributedOptimizer(model.parameters(), "dpsgd", comm, overlap=False, lr=0.1)
    loop = ElasticLoop(opt)                   # state= / load_state=: your extras (optional)
    loop.join()                               # 0: a fresh run; > 0: rejoined from a live peer
    while loop.step_count < total:            # committed steps, the same on every worker
        with loop.step() as step:             # the quorum, then a snapshot
            xb, yb = batch_for(worker_id, step.number)
            opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()
        if step.committed:
            scheduler.step()                  # whatever must follow a kept step only

Why a wrapper and not ``DistributedOptimizer(..., elastic=True)``: torchft's step is bracketed
by its ``Manager`` — ``start_quorum`` before the forward pass (the workers present are known
before any message leaves, and a worker that is behind is healed before it computes a
gradient) and ``should_commit`` after the update (the step is kept only if it succeeded on every
worker present, else it is rolled back *as a whole*: parameters, optimizer state, gradient,
counters). ``optimizer.step()`` alone sees neither the start of the step nor the user's work
before it, so it cannot bracket the forward and backward pass or undo them.

What one ``with loop.step() as step:`` does (the semantics of torchft's ``Manager``; [R?] from
torchft 0.2.0's source and docstrings, not from a paper):

1. ``comm.begin_step()``: the step's quorum (``Manager.start_quorum``, synchronous). A worker
   behind the quorum's step is healed here from a live peer (see *Rejoining*). When the workers
   present changed, each segment's algorithm adapts its state
   (:meth:`~peergrad.algorithms.Algorithm.membership_changed`), the lowest worker present writes
   one line per worker that left or joined to stderr, and :attr:`ElasticLoop.events` records it.
2. A snapshot: ``x`` (``opt.flat_params``, ``[1, D]``), ``g`` (``opt.flat_grad``), every
   segment's algorithm state (tensors cloned), ``opt.num_steps``, the communicator's counters
   (``bytes_sent``, ``simulated_comm_time_s``, ``rounds``), the module's buffers (when the
   optimizer was given ``module=``) and torch's CPU random state.
3. The body: the user's forward, backward and exactly one ``opt.step()`` (its ``begin_step``
   reuses the quorum of 1.). A peer that dies or hangs makes a wait fail with
   :class:`~peergrad.comm.PeerFailure` (:class:`~peergrad.comm.elastic.WorkerLost`): the block
   reports it (``comm.report_error``) and swallows it.
4. ``comm.commit(ok)``: the quorum agrees (one 1-element all-reduce) and torchft's
   ``should_commit`` decides. Kept: :attr:`ElasticLoop.step_count` advances, ``step.committed``
   is True. Dropped (any worker failed): the snapshot is put back on every worker present,
   ``step_count`` stays, ``step.committed`` is False, and the next ``loop.step()`` runs the same
   step number again in a new quorum (the lighthouse forms it without a dead worker once its
   heartbeat times out). Give the retry the same minibatch: pick it by ``step.number``.

Rejoining. :meth:`ElasticLoop.join` registers what a live peer serves
(``comm.set_state_fns``): ``{"worker", "step", "x_sha1", "optimizer": opt.state_dict(),
"buffers", "user": state()}``. A rejoining worker (or one that fell behind) loads it: the
optimizer's ``load_state_dict`` (the parameters ``flat_params``, the algorithm state and
options, ``num_steps``, the counters and ``param_groups``; the saved ``worker_ids`` are
replaced by this worker's), the module's buffers, then ``load_state(user)``. ``x`` is not sent a
second time: ``state_dict()["flat_params"]`` is x. On a fresh run (``join()`` returns 0) worker
0's parameters are broadcast over the first quorum and the algorithm's state is initialised
again from them: the optimizer's own construction broadcast ran before any quorum, where the
elastic communicator's ``broadcast`` is a no-op, so without this the workers would start from
their own initialisations.

Membership: :attr:`ElasticLoop.workers_present`, :attr:`ElasticLoop.present` (worker ids) and
:attr:`ElasticLoop.events`, in order, ``{"event": "left" | "joined", "worker", "step"}``
(``step``: the first step without / with it); a rejoining worker's own ``"joined"`` adds
``"source"`` (the live peer) and ``"x_sha1"`` (SHA-1 of x received), and the peer that served it
records ``{"event": "served", "worker", "step", "x_sha1"}`` (SHA-1 of x sent).

Raises (``ElasticLoop(...)``, one line, before any work): ``ValueError`` when the optimizer's
communicator is not an :class:`~peergrad.comm.elastic.ElasticCommunicator`; when overlap is on
(``overlap=None`` or ``True``: messages posted early for the next step would cross a change of
quorum; build the optimizer with ``overlap=False``); when the algorithm cannot survive a change
of the workers present (:func:`~peergrad.algorithms.check_elastic`); when only one of
``state`` / ``load_state`` is given. ``join``: ``ValueError`` from the peer's state that does
not fit this optimizer (another model or algorithm); :class:`~peergrad.comm.PeerFailure` when a
peer dies during the fresh-run broadcast. ``with loop.step()``: an exception other than
``PeerFailure`` drops the step on every worker present (so the peers do not wait for this one)
and is re-raised; ``RuntimeError`` when ``opt.step()`` ran more than once in the block, and
torchft's ``RuntimeError`` after ``MAX_FAILED_STEPS`` failed steps in a row.

Deviations and limits:

- Exactly one ``opt.step()`` per ``loop.step()``, and none outside it (``DistributedOptimizer
  .step`` calls ``comm.begin_step``, which would start a quorum torchft never commits).
- Learning-rate schedulers and anything else the user keeps are not rolled back: step them after
  the block when ``step.committed``, and put what a rejoining worker needs in ``state`` /
  ``load_state`` (a scheduler's ``state_dict``; the optimizer's ``param_groups``, hence ``lr``,
  already come with the optimizer's state).
- A dropped step costs its gradient; torch's CPU random state is restored, so a retried step
  draws the same dropout masks (CUDA generators are not restored).
- A worker healed in a quorum may find ``step.number`` past the loop's end (its peers finished
  meanwhile); check ``step.number`` against the total when that matters.
- The model's buffers follow the optimizer's ``buffers=`` mode (``"local"``: each worker keeps
  its own; a rejoining worker takes the serving peer's).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from peergrad.algorithms import check_elastic
from peergrad.comm.base import PeerFailure
from peergrad.comm.elastic import ElasticCommunicator, tensor_sha1
from peergrad.optim.optimizer import DistributedOptimizer
from peergrad.optim.state import clone_tree

__all__ = ["ElasticLoop", "ElasticStep"]


@dataclasses.dataclass
class ElasticStep:
    """One step of an :class:`ElasticLoop` (what ``with loop.step() as step`` gives).

    Attributes:
        number: the step being run, ``loop.step_count + 1`` after the quorum (a dropped step's
            number comes again).
        present: the worker ids of this step's quorum (ascending).
        committed: ``None`` inside the block; after it, True when the step was kept, False when
            it was dropped (restored on every worker present).
        error: the :class:`~peergrad.comm.PeerFailure` the block swallowed, else ``None``.
    """

    number: int
    present: list[int]
    committed: bool | None = None
    error: BaseException | None = None

    @property
    def workers_present(self) -> int:
        return len(self.present)


class ElasticLoop:
    """Elastic steps for a user's loop around ``opt`` (see the module docstring).

    Args:
        opt: a :class:`~peergrad.optim.DistributedOptimizer` whose ``comm`` is an
            :class:`~peergrad.comm.elastic.ElasticCommunicator`, built with ``overlap=False``.
        state: returns the user's extras a rejoining worker needs (tensors, numbers, strings,
            lists, dicts: what torchft's checkpoint transport carries), or ``None``.
        load_state: applies what ``state()`` returned on a live peer; given with ``state``.
        messages: print one line per worker that left or joined to stderr (default True).

    Raises ``ValueError`` (see the module docstring) before any work.
    """

    def __init__(
        self,
        opt: DistributedOptimizer,
        *,
        state: Callable[[], Any] | None = None,
        load_state: Callable[[Any], None] | None = None,
        messages: bool = True,
    ) -> None:
        comm = opt.comm
        if not isinstance(comm, ElasticCommunicator):
            raise ValueError(
                "opt: ElasticLoop needs a DistributedOptimizer on an ElasticCommunicator "
                f"(peergrad.comm.elastic), got a {type(comm).__name__}"
            )
        if opt._overlap or opt.overlapping:
            raise ValueError(
                "opt: ElasticLoop needs overlap=False (messages posted early for the next step "
                "would cross a change of quorum); build the DistributedOptimizer with "
                "overlap=False"
            )
        if (state is None) != (load_state is None):
            raise ValueError("state and load_state: give both (the user's extras) or neither")
        check_elastic(opt.algorithm, comm.topology)
        self.opt, self.comm = opt, comm
        self._state, self._load_state = state, load_state
        self.messages = messages
        #: every worker that left or joined, every state served or received, in order
        self.events: list[dict[str, Any]] = []
        self._joined = False
        self._healed: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def step_count(self) -> int:
        """Steps committed so far, the same on every worker present (torchft's step)."""
        return self.comm.current_step

    @property
    def workers_present(self) -> int:
        """Number of workers in the current quorum."""
        return self.comm.workers_present

    @property
    def present(self) -> list[int]:
        """Worker ids of the current quorum, ascending."""
        return list(self.comm.present)

    # ------------------------------------------------------------------ joining
    def join(self, start_timeout_s: float = 60.0) -> int:
        """Join the run (``comm.join``); returns the steps committed so far.

        0: a fresh run; every worker then starts from worker 0's parameters (broadcast over the
        quorum) with the algorithm's state initialised from them. > 0: this worker rejoined a
        run under way and holds a live peer's parameters, optimizer state and extras. A fresh
        run waits for all n workers, at most ``start_timeout_s`` (then it starts with those
        present). Idempotent: a second call returns :attr:`step_count`."""
        if self._joined:
            return self.step_count
        self.comm.set_state_fns(self._serve, self._load)
        step = self.comm.join(start_timeout_s)
        self._joined = True
        self.comm.events.clear()  # the quorums of the join itself: not a change of membership
        if step == 0:
            self._fresh_start()
        else:
            self._membership()  # this worker's rejoin (self._load ran in comm.join)
        return step

    def _fresh_start(self) -> None:
        """Worker 0's x on every worker present, and the algorithm's state made from it (what
        the optimizer's construction does, now over the quorum)."""
        opt = self.opt
        with torch.no_grad():
            self.comm.broadcast(opt.flat_params, src=0)
        for seg in opt._segments:
            seg.state = seg.algorithm.init(opt._seg_x(seg), seg.comm)

    def _serve(self) -> dict[str, Any]:
        """What a rejoining worker receives from this one (torchft's ``state_dict``)."""
        opt = self.opt
        digest = tensor_sha1(opt.flat_params)
        step = self.step_count
        self.events.append(
            {"event": "served", "worker": self.comm.worker, "step": step, "x_sha1": digest}
        )
        module = opt._module
        return {
            "worker": self.comm.worker,
            "step": step,
            "x_sha1": digest,
            "optimizer": opt.state_dict(),
            "buffers": {} if module is None else {k: b.clone() for k, b in module.named_buffers()},
            "user": self._state() if self._state is not None else None,
        }

    def _load(self, saved: dict[str, Any]) -> None:
        """Apply a live peer's state (torchft's ``load_state_dict``)."""
        opt = self.opt
        sd = dict(saved["optimizer"])
        sd["worker_ids"] = [int(i) for i in self.comm.worker_ids.tolist()]
        opt.load_state_dict(sd)
        if opt._module is not None:
            with torch.no_grad():
                for name, buf in opt._module.named_buffers():
                    buf.copy_(saved["buffers"][name])
        if self._load_state is not None:
            self._load_state(saved["user"])
        self._healed = {
            "source": int(saved["worker"]),
            "step": int(saved["step"]) + 1,
            "x_sha1": tensor_sha1(opt.flat_params),
        }

    # ------------------------------------------------------------------ membership
    def _membership(self) -> None:
        """Record (and print) the changes of the workers present since the last quorum; when
        there were any (or this worker was healed), let the algorithm adapt its state."""
        comm, opt = self.comm, self.opt
        seen = comm.take_events()
        changed = bool(seen)
        if self._healed is not None:
            joined = {"event": "joined", "worker": comm.worker, **self._healed}
            self._healed, changed = None, True
            self.events.append(joined)
            self._say(comm.describe(joined, "parameters and optimizer state"))
        for ev in seen:
            self.events.append(dict(ev))
            if comm.is_lowest:
                self._say(comm.describe(ev))
        if changed:
            for seg in opt._segments:
                seg.state = seg.algorithm.membership_changed(opt._seg_x(seg), seg.state, seg.comm)

    def _say(self, line: str) -> None:
        if self.messages:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ one step
    @contextmanager
    def step(self) -> Iterator[ElasticStep]:
        """One elastic step around the user's forward, backward and ``opt.step()`` (see the
        module docstring); joins first when :meth:`join` was not called."""
        if not self._joined:
            self.join()
        comm = self.comm
        comm.begin_step()  # the quorum; a worker behind is healed here (self._load)
        self._membership()
        handle = ElasticStep(number=self.step_count + 1, present=list(comm.present))
        saved = self._snapshot()
        try:
            yield handle
        except PeerFailure as exc:  # a peer died or hung: drop the step everywhere
            handle.error = exc
            comm.report_error(exc)
        except Exception as exc:  # the user's error: drop the step everywhere, re-raise
            comm.report_error(exc)
            comm.commit(False)
            self._restore(saved)
            handle.committed = False
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: put x back and go
            self._restore(saved)
            handle.committed = False
            raise
        handle.committed = comm.commit(handle.error is None)
        if not handle.committed:
            self._restore(saved)
        if self.opt.num_steps > saved["num_steps"] + 1:
            raise RuntimeError(
                f"opt.step() ran {self.opt.num_steps - saved['num_steps']} times in one "
                "loop.step(); call it exactly once per step"
            )

    def _snapshot(self) -> dict[str, Any]:
        opt, comm = self.opt, self.comm
        module = opt._module
        return {
            "x": opt.flat_params.detach().clone(),
            "g": opt.flat_grad.detach().clone(),
            "states": [clone_tree(seg.state) for seg in opt._segments],
            "num_steps": opt.num_steps,
            "comm": comm.counters(),
            "buffers": None if module is None else [b.clone() for b in module.buffers()],
            "rng": torch.get_rng_state(),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        """Put the snapshot back: the dropped step leaves no trace."""
        opt, comm = self.opt, self.comm
        with torch.no_grad():
            opt.flat_params.copy_(saved["x"])
            opt.flat_grad.copy_(saved["g"])
            for seg, state in zip(opt._segments, saved["states"], strict=True):
                seg.state = state
                seg.pending = None
                seg.comm.ops.clear()
            if saved["buffers"] is not None and opt._module is not None:
                for buf, old in zip(opt._module.buffers(), saved["buffers"], strict=True):
                    buf.copy_(old)
        opt._steps = saved["num_steps"]
        comm.set_counters(saved["comm"])
        comm.synchronize()
        torch.set_rng_state(saved["rng"])
