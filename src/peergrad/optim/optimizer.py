"""The optimizer proper: :class:`DistributedOptimizer` (param groups, the flat buffer binding,
the step contract, ``state_dict``), with gradient clipping, mixed precision and module buffers.

The overlap machinery (buckets, gradient hooks, the communication thread, the round and its
hazard checks) is the mixin :class:`peergrad.optim.overlap._Overlap`; param groups and the flat
buffer's views are in :mod:`peergrad.optim.groups`; the state dict's checks and the line search's
RNG replay in :mod:`peergrad.optim.state`. The package docstring (:mod:`peergrad.optim`) is the
user's guide.

Gradient clipping (``clip_grad_norm``, > 0): applied to the gradient the algorithm uses. For
``allreduce`` this is the averaged gradient (the algorithm's ``clip_grad_norm`` option, as a DDP
user clips after ``backward``); for the decentralized methods the local stochastic gradient g
before the algorithm's step (factor ``min(1, c / (||g|| + 1e-6))``, as
``torch.nn.utils.clip_grad_norm_``).

Mixed precision (``torch.amp.GradScaler``). The optimizer sets ``_step_supports_amp_scaling``:
``scaler.step(opt)`` hands it the scale and the local overflow flag; ``step`` unscales ``g`` in
one pass, and the overflow flags of all workers are combined (a 4-byte all-reduce, not counted
in ``bytes_sent``), so that every worker skips the step when any worker overflowed and the
collective messages stay matched. Each worker's scaler backs off on its own overflow only.

Module buffers (``module``, ``buffers``, ``buffers_every``). Only parameters are communicated by
the algorithm. Given ``module=``, its floating-point buffers (BatchNorm running statistics) are,
every ``buffers_every`` steps at the end of ``step``: ``"local"`` (default) left alone, each
worker keeps its own (no communication, as the simulated engine's default); ``"average"``
all-reduced to their mean (one all-reduce, counted in ``bytes_sent``); ``"broadcast"`` replaced by
worker 0's (as DDP's ``broadcast_buffers``; not counted). Integer buffers (``num_batches_tracked``)
stay local. Workers should start from identical parameters: worker 0's are broadcast at
construction (as DDP does).

"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch
from torch import Tensor

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.base import Algorithm, LossClosure, bind_run
from peergrad.algorithms.registry import make_algorithm
from peergrad.comm.base import Communicator
from peergrad.comm.segments import merge_state, settle, split_state
from peergrad.optim.groups import (
    GROUP_OPTIONS,
    _bind,
    _check_positive,
    _flat_buffers,
    _group_algorithms,
    _normalise_groups,
    _reattach,
    _Segment,
    _trainable,
    _views,
)
from peergrad.optim.overlap import _Overlap
from peergrad.optim.state import _checked_state, _RngState, _state_dict, _trial_closure
from peergrad.transforms import clip_rows

BUFFER_MODES = ("local", "average", "broadcast")


class DistributedOptimizer(_Overlap, torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` running a peergrad algorithm (one worker per process).

    Args:
        params: tensors, ``(name, tensor)`` pairs, or param-group dicts (``"params"`` plus any of
            :attr:`group_options`); leaves of one floating dtype on one device. Parameters with
            ``requires_grad=False`` are kept in their group and left alone.
        algorithm: a registered algorithm name (``"dpsgd"``, ``"allreduce"``, ...) or an
            :class:`~peergrad.algorithms.Algorithm` instance.
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
        algorithm: Algorithm | str,
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
        # allreduce clips the averaged gradient: the optimizer averages g (one all-reduce),
        # clips it and steps the buckets with a communicator whose mean is the identity
        averaged = isinstance(algorithm, AllReduceSGD)
        self._clip = clip_grad_norm
        self._clip_mode = None if clip_grad_norm is None else "averaged" if averaged else "local"

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
        self._module = module
        self._buffers = buffers
        self._buffers_every = buffers_every

        self._build_segments(
            numels,
            group_of,
            group_algorithms,
            itemsize=first.element_size(),
            first_cap=first_cap,
            bucket_cap=bucket_cap,
        )

        _bind(self._params, self._x_views, self._g_views)
        # Every worker starts from worker 0's parameters (as DistributedDataParallel does), so
        # a model seeded differently on each rank cannot silently break the methods' invariants.
        comm.broadcast(self._x, src=0)  # type: ignore[attr-defined]  # on both communicators
        for seg in self._segments:
            seg.state = seg.algorithm.init(self._seg_x(seg), seg.comm)
        self._steps = 0

        self._init_overlap()
        self._built = True
        self._post_pre_gradient()

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
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        amp = found_inf is not None
        if amp and self._round_mode:
            self._cancel_round()
            raise RuntimeError(
                "DistributedOptimizer: GradScaler.step(opt) was first used after the buckets "
                "were already stepped from the backward pass with scaled gradients; use the "
                "GradScaler from the first step on, or build the optimizer with overlap=False"
            )
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
        elif self._plain_step(amp, grad_scale, found_inf, trial):
            return loss  # GradScaler: some worker overflowed, every worker skips the step
        settle([s.comm for s in self._segments], self._comm)
        self._steps += 1
        self._sync_buffers()
        self._after_step()
        return loss

    def synchronize(self) -> None:
        """Wait for every message in flight (the gossip of x posted at the end of ``step``).

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

    def set_options(self, **changes: Any) -> None:
        """Change hyper-parameters between steps, e.g. ``opt.set_options(lr=0.01)``.

        The algorithm (a frozen dataclass) is replaced by a copy with ``changes`` in every group
        (options that are group options are written into every group, where schedulers see
        them); the state is kept. Messages in flight are drained and sent again (collective:
        every worker must make the same change). Raises ``ValueError`` for an unknown option or
        an invalid value.
        """
        fields = set(self._base.hyperparameters())
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(
                f"algorithm {self.algorithm_name!r} has no option(s) {', '.join(unknown)}; its "
                f"options are: {', '.join(sorted(fields)) or '(none)'}"
            )
        base = dataclasses.replace(self._base, **changes)  # type: ignore[type-var]
        if base.coordinatewise != self._base.coordinatewise:
            raise ValueError(
                f"set_options({', '.join(sorted(changes))}) would change whether "
                f"{self.algorithm_name} can be cut into buckets; build a new optimizer instead"
            )
        self.synchronize()
        self._base = base
        for group in self.param_groups:
            for k in self._group_options:
                if k in changes:
                    group[k] = changes[k]
        self._cached_values = None
        self._refresh_algorithms()
        self._post_pre_gradient()
        self._start_round()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly, as a new dict of cloned tensors.

        Keys: ``format``, ``algorithm`` (name), ``options`` (hyper-parameters of the first
        group), ``state`` (the algorithm state over the whole buffer as a dict, tensors cloned),
        ``num_steps``, ``param_names``, ``param_shapes`` (tuples), ``num_params`` (trainable
        ones), ``flat_params`` (``[1, D]``), ``worker_ids``, ``bytes_sent`` (float64 ``[1]``,
        bytes), ``simulated_comm_time_s`` (seconds), ``rounds``, ``param_groups`` (as torch:
        every group's options, ``"params"`` as indices over all parameters, frozen included).
        Only plain containers, numbers, strings and tensors: loadable with
        ``torch.load(..., weights_only=True)``. Each worker saves its own.
        """
        return _state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: parameters (in place), state, options, param groups
        and counters. Everything is checked before anything changes. Messages in flight are
        drained and sent again with the restored x (every worker loads its own state dict).

        Raises:
            ValueError: missing keys or an unknown format; another algorithm; a different number
                of parameters or the first parameter whose shape differs (named); a parameter
                saved under another name (when both sides have real names, e.g. from
                ``named_parameters()``); a state dict saved by another worker; a state that does
                not fit the algorithm's state type or a state tensor whose shape or dtype
                differs (named); param groups of other sizes.
        """
        sd = state_dict
        base, state, flat, bytes_sent, saved_groups = _checked_state(self, sd)
        self.synchronize()
        self._sync()
        with torch.no_grad():
            self._x.copy_(flat)
            self._comm.bytes_sent.copy_(bytes_sent)
        if "simulated_comm_time_s" in sd and hasattr(self._comm, "simulated_comm_time_s"):
            self._comm.simulated_comm_time_s = float(sd["simulated_comm_time_s"])
        if "rounds" in sd and hasattr(self._comm, "rounds"):
            self._comm.rounds = int(sd["rounds"])  # type: ignore[attr-defined]
        if saved_groups is not None:
            for group, saved in zip(self.param_groups, saved_groups, strict=True):
                for k, v in saved.items():
                    if k not in ("params", "param_names"):
                        group[k] = copy.deepcopy(v)
        self._base = base
        self._cached_values = None
        self._refresh_algorithms()
        parts = split_state(state, self._x.shape[1], self._seg_bounds())
        for seg, part in zip(self._segments, parts, strict=True):
            seg.state = part
        self._steps = int(sd["num_steps"])
        self._post_pre_gradient()
        self._start_round()

    # ------------------------------------------------------------------ groups
    def _group_values(self) -> list[dict[str, Any]]:
        return [{k: group[k] for k in self._group_options} for group in self.param_groups]

    def _group_algorithms(self) -> list[Algorithm]:
        """One algorithm per param group, from the groups' current option values (checked:
        see :func:`peergrad.optim.groups._group_algorithms`)."""
        values = self._group_values()
        self._cached_values = [tuple(v.items()) for v in values]
        return _group_algorithms(
            self._base,
            values,
            coordinatewise=self._coordinatewise,
            group_options=self._group_options,
            name=self.algorithm_name,
        )

    def _refresh_algorithms(self) -> None:
        """Rebuild the segments' algorithms when a group's options changed (a scheduler)."""
        current = [tuple(v.items()) for v in self._group_values()]
        if current == getattr(self, "_cached_values", None):
            return
        algorithms = self._group_algorithms()
        for seg in self._segments:
            seg.algorithm = algorithms[seg.group]

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
    def _first_call(
        self, closure: Callable[[], Any] | None, line_search: bool
    ) -> tuple[Any, LossClosure | None]:
        """Call the closure (grad enabled); with one segment, the line search's trial closure."""
        loss, trial = None, None
        if closure is not None:
            rng = _RngState.capture(self._x.device)  # before the first call: trials replay it
            with torch.enable_grad():
                loss = closure()
            whole = len(self._segments) == 1
            if loss is not None and whole:  # the closure sees all of x: one segment only
                trial = _trial_closure(self, closure, loss, rng)
            elif line_search:
                raise ValueError(f"{self.algorithm_name}: the closure returned None, not the loss")
        return loss, trial

    def _plain_step(
        self, amp: bool, grad_scale: Tensor | None, found_inf: Tensor | None, trial: Any
    ) -> bool:
        """Step every segment here (no round): True when a GradScaler overflow skips the step."""
        if self._overlap and any(s.pending is not None for s in self._segments):
            self._check_posted()
        self._sync()
        if amp:
            self._amp_seen = True
            # amp is `found_inf is not None` (step)
            if self._unscale_or_skip(grad_scale, cast(Tensor, found_inf)):
                return True
        # _clip_mode is not None exactly when _clip is not None (__init__)
        if self._clip_mode == "local":
            clip_rows(self._g, cast(float, self._clip))
        elif self._clip_mode == "averaged":
            self._g.copy_(clip_rows(self._comm.mean(self._g).clone(), cast(float, self._clip)))
        self._refresh_algorithms()
        with torch.no_grad():
            for seg in self._order:
                self._run_segment(seg, trial)
        return False

    # ------------------------------------------------------------------ amp, clipping, buffers
    def _unscale_or_skip(self, grad_scale: Tensor | None, found_inf: Tensor) -> bool:
        """GradScaler: True when some worker overflowed (every worker skips); else unscale g."""
        flag = found_inf.detach().to(self._x.device, torch.float32).reshape(1, 1)
        if float(self._comm.mean(flag, account=False)[0, 0]) > 0:
            return True
        if grad_scale is not None:
            inv = grad_scale.detach().double().reciprocal().float().to(self._g.device)
            self._g.mul_(inv)
        return False

    def _check_frozen(self) -> None:
        for name, p in self._frozen:
            if p.requires_grad and p.grad is not None:
                raise ValueError(
                    f"parameter {name!r} was frozen (requires_grad=False) when the optimizer was "
                    "built but now has a gradient; it is not in the flat buffer, so build a new "
                    "optimizer after changing which parameters are trainable"
                )

    def _sync_buffers(self) -> None:
        if self._module is None or self._buffers == "local":
            return
        if self._steps % self._buffers_every:
            return
        _sync_module_buffers(self._module, self._buffers, self._comm)

    # ------------------------------------------------------------------ internals
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
    algorithm: Algorithm | str,
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
    if isinstance(algorithm, str):
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


def _sync_module_buffers(module: torch.nn.Module, mode: str, comm: Communicator) -> None:
    """``"average"`` or ``"broadcast"`` the module's floating-point buffers (see the module doc)."""
    from peergrad.train.params import average_buffers  # lazy: keeps this import light

    rows = {name: b.unsqueeze(0) for name, b in module.named_buffers()}  # [1, ...]
    with torch.no_grad():
        if mode == "average":
            average_buffers(rows, comm)  # one accounted all-reduce per dtype
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for b in rows.values():
            if b.is_floating_point():
                by_dtype.setdefault(b.dtype, []).append(b)
        for bufs in by_dtype.values():
            flat = torch.cat([b.reshape(1, -1) for b in bufs], dim=1)
            comm.broadcast(flat, src=0)  # type: ignore[attr-defined]  # on both communicators
            offset = 0
            for b in bufs:
                b.copy_(flat[:, offset : offset + b[0].numel()].view_as(b))
                offset += b[0].numel()
