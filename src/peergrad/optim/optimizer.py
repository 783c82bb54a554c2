"""The optimizer proper: :class:`DistributedOptimizer` (param groups, the flat buffer binding,
the step contract).

The optimizer is assembled from mixins, one responsibility each (issue 25): the overlap
machinery (buckets, gradient hooks, the communication thread, the round and its hazard checks)
is :class:`peergrad.optim.overlap._Overlap`; param groups, the per-group algorithms and the flat
buffer's views are in :mod:`peergrad.optim.groups`; ``state_dict``/``load_state_dict`` in
:mod:`peergrad.optim.state`; the closure and the line search's RNG replay in
:mod:`peergrad.optim.line_search`; gradient clipping and mixed precision (``GradScaler``) in
:mod:`peergrad.optim.amp`; the module's buffers (``module``, ``buffers``, ``buffers_every``) in
:mod:`peergrad.optim.buffers`. The package docstring (:mod:`peergrad.optim`) is the user's
guide.

Workers should start from identical parameters: worker 0's are broadcast at construction (as
DDP does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.base import Algorithm, bind_run
from peergrad.algorithms.registry import make_algorithm
from peergrad.comm.base import Communicator
from peergrad.comm.segments import merge_state, settle
from peergrad.optim.amp import _GradientPrep
from peergrad.optim.buffers import BUFFER_MODES as BUFFER_MODES
from peergrad.optim.buffers import _ModuleBuffers
from peergrad.optim.buffers import _sync_module_buffers as _sync_module_buffers
from peergrad.optim.groups import (
    GROUP_OPTIONS,
    _bind,
    _check_positive,
    _flat_buffers,
    _GroupOptions,
    _normalise_groups,
    _reattach,
    _Segment,
    _trainable,
    _views,
)
from peergrad.optim.line_search import _LineSearch
from peergrad.optim.overlap import _Overlap
from peergrad.optim.state import _Checkpointing


class DistributedOptimizer(
    _Checkpointing,
    _LineSearch,
    _GradientPrep,
    _ModuleBuffers,
    _GroupOptions,
    _Overlap,
    torch.optim.Optimizer,
):
    """A ``torch.optim.Optimizer`` running a peergrad algorithm (one worker per process).

    Args:
        params: tensors, ``(name, tensor)`` pairs, or param-group dicts (``"params"`` plus any of
            :attr:`group_options`); leaves of one floating dtype on one device. Parameters with
            ``requires_grad=False`` are kept in their group and left alone.
        algorithm: a registered algorithm name (``"dpsgd"``, ``"allreduce"``, ...), a user
            algorithm's ``"package.module:Class"`` or plugin name, an
            :class:`~peergrad.algorithms.Algorithm` subclass (made with ``algorithm_options``)
            or an instance (see :func:`peergrad.algorithms.resolve_algorithm`).
        comm: a communicator holding exactly one worker: a
            :class:`~peergrad.comm.distributed.DistributedCommunicator` under torchrun, or a
            :class:`~peergrad.comm.SimulatedCommunicator` on a 1-worker topology.
        overlap: overlap communication with the forward/backward pass (see the module doc):
            ``None`` (default) posts x-only messages early when the communicator has more than
            one worker and adds the gradient hooks on accelerators; ``True`` both, anywhere;
            ``False`` neither. Peergrad's messages travel on
            the communicator's own process group, and whatever the user changes around
            ``backward()`` and ``step()`` is checked at ``step`` (all workers agree, then redo
            the step when anything changed), so overlap never changes the iterates.
        bucket_cap_mb: bucket size in megabytes (> 0, default 25, as DDP);
            ``first_bucket_cap_mb`` (> 0, default 1) for the bucket of the last parameters.
        clip_grad_norm: > 0 or None: clip the gradient the algorithm uses to this norm.
        module: the model, for its buffers (``buffers`` one of :data:`BUFFER_MODES`, default
            ``"local"``; ``buffers_every`` >= 1 steps, default 1).
        **algorithm_options: hyper-parameters of a named algorithm (``lr``, ``momentum``, ...);
            they are the defaults of every param group.

    Attributes (read-only properties): ``algorithm`` (the algorithm of the first group),
    ``comm``, ``algorithm_state`` (the state over the whole buffer), ``flat_params`` (``x``,
    ``[1, D]``), ``flat_grad`` (``g``, ``[1, D]``), ``params`` and ``param_names`` (trainable,
    in x's order), ``num_steps``, ``group_options``, ``buckets`` (``(start, stop)`` column
    ranges of x, one per segment, in processing order).

    Raises:
        ValueError (one line, before anything is registered): an empty parameter list; a
            parameter that is not a leaf, not dense floating point, repeated, or of another
            dtype/device than the first; a group option the algorithm cannot honour (unknown,
            or different per group for an algorithm that is not coordinate-wise), named with
            its group; options given with an algorithm instance; an unknown algorithm or
            option; ``bucket_cap_mb``/``first_bucket_cap_mb``/``clip_grad_norm`` <= 0; an
            unknown ``buffers`` mode or ``buffers_every`` < 1; ``buffers`` other than local
            without ``module``; a communicator with more than one worker; a topology the
            algorithm rejects.
        TypeError: ``params`` is a single tensor, or an entry is not a tensor.
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[Any],
        algorithm: Algorithm | type[Algorithm] | str,
        comm: Communicator,
        *,
        overlap: bool | None = None,
        bucket_cap_mb: float = 25.0,
        first_bucket_cap_mb: float = 1.0,
        clip_grad_norm: float | None = None,
        module: torch.nn.Module | None = None,
        buffers: str = "local",
        buffers_every: int = 1,
        **algorithm_options: Any,
    ) -> None:
        self._built = False
        algorithm, caps = _checked_arguments(
            algorithm,
            comm,
            algorithm_options,
            overlap=overlap,
            bucket_cap_mb=bucket_cap_mb,
            first_bucket_cap_mb=first_bucket_cap_mb,
            clip_grad_norm=clip_grad_norm,
            module=module,
            buffers=buffers,
            buffers_every=buffers_every,
        )
        clip_grad_norm, first_cap, bucket_cap = caps
        # allreduce clips the averaged gradient (see _choose_clip)
        self._choose_clip(clip_grad_norm, averaged=isinstance(algorithm, AllReduceSGD))

        group_options = tuple(k for k in GROUP_OPTIONS if k in algorithm.hyperparameters())
        groups = _normalise_groups(params, group_options, algorithm)
        defaults = {k: getattr(algorithm, k) for k in group_options}
        super().__init__(groups, defaults)

        # trainable parameters, in x's order, with their group and name
        names, tensors, group_of, frozen = _trainable(self.param_groups)
        numels = [p.numel() for p in tensors]
        algorithm = bind_run(algorithm, segments=numels, shapes=[tuple(p.shape) for p in tensors])
        self._base = algorithm
        self._group_options = group_options
        self._coordinatewise = algorithm.coordinatewise and not algorithm.needs_closure
        group_algorithms = self._group_algorithms()  # checks the groups' values

        self._comm = comm
        self._names = tuple(names)
        self._params = tuple(tensors)
        self._frozen = tuple(frozen)
        self._shapes = tuple(tuple(p.shape) for p in tensors)
        first = tensors[0]
        self._x, self._g, self._x_views, self._g_views = _flat_buffers(tensors, self._shapes)
        self._param_index = {id(p): i for i, p in enumerate(tensors)}

        self._choose_overlap(comm, overlap, first.device)
        self._keep_buffers(module, buffers, buffers_every)

        self._build_segments(
            numels,
            group_of,
            group_algorithms,
            itemsize=first.element_size(),
            first_cap=first_cap,
            bucket_cap=bucket_cap,
        )

        self._bind_and_init()
        self._init_overlap()
        self._built = True
        self._post_pre_gradient()

    def _bind_and_init(self) -> None:
        """Bind the parameters and their ``.grad`` to x and g, start every worker from worker
        0's x and initialise the segments' algorithm states (construction)."""
        _bind(self._params, self._x_views, self._g_views)
        # Every worker starts from worker 0's parameters (as DistributedDataParallel does), so
        # a model seeded differently on each rank cannot silently break the methods' invariants.
        self._comm.broadcast(self._x, src=0)
        for seg in self._segments:
            seg.state = seg.algorithm.init(self._seg_x(seg), seg.comm)
        self._steps = 0

    # ------------------------------------------------------------------ properties
    @property
    def algorithm(self) -> Algorithm:
        """The algorithm with the current options of the first trainable parameter's group."""
        return min(self._segments, key=lambda s: s.start).algorithm

    @property
    def comm(self) -> Communicator:
        return self._comm

    @property
    def algorithm_state(self) -> Any:
        """The algorithm's state over the whole buffer (a new merged copy when x is cut into
        several segments; the live state otherwise)."""
        return merge_state([s.state for s in self._segments], self._x.shape[1], self._seg_bounds())

    @property
    def flat_params(self) -> Tensor:
        """``x``, shape ``[1, D]``: the storage of every trainable parameter."""
        return self._x

    @property
    def flat_grad(self) -> Tensor:
        """``g``, shape ``[1, D]``: the storage of every trainable parameter's ``.grad``."""
        return self._g

    @property
    def params(self) -> tuple[Tensor, ...]:
        return self._params

    @property
    def param_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def num_steps(self) -> int:
        """Number of :meth:`step` calls that updated x (restored by :meth:`load_state_dict`)."""
        return self._steps

    @property
    def group_options(self) -> tuple[str, ...]:
        """The options a param group may set for this algorithm."""
        return self._group_options

    @property
    def buckets(self) -> list[tuple[int, int]]:
        """Column ranges ``(start, stop)`` of x, one per segment, in processing order."""
        return [(s.start, s.stop) for s in self._order]

    @property
    def overlapping(self) -> bool:
        """True while buckets are stepped from the gradient hooks (from the second step on)."""
        return self._round_mode

    @property
    def algorithm_name(self) -> str:
        return getattr(self._base, "name", "") or type(self._base).__name__

    def __repr__(self) -> str:
        return (
            f"DistributedOptimizer({self.algorithm!r}, {len(self._params)} parameters, "
            f"{len(self.param_groups)} groups, D={self._x.shape[1]}, "
            f"{len(self._segments)} segments, worker {int(self._comm.worker_ids[0])} of "
            f"{self._comm.n_workers})"
        )

    def split_flat(self, flat: Tensor) -> tuple[Tensor, ...]:
        """Views of ``flat`` (``[D]`` or ``[1, D]``, laid out as ``x``) shaped like :attr:`params`
        (same order), e.g. to load the averaged model x̄ into a copy of the model.

        Raises ``ValueError`` when ``flat`` does not hold D values.
        """
        row = flat.reshape(-1)
        if row.numel() != self._x.shape[1]:
            raise ValueError(
                f"flat must hold D = {self._x.shape[1]} values, got shape {tuple(flat.shape)}"
            )
        return _views(row, [p.numel() for p in self._params], self._shapes)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_built", False):
            raise ValueError(
                "DistributedOptimizer cannot add a param group after construction (its flat "
                "buffer is built once); build a new optimizer with every group"
            )
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ the torch.optim API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient ``g`` in place and re-attach every ``.grad`` view of it.

        ``set_to_none`` is accepted for compatibility with ``torch.optim`` and ignored: the
        gradient buffer is also the communication buffer, so it is kept (never ``None``).
        """
        self._g.zero_()
        for p, gv in zip(self._params, self._g_views, strict=True):
            if p.grad is not gv:
                p.grad = gv

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients without stepping buckets (as DDP's ``no_sync``): run every
        ``backward()`` of a step but the last inside this block when overlap is on."""
        previous, self._no_sync = self._no_sync, True
        try:
            yield
        finally:
            self._no_sync = previous

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One iteration of the algorithm: communicate and update the parameters in place.

        Args:
            closure: re-evaluates the model, calls ``backward`` and returns the loss (as for
                ``torch.optim``); optional, except for line-search algorithms
                (``algorithm.needs_closure``), which also evaluate it at trial points under
                ``torch.no_grad()`` with replayed randomness (see the module docstring: it must
                skip ``backward`` when gradients are disabled).

        Returns:
            The closure's loss, or ``None`` without a closure.

        Gradients the user replaced (``p.grad = t``, ``set_to_none`` by ``model.zero_grad()``) are
        copied into ``g`` and the views re-attached; a missing gradient counts as zeros. With
        overlap, the step equals the plain step whatever the user changed since ``backward()``
        (options, gradients) or since the last ``step`` (parameters): see the module doc. Under
        ``GradScaler.step`` the gradient is unscaled here and the step is skipped on every
        worker when any worker's gradient overflowed.

        Raises:
            ValueError: a line-search algorithm stepped without a closure (or with one that
                returns ``None``); a parameter's storage was replaced by a tensor of another
                shape, dtype or device (e.g. ``model.to(...)`` after the optimizer was built);
                a frozen parameter got a gradient; a group option out of range or, for an
                algorithm that is not coordinate-wise, different between groups.
            RuntimeError: the closure called ``backward()`` while evaluating a trial point; with
                gradient hooks, on any worker, a gradient arrived for a bucket already stepped
                (accumulate with :meth:`no_sync`) or a parameter was changed in place between
                ``backward()`` and ``step()`` (both: the round is undone, x is as before it).
            peergrad.comm.PeerFailure: on the distributed engine, a peer died or stopped answering.
        """
        line_search = getattr(self._base, "needs_closure", False)
        if line_search and closure is None:
            raise ValueError(
                f"{self.algorithm_name} runs a line search: call step(closure) with a closure "
                "that zeroes the gradients, computes the minibatch loss, calls loss.backward() "
                "only when torch.is_grad_enabled(), and returns the loss"
            )
        begin_step = getattr(self._comm, "begin_step", None)
        if begin_step is not None:
            begin_step(self._steps + 1)
        grad_scale, found_inf = self._scaler_inputs()  # GradScaler.step's (amp.py)
        loss, trial = self._first_call(closure, line_search)
        try:
            self._check_frozen()
        except ValueError:
            if self._round_mode:  # the buckets stepped in this backward pass cannot be undone
                self._cancel_round()
                self._start_round()
            raise
        if self._round_mode and self._round is not None:
            self._finish_round()
        elif self._plain_step(grad_scale, found_inf, trial):
            return loss  # GradScaler: some worker overflowed, every worker skips the step
        settle([s.comm for s in self._segments], self._comm)
        self._steps += 1
        self._sync_buffers()
        self._after_step()
        return loss

    def synchronize(self) -> None:
        """Wait for every message in flight (the gossip of x posted at the end of ``step``, and
        the averages an algorithm posted with ``comm.mean_start``, e.g. Streaming DiLoCo's).

        Collective: every worker must call it at the same point. The next ``step`` sends those
        messages again, so parameters may be changed in place between this call and the next
        ``step`` (e.g. ``model.load_state_dict``). Call it before ``destroy_process_group``.
        """
        self._cancel_round()
        for seg in self._order:
            if seg.pending is not None:
                pending, seg.pending = seg.pending, None
                pending.wait(seg.comm.workspace(self._seg_x(seg), "drain"))
                seg.comm.ops.clear()
        self._comm.synchronize()  # means posted with mean_start
        self._start_round()

    def average_parameters(self) -> None:
        """Replace every worker's parameters by their exact mean x̄ = (1/n) Σ_i x_i.

        Collective: every worker must call it at the same point (typically once, after the last
        ``step``, to evaluate or save the averaged model; stepping on afterwards is allowed).
        Messages still in flight are drained first (:meth:`synchronize`), whether or not
        overlap or gradient hooks are on; then the flat parameter buffer ``x`` (``[1, D]``) is
        all-reduced through the communicator's ``mean`` and written back in place, so the
        module's trainable parameters (views of ``x``) hold x̄ on every worker, bit-identical
        across workers. The all-reduce is counted like every other message:
        ``comm.bytes_sent`` grows by ``2 (n - 1) / n * D * itemsize`` bytes per worker (one
        all-reduce of ``x``, ring schedule), as do ``simulated_comm_time_s`` and ``rounds``.
        On a 1-worker communicator x is unchanged.

        Only the parameters change. The algorithm's state (momentum buffers, gradient trackers,
        error-feedback memories, the public copies of compressed methods), the step count and
        ``param_groups`` are left as they were, as are frozen parameters
        (``requires_grad=False``, never in ``x``) and the module's buffers (BatchNorm running
        statistics follow ``buffers=``; ``"average"`` already averages them at every step).

        Raises:
            peergrad.comm.PeerFailure: on the distributed engine, a peer died or stopped
                answering.
        """
        self.synchronize()
        x_bar = self._comm.mean(self._x)
        with torch.no_grad():
            self._x.copy_(x_bar)

    def close(self) -> None:
        """Drain the messages in flight (:meth:`synchronize`), remove the gradient hooks and
        stop the communication thread; the optimizer then steps without overlap. Collective."""
        self.synchronize()
        self._stop_overlap()

    # ------------------------------------------------------------------ segments
    def _seg_x(self, seg: _Segment) -> Tensor:
        return self._x[:, seg.start : seg.stop]

    def _seg_g(self, seg: _Segment) -> Tensor:
        return self._g[:, seg.start : seg.stop]

    def _seg_bounds(self) -> list[tuple[int, int]]:
        return [(s.start, s.stop) for s in self._segments]

    def _run_segment(self, seg: _Segment, trial: Any = None) -> None:
        pending, seg.pending = seg.pending, None
        seg.state = seg.algorithm.step(
            self._seg_x(seg), self._seg_g(seg), seg.state, seg.comm, closure=trial, pending=pending
        )

    # ------------------------------------------------------------------ the step
    def _plain_step(self, grad_scale: Tensor | None, found_inf: Tensor | None, trial: Any) -> bool:
        """Step every segment here (no round): True when a GradScaler overflow skips the step."""
        if self._overlap and any(s.pending is not None for s in self._segments):
            self._check_posted()
        self._sync()
        if self._prepare_gradient(grad_scale, found_inf):  # unscale, clip (amp.py)
            return True
        self._refresh_algorithms()
        with torch.no_grad():
            for seg in self._order:
                self._run_segment(seg, trial)
        return False

    # ------------------------------------------------------------------ internals
    def _check_frozen(self) -> None:
        for name, p in self._frozen:
            if p.requires_grad and p.grad is not None:
                raise ValueError(
                    f"parameter {name!r} was frozen (requires_grad=False) when the optimizer was "
                    "built but now has a gradient; it is not in the flat buffer, so build a new "
                    "optimizer after changing which parameters are trainable"
                )

    def _sync(self, first: int = 0, last: int | None = None) -> None:
        """Re-attach parameter storage and gradients that were replaced since the last call.

        For the parameters ``[first, last)`` (default all): a parameter whose ``.data`` was
        replaced has its new values copied into ``x``; a replaced ``.grad`` is copied into
        ``g``; a ``None`` gradient becomes zeros. Afterwards every ``p`` is a view of ``x`` and
        every ``p.grad`` a view of ``g`` again.
        """
        last = len(self._params) if last is None else last
        _reattach(self._names, self._params, self._x_views, self._g_views, first, last)


def _checked_arguments(
    algorithm: Algorithm | type[Algorithm] | str,
    comm: Communicator,
    algorithm_options: dict[str, Any],
    *,
    overlap: bool | None,
    bucket_cap_mb: float,
    first_bucket_cap_mb: float,
    clip_grad_norm: float | None,
    module: torch.nn.Module | None,
    buffers: str,
    buffers_every: int,
) -> tuple[Algorithm, tuple[float | None, float, float]]:
    """The constructor's checks (see :class:`DistributedOptimizer`): the algorithm (made from
    its name) and ``(clip_grad_norm, first_bucket_cap_mb, bucket_cap_mb)``, checked."""
    if not isinstance(algorithm, Algorithm):  # a name, a "module:Class" or a class
        algorithm = make_algorithm(algorithm, **algorithm_options)
    elif algorithm_options:
        raise ValueError(
            f"options {sorted(algorithm_options)} were given together with an algorithm "
            "instance; set them on the instance or pass the algorithm's name"
        )
    bucket_cap = _check_positive("bucket_cap_mb", bucket_cap_mb, " (megabytes)")
    first_cap = _check_positive("first_bucket_cap_mb", first_bucket_cap_mb, " (megabytes)")
    if clip_grad_norm is not None:
        clip_grad_norm = _check_positive("clip_grad_norm", clip_grad_norm)
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers must be one of {', '.join(BUFFER_MODES)}; got {buffers!r}")
    if not (isinstance(buffers_every, int) and buffers_every >= 1):
        raise ValueError(f"buffers_every must be an integer >= 1, got {buffers_every!r}")
    if buffers != "local" and module is None:
        raise ValueError(f"buffers={buffers!r} needs module= (the model whose buffers to sync)")
    if overlap not in (None, True, False):
        raise ValueError(f"overlap must be True, False or None (auto), got {overlap!r}")
    w = int(comm.worker_ids.numel())
    if w != 1:
        raise ValueError(
            f"DistributedOptimizer runs one worker per process, but the communicator holds "
            f"{w} workers; use a DistributedCommunicator under torchrun (or a 1-worker "
            "topology), and peergrad.train for simulated multi-worker runs"
        )
    algorithm.check_topology(comm)
    return algorithm, (clip_grad_norm, first_cap, bucket_cap)
