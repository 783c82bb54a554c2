"""The overlap machinery of :class:`~peergrad.optim.DistributedOptimizer`: buckets, gradient
hooks, the communication thread, the round and its hazard checks.

The seam. The optimizer proper (:mod:`peergrad.optim.optimizer`) owns the flat buffers ``x`` and
``g``, the parameters bound to them, the param groups and one algorithm copy per segment; it
steps the segments in ``step``. Everything here decides *when* a segment is stepped and *what
the messages sent early were computed from*: how x is cut (per group, or into DDP buckets), the
x-only messages posted at the end of ``step``, the post-accumulate-grad hooks that hand a ready
bucket to the communication thread, the round that steps the buckets during ``backward()``, and
the check-and-redo at ``step`` (``_finish_round``, ``_restore_round``, ``_check_posted``,
``_stamp``, ``_agree``). It is a mixin, :class:`_Overlap`, rather than a helper object because
both sides read the same per-segment records and buffers on every step (the round steps
segments with the optimizer's ``_run_segment`` and re-attaches gradients with its ``_sync``;
the optimizer's ``synchronize``/``load_state_dict``/``set_options`` drain and restart the
round): a helper would need a back-reference to nearly all of the optimizer's state. The mixin
keeps no state of its own outside the attributes it documents, and the optimizer reaches it
only through the methods named in :class:`_Overlap`'s docstring.

Overlap (``overlap``). Messages that depend only on x (the combine-then-adapt gossip of D-PSGD,
gradient tracking, DeTAG, the adaptive methods: ``Algorithm.pre_gradient``) are posted at the end
of ``step``, so they travel during the user's next forward and backward pass and ``step`` waits
only for what is still in flight. Messages that depend on the gradient can overlap the backward
pass too (*gradient hooks*): for coordinate-wise algorithms the buffer is cut into buckets
(``bucket_cap_mb``, default 25 MB as DDP, the first one ``first_bucket_cap_mb`` = 1 MB, cut in
reverse parameter order with DDP's rule and never across param groups); from the second step on,
a bucket is stepped on a background thread as soon as the backward pass has accumulated its last
gradient (``register_post_accumulate_grad_hook``): its gradient-dependent messages (the
all-reduce of g, the ATC gossip, the tracker's gossip) leave while the backward pass computes the
earlier layers' gradients. The first step traces the order in which buckets become ready (worker
0's order is used by all, so the messages match). The iterates are exactly those of the
algorithm on the whole buffer: the test suite checks this for every registered algorithm on 4
gloo processes (float64 bit-exact except for the all-reduce's summation order; float32 within
1e-6 relative).

- ``overlap=None`` (default): x-only messages early whenever the communicator has more than one
  worker; gradient hooks only when the parameters are on an accelerator (CUDA, with NCCL's own
  streams). On the CPU the communication thread and gloo's loopback transfers compete with the
  backward pass for the same cores, and the hooks measured slower than stepping the whole
  buffer in ``step`` (``benchmarks/distributed.py``: 4 processes on 2 cores); without hooks
  there is one segment per param group, i.e. one message per neighbour per group.
- ``overlap=True``: both, on any device. ``overlap=False``: neither (``step`` does everything).

What the user does around ``backward()`` and ``step()`` never changes the iterates (issue 24;
``tests/test_optim_overlap_hazards.py``, 4 and 2 gloo processes, float64, ``torch.equal``):

- *Own process group.* The :class:`~peergrad.comm.distributed.DistributedCommunicator` sends
  everything on a process group of its own (``dist.new_group``), so a user collective on the
  default group between ``backward()`` and ``step()`` (``dist.all_reduce(loss)`` for logging)
  cannot interleave with the bucket steps that the communication thread is running.
- *Checked, then redone.* At ``step`` every worker checks what the messages sent early were
  computed from, and the workers agree (the largest of their verdicts, one 1-element all-reduce
  per step on a CPU control group, not counted in ``bytes_sent``): with gradient hooks, the
  param groups' options (``lr``, ``momentum``, ``weight_decay`` set between ``backward()`` and
  ``step()``), the gradients (replaced, ``p.grad = p.grad * mask``, or changed in place, as
  ``clip_grad_norm_`` does; seen by identity and version counters) and the parameters (changed
  after the last ``step``); without hooks, the parameters. When anything changed on any worker,
  every worker undoes the bucket steps of the backward pass (each bucket's x and state are copied
  on the communication thread before it is stepped), drops the messages sent early and does the
  plain step with what the user has now: the same iterates and byte counts as ``overlap=False``,
  at the cost of a step without overlap.
- *Parameters after* ``step()``. The gossip of x posted at the end of ``step`` is sent from x's
  memory; an edit of the parameters after ``step`` (``p.clamp_()`` under ``no_grad``,
  ``model.load_state_dict``, copying EMA weights in and out, replacing ``p.data``) is seen
  through the parameters' and x's version counters, and every worker then sends x again: a
  message that may have been read while being edited is never used. Edits through ``p.data``
  (``p.data.clamp_()``) bypass autograd's version counters and are not seen: make them under
  ``torch.no_grad()`` on ``p`` itself, or call :meth:`synchronize` first.

Gradient hooks are not used (the bucket steps run inside ``step``; x-only messages still
overlap) when the algorithm is not coordinate-wise, when ``clip_grad_norm`` is set (the global
norm needs every gradient first), for line-search algorithms, and once a ``GradScaler`` is seen
(an overflow anywhere must skip the whole step).

Consequences of overlap (gradient hooks) that a plain ``torch.optim`` user must know:

- Gradient accumulation over several ``backward()`` calls must run the earlier ones inside
  ``with opt.no_sync():`` (as with DDP), else the bucket is stepped at the first backward and
  the later backward runs at moved parameters: a gradient that arrives for a bucket already
  stepped makes ``step`` undo the round and raise ``RuntimeError`` on every worker.
- Changes between ``backward()`` and ``step()`` (learning rate, gradients) are honoured but cost
  a redo of the step without overlap: make them before the forward where you can (as schedulers
  do after ``step``), or pass ``clip_grad_norm=`` instead of calling ``clip_grad_norm_``.
  Changing the *parameters* in place between ``backward()`` and ``step()`` (after the buckets
  were stepped) cannot be reproduced: ``step`` undoes the round and raises ``RuntimeError`` on
  every worker.
- Before ``destroy_process_group`` call :meth:`synchronize` so no gossip is left in flight.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm
from peergrad.comm.base import Communicator
from peergrad.comm.segments import CommThread, PreAveraged, SegmentComm, cut
from peergrad.optim.groups import _dense, _Segment
from peergrad.optim.state import clone_tree


class _Overlap:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: the overlap machinery.

    The optimizer calls :meth:`_choose_overlap` and :meth:`_build_segments` at construction
    (before binding the parameters), :meth:`_init_overlap` once the segments have their state;
    in ``step`` :meth:`_finish_round` (round mode) or :meth:`_check_posted` (messages posted
    early, no round), then :meth:`_after_step`; :meth:`_cancel_round`/:meth:`_start_round`
    around a drain, :meth:`_post_pre_gradient` after a change of x or options, and
    :meth:`_stop_overlap` in ``close``.

    It uses the optimizer's ``_x``, ``_g`` (``[1, D]``), ``_params``, ``_names``, ``_x_views``,
    ``_g_views``, ``_param_index``, ``_comm``, ``_base``, ``_coordinatewise``, ``_clip_mode``,
    ``_cached_values`` and its methods ``_sync``, ``_seg_x``, ``_run_segment``,
    ``_refresh_algorithms`` and ``_group_values``. It owns ``_segments``, ``_order``,
    ``_segment_of_param``, ``_group_of``, ``_overlap``, ``_use_hooks``, ``_no_sync``,
    ``_thread``, ``_round``, ``_round_mode``, ``_traced``, ``_amp_seen``, ``_late``,
    ``_grad_version``, ``_abort``, ``_x_stamp``, ``_p_stamps``, ``_round_info`` and ``_hooks``.
    """

    # the optimizer's (see the class docstring)
    _x: Tensor
    _g: Tensor
    _params: tuple[Tensor, ...]
    _names: tuple[str, ...]
    _x_views: tuple[Tensor, ...]
    _g_views: tuple[Tensor, ...]
    _param_index: dict[int, int]
    _comm: Communicator
    _base: Algorithm
    _coordinatewise: bool
    _clip_mode: str | None
    _cached_values: Any

    if TYPE_CHECKING:  # the optimizer's methods (see the class docstring); no runtime effect

        def _sync(self, first: int = 0, last: int | None = None) -> None: ...
        def _seg_x(self, seg: _Segment) -> Tensor: ...
        def _run_segment(self, seg: _Segment, trial: Any = None) -> None: ...
        def _refresh_algorithms(self) -> None: ...
        def _group_values(self) -> list[dict[str, Any]]: ...

    # ------------------------------------------------------------------ construction
    def _choose_overlap(
        self, comm: Communicator, overlap: bool | None, device: torch.device
    ) -> None:
        # x-only messages leave at the end of step (overlap on, or auto with an asynchronous
        # communicator); buckets stepped from the gradient hooks need overlap=True, or auto on
        # an accelerator (on the CPU the communication thread competes with the backward pass
        # for the same cores: see docs/benchmarks.md)
        asynchronous = comm.n_workers > 1 and hasattr(comm, "mix_start_takes_workspace")
        accelerator = device.type != "cpu"
        self._overlap = asynchronous if overlap is None else bool(overlap)
        hooks = asynchronous and accelerator if overlap is None else bool(overlap)
        self._use_hooks = hooks and self._coordinatewise

    def _build_segments(
        self,
        numels: list[int],
        group_of: list[int],
        group_algorithms: list[Algorithm],
        *,
        itemsize: int,
        first_cap: float,
        bucket_cap: float,
    ) -> None:
        """The segments of x: one for an algorithm that is not coordinate-wise; else one per
        param group, or DDP buckets (never across groups) with the gradient hooks."""
        comm = self._comm
        if not self._coordinatewise:
            param_ranges = [(0, len(numels))]
        elif self._use_hooks:
            param_ranges = cut(
                numels,
                group_of,
                itemsize=itemsize,
                first_cap_bytes=first_cap * 2**20,
                cap_bytes=bucket_cap * 2**20,
            )
        else:
            param_ranges = cut(numels, group_of, itemsize=1, first_cap_bytes=None, cap_bytes=None)[
                ::-1
            ]
        starts = [0]
        for n in numels:
            starts.append(starts[-1] + n)
        self._group_of = tuple(group_of)
        self._segments: list[_Segment] = []
        for k, (a, b) in enumerate(param_ranges):
            grp = group_of[a]
            seg_comm = PreAveraged(comm) if self._clip_mode == "averaged" else SegmentComm(comm)
            self._segments.append(
                _Segment(k, a, b, starts[a], starts[b], grp, group_algorithms[grp], None, seg_comm)
            )
        self._order = list(self._segments)  # processing order (rank 0's traced order later)
        self._segment_of_param = [0] * len(numels)
        for seg in self._segments:
            for i in range(seg.first, seg.last):
                self._segment_of_param[i] = seg.index

    def _init_overlap(self) -> None:
        """The overlap machinery's state; the gradient hooks when they are used."""
        self._no_sync = False
        self._thread: CommThread | None = None
        self._round: Any = None  # Future of the bucket steps of the current backward pass
        self._round_mode = False  # buckets stepped from the gradient hooks
        self._traced: list[int] | None = [] if self._use_hooks else None
        self._amp_seen = False
        self._late: list[str] = []
        self._grad_version: int | None = None
        # what the messages sent early were computed from (see _stamp, _finish_round)
        self._x_stamp = -1
        self._p_stamps: list[int] = []
        self._round_info: tuple[bool, list[int]] | None = None
        self._hooks = []
        if self._use_hooks:
            for p in self._params:
                hook = p.register_post_accumulate_grad_hook  # untyped in torch
                self._hooks.append(hook(self._on_grad_ready))  # type: ignore[no-untyped-call]
            self._reset_countdown()

    def _post_pre_gradient(self) -> None:
        """Post the x-only messages of the next step (overlap on): they travel during the
        user's forward and backward pass."""
        if not self._overlap:
            return
        for seg in self._order:
            if seg.pending is None:
                seg.pending = seg.algorithm.pre_gradient(self._seg_x(seg), seg.state, seg.comm)
        self._stamp()

    def _after_step(self) -> None:
        if self._traced is not None:  # the first step traced the order buckets became ready
            self._adopt_traced_order()
        self._post_pre_gradient()
        self._start_round()

    def _adopt_traced_order(self) -> None:
        traced, self._traced = self._traced or [], None
        order = list(dict.fromkeys(traced)) + [
            s.index for s in self._order if s.index not in traced
        ]
        shared = torch.tensor([order], dtype=torch.int64, device=self._x.device)
        # every worker uses worker 0's order (broadcast: on both communicators, not in the
        # Communicator protocol)
        self._comm.broadcast(shared, src=0)
        self._order = [self._segments[int(i)] for i in shared[0].tolist()]
        allowed = (
            self._coordinatewise
            and self._clip_mode is None
            and not self._amp_seen
            and not getattr(self._base, "needs_closure", False)
        )
        if allowed:
            self._round_mode = True
            self._thread = CommThread()

    # ------------------------------------------------------------------ overlap rounds
    def _reset_countdown(self) -> None:
        for seg in self._segments:
            seg.remaining = seg.last - seg.first
            seg.started = False
            seg.saved = None
            seg.ready.clear()
        self._round_info = None

    def _start_round(self) -> None:
        if not self._round_mode or self._round is not None:
            return
        self._reset_countdown()
        self._late = []
        self._grad_version = None
        self._abort = False
        assert self._thread is not None
        self._round = self._thread.submit(self._run_round)

    def _run_round(self) -> None:
        """The communication thread: step the buckets in the agreed order as they get ready."""
        refreshed = False
        with torch.no_grad():
            for seg in self._order:
                seg.ready.wait()
                if self._abort:
                    return
                if not refreshed:  # after the user's scheduler.step() of the previous iteration
                    self._refresh_algorithms()
                    # during backward(): the user's code is not running, so this sees every
                    # edit made since the last step and none made after backward() returns
                    versions = self._param_versions()
                    posted = any(s.pending is not None for s in self._segments)
                    edited = posted and (
                        self._x._version != self._x_stamp or versions != self._p_stamps
                    )
                    self._round_info = (edited, versions)
                    refreshed = True
                seg.started = True
                seg.saved = (self._seg_x(seg).clone(), clone_tree(seg.state))
                self._run_segment(seg)

    def _finish_round(self) -> None:
        """In ``step``: step the buckets whose gradients never arrived, wait for the round, then
        check on every worker (one 1-element agreement) whether anything the early bucket steps
        used changed before ``step``; if so, undo them and step the whole buffer again."""
        # before _sync, which re-attaches replaced gradients: what the early steps did not see
        dirty = self._grad_version is not None and self._g._version != self._grad_version
        dirty = dirty or self._params_replaced() or self._grads_replaced()
        for seg in self._order:
            if not seg.ready.is_set():
                self._sync(seg.first, seg.last)
                seg.ready.set()
        round_, self._round = self._round, None
        round_.result()
        verdict = 0
        if self._late:  # a later backward() ran at the x the round had already moved
            verdict = 3
        elif self._round_info is not None:
            edited_before, versions = self._round_info
            if self._param_versions() != versions:
                verdict = 2  # edited in place after backward(): the pre-step x is gone
            elif edited_before:
                dirty = True
        if not verdict and (dirty or self._options_changed()):
            verdict = 1
        verdict = self._agree(verdict)
        if not verdict:
            return
        self._restore_round()
        if verdict == 3:
            self._start_round()
            raise RuntimeError(
                "DistributedOptimizer: a gradient arrived (on this or another worker) for a "
                "bucket already stepped in this iteration (several backward() calls per step?), "
                "so the later backward() ran at moved parameters; the step was undone (x is as "
                "before it). Run all but the last backward() inside `with opt.no_sync():`"
            )
        if verdict == 2:
            self._start_round()
            raise RuntimeError(
                "DistributedOptimizer: parameters were changed in place between backward() and "
                "step() (on this or another worker) after overlap had already stepped their "
                "buckets, so the step cannot be reproduced; the step was undone (x is as before "
                "backward()). Change parameters after step() (or before the forward), or build "
                "the optimizer with overlap=False"
            )
        # redo: the plain step, from the state before the round, with what the user has now
        self._sync()
        self._refresh_algorithms()
        with torch.no_grad():
            for seg in self._order:
                self._run_segment(seg)

    def _restore_round(self) -> None:
        """Undo the round's bucket steps (x and state from the snapshots) and forget the
        messages it used; the accounting of this step starts afresh."""
        with torch.no_grad():
            for seg in self._segments:
                if seg.saved is not None:
                    x_saved, state = seg.saved
                    self._seg_x(seg).copy_(x_saved)
                    seg.state = state
                    seg.saved = None
                seg.pending = None
                seg.comm.ops.clear()

    def _check_posted(self) -> None:
        """Without the hooks: the messages posted at the end of the last ``step`` were sent from
        x as it was then. When any worker changed its parameters since (in place, as
        ``p.clamp_()``, ``load_state_dict`` or swapping EMA weights in and out do, or by
        replacing ``p.data``), every worker drops them and the step sends them again."""
        edited = (
            self._x._version != self._x_stamp
            or self._param_versions() != self._p_stamps
            or self._params_replaced()
        )
        if not self._agree(int(edited)):
            return
        for seg in self._order:
            if seg.pending is not None:
                pending, seg.pending = seg.pending, None
                pending.wait(seg.comm.workspace(self._seg_x(seg), "drain"))
            seg.comm.ops.clear()

    def _stamp(self) -> None:
        """Record the versions of x and of every parameter (the messages just posted used them)."""
        self._x_stamp = self._x._version
        self._p_stamps = self._param_versions()

    def _param_versions(self) -> list[int]:
        return [p._version for p in self._params]

    def _params_replaced(self) -> bool:
        return any(
            p.data_ptr() != xv.data_ptr() for p, xv in zip(self._params, self._x_views, strict=True)
        )

    def _grads_replaced(self) -> bool:
        """A gradient of a bucket already handed to the round was replaced (``p.grad = t``)."""
        for seg in self._segments:
            if seg.ready.is_set():
                for i in range(seg.first, seg.last):
                    if self._params[i].grad is not self._g_views[i]:
                        return True
        return False

    def _options_changed(self) -> bool:
        current = [tuple(v.items()) for v in self._group_values()]
        return current != getattr(self, "_cached_values", None)

    def _agree(self, value: int) -> int:
        """The largest ``value`` over the workers (0 clean, 1 redo, 2 and 3 errors)."""
        if self._comm.n_workers == 1:
            return value
        agree = getattr(self._comm, "max_over_workers", None)
        if agree is not None:
            return int(agree(value))
        flags = torch.zeros(1, 3, dtype=torch.float64)
        if value:
            flags[0, value - 1] = 1.0
        mean = self._comm.mean(flags, account=False)[0]
        return max((k + 1 for k in range(3) if float(mean[k]) > 0), default=0)

    def _cancel_round(self) -> None:
        if self._round is None:
            return
        self._abort = True
        for seg in self._order:
            seg.ready.set()
        round_, self._round = self._round, None
        try:
            round_.result()
        finally:
            self._abort = False

    def _on_grad_ready(self, p: Tensor) -> None:
        """Post-accumulate-grad hook (autograd's thread): count the bucket's gradients down."""
        i = self._param_index[id(p)]
        gv = self._g_views[i]
        if p.grad is not gv:
            with torch.no_grad():
                gv.copy_(_dense(p.grad)) if p.grad is not None else gv.zero_()
            p.grad = gv
        if self._no_sync:
            return
        seg = self._segments[self._segment_of_param[i]]
        if self._round_mode:
            self._grad_version = self._g._version
            if seg.started or seg.ready.is_set():
                self._late.append(self._names[i])
                return
        seg.remaining -= 1
        if seg.remaining == 0:
            if self._round_mode:
                seg.ready.set()
            elif self._traced is not None:
                self._traced.append(seg.index)

    def _stop_overlap(self) -> None:
        """Remove the gradient hooks and stop the communication thread (after a drain)."""
        self._cancel_round()
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._round_mode = False
        self._traced = None
        self._overlap = False
        self._use_hooks = False
        if self._thread is not None:
            self._thread.close()
            self._thread = None
