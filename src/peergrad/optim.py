"""Drop-in optimizer for your own training loop: :class:`DistributedOptimizer`.

``DistributedOptimizer`` is a ``torch.optim.Optimizer`` that runs any peergrad algorithm (D-PSGD,
all-reduce SGD, ...). Under ``torchrun`` every process is one worker::

    from peergrad.comm import distributed
    distributed.init_process_group()                    # reads torchrun's environment
    comm = distributed.DistributedCommunicator(make_topology("ring", world_size))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = DistributedOptimizer(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        "dpsgd", comm, lr=0.1, momentum=0.9, weight_decay=5e-4,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for xb, yb in loader:
        opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step(); sched.step()

How it works. At construction the trainable parameters are copied into one flat buffer ``x``
(shape ``[1, D]``: the worker axis of the distributed engine has size 1, see
:mod:`peergrad.comm.base`) and each parameter's ``.data`` becomes a view of its slice of ``x``;
likewise every ``.grad`` becomes a view of a flat gradient buffer ``g`` (``[1, D]``).
``loss.backward()`` therefore accumulates straight into ``g``, and the algorithm's in-place update
of ``x`` *is* the update of the model: no flattening copies per step. The order in ``x`` is the
order of the param groups, then of the parameters within each group.

Update contract. ``opt.step()`` is one iteration of the algorithm: it takes the gradient the user
accumulated since the last ``zero_grad`` (evaluated at the current parameters), does the
communication the paper does in one iteration (a gossip with the neighbours of W(k), or an
all-reduce) and updates the parameters in place. Every worker must call ``step`` the same number
of times (the communication is collective). ``comm.bytes_sent`` counts the bytes this worker sent.

Param groups (``torch.optim`` conventions). ``params`` is an iterable of tensors, of ``(name,
tensor)`` pairs (``model.named_parameters()``, better error messages), or of group dicts. A group
may set the options in :attr:`DistributedOptimizer.group_options` of the algorithm: ``lr``,
``weight_decay`` and ``momentum`` where the algorithm has them (for the Adam family ``momentum``
is β₁). ``param_groups`` is a real list of dicts: ``torch.optim.lr_scheduler`` schedulers
(StepLR, CosineAnnealingLR, OneCycleLR, LambdaLR, SequentialLR for warm-up, ...) change
``group["lr"]`` and the algorithm uses the new value at the next step; as in torch.optim a group's
``lr`` may be 0 (a warm-up from 0, a cosine schedule ending at 0: that step leaves x to the
communication alone), although the algorithms' own ``lr`` option must be > 0. How per-group
values are honoured:

- *coordinate-wise* algorithms (:attr:`~peergrad.algorithms.Algorithm.coordinatewise`: D-PSGD,
  all-reduce, D², gradient tracking, DeTAG, the adaptive methods, local SGD, distributed Adam)
  step each group's slice of ``x`` with that group's values (per-segment math; the messages of
  a step are one per segment, and the byte counters charge them as one round);
- the others (the compressed methods: a top-k/QSGD/sign compressor and Armijo's line search
  couple all coordinates) take one value per option: every group must give the same value,
  else ``ValueError`` naming the group and the option (at construction, or at the ``step``
  after a scheduler made them differ).

Frozen parameters (``requires_grad=False``) may sit in a group: they stay in ``param_groups`` but
not in ``x``; they are never communicated, decayed or updated. A frozen parameter that has a
gradient at ``step`` (unfrozen later) raises ``ValueError``: build a new optimizer after changing
what is trainable.

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

Deviations from ``torch.optim``:

- ``zero_grad(set_to_none=True)`` zeroes the flat gradient in place and keeps the ``.grad``
  views: the gradient buffer is the communication buffer, so it is never freed. ``set_to_none``
  is accepted for compatibility only.
- A trainable parameter whose ``.grad`` is ``None`` at ``step`` contributes a zero gradient; it is
  still gossiped, and momentum and weight decay still apply (torch.optim would skip it).
- ``opt.state`` is torch's per-parameter dict and stays empty; the algorithm's state is
  :attr:`algorithm_state`. ``add_param_group`` after construction raises (the flat buffer is
  built once).
- All trainable parameters must share one dtype and one device (they live in one flat buffer).
- Line-search algorithms (``armijo-csgd``; ``algorithm.needs_closure``) must be stepped with a
  closure, ``opt.step(closure)``, else ``ValueError``. The closure is called once as in
  torch.optim (grad enabled: zero the gradients, forward, backward, return the loss); its loss is
  the line search's f(x_t) and its gradient the step's. Every trial point of the search then
  re-evaluates the same closure **under** ``torch.no_grad()``, with the parameters set to the
  trial point and the global RNG (CPU and the parameters' device) replayed from the state it had
  before the first call, so dropout draws the same masks (spec §3.2: same minibatch, same
  randomness); afterwards the parameters, the gradient and the RNG are as after the first call.
  **The closure must therefore call** ``backward()`` **only when** ``torch.is_grad_enabled()``::

      def closure():
          opt.zero_grad()
          loss = loss_fn(model(xb), yb)
          if torch.is_grad_enabled():
              loss.backward()
          return loss

  A closure that calls ``backward()`` under ``no_grad`` gets a ``RuntimeError`` saying so. Module
  buffers (BatchNorm running statistics) are not the optimizer's: every trial forward pass in
  train mode updates them (use GroupNorm, or save and restore them around ``step``).
- ``state_dict()``/``load_state_dict`` restore the algorithm's options and state, the flat
  parameters (the model sees them), the byte counters and ``param_groups`` (every group's
  options, including the keys schedulers add such as ``initial_lr``), as torch.optim does. The
  state is stored for the whole buffer, so a checkpoint does not depend on the buckets.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.base import (
    Algorithm,
    LossClosure,
    bind_run,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.registry import make_algorithm
from peergrad.comm.base import Communicator
from peergrad.segments import (
    CommThread,
    PreAveraged,
    SegmentComm,
    cut,
    merge_state,
    settle,
    split_state,
)
from peergrad.transforms import clip_rows

__all__ = ["STATE_DICT_FORMAT", "DistributedOptimizer", "GROUP_OPTIONS", "BUFFER_MODES"]

_AUTO_NAME = re.compile(r"param\d+")  # the name given to an unnamed tensor

#: Value of the ``"format"`` key of :meth:`DistributedOptimizer.state_dict` (``/1`` still loads).
STATE_DICT_FORMAT = "peergrad.optim.DistributedOptimizer/2"
_FORMATS = (STATE_DICT_FORMAT, "peergrad.optim.DistributedOptimizer/1")

#: Options a param group may set, where the algorithm has them.
GROUP_OPTIONS = ("lr", "momentum", "weight_decay")
#: What happens to the module's floating-point buffers every ``buffers_every`` steps.
BUFFER_MODES = ("local", "average", "broadcast")

_REQUIRED_KEYS = (
    "algorithm",
    "options",
    "state",
    "num_steps",
    "param_names",
    "param_shapes",
    "flat_params",
    "worker_ids",
    "bytes_sent",
)


@dataclasses.dataclass
class _Segment:
    """A bucket: parameters ``[first, last)`` (trainable order), columns ``[start, stop)`` of x."""

    index: int
    first: int
    last: int
    start: int
    stop: int
    group: int
    algorithm: Algorithm
    state: Any
    comm: Any  # SegmentComm
    pending: Any = None  # pre_gradient handle in flight
    remaining: int = 0  # gradients still to arrive in this backward pass
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False
    saved: Any = None  # (x, state) of the bucket before the round stepped it (for a redo)


def _check_positive(name: str, value: Any, unit: str = "") -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if not ok or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0{unit}, got {value!r}")
    return float(value)


class DistributedOptimizer(torch.optim.Optimizer):
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
        D = sum(numels)
        self._x = torch.empty(1, D, dtype=first.dtype, device=first.device)
        self._g = torch.zeros_like(self._x)
        self._x_views = _views(self._x[0], numels, self._shapes)
        self._g_views = _views(self._g[0], numels, self._shapes)
        self._param_index = {id(p): i for i, p in enumerate(tensors)}

        # x-only messages leave at the end of step (overlap on, or auto with an asynchronous
        # communicator); buckets stepped from the gradient hooks need overlap=True, or auto on
        # an accelerator (on the CPU the communication thread competes with the backward pass
        # for the same cores: see the README's benchmark)
        asynchronous = comm.n_workers > 1 and hasattr(comm, "mix_start_takes_workspace")
        accelerator = first.device.type != "cpu"
        self._overlap = asynchronous if overlap is None else bool(overlap)
        hooks = asynchronous and accelerator if overlap is None else bool(overlap)
        self._use_hooks = hooks and self._coordinatewise
        self._module = module
        self._buffers = buffers
        self._buffers_every = buffers_every

        # segments: whole groups without overlap, buckets with it; one for other algorithms
        if not self._coordinatewise:
            param_ranges = [(0, len(tensors))]
        elif self._use_hooks:
            param_ranges = cut(
                numels,
                group_of,
                itemsize=first.element_size(),
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
        self._segment_of_param = [0] * len(tensors)
        for seg in self._segments:
            for i in range(seg.first, seg.last):
                self._segment_of_param[i] = seg.index

        with torch.no_grad():
            for p, xv, gv in zip(self._params, self._x_views, self._g_views, strict=True):
                xv.copy_(p.detach())
                if p.grad is not None:
                    gv.copy_(_dense(p.grad))
                p.data = xv
                p.grad = gv
        # Every worker starts from worker 0's parameters (as DistributedDataParallel does), so
        # a model seeded differently on each rank cannot silently break the methods' invariants.
        comm.broadcast(self._x, src=0)
        for seg in self._segments:
            seg.state = seg.algorithm.init(self._seg_x(seg), seg.comm)
        self._steps = 0

        # overlap machinery
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
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad_ready))
            self._reset_countdown()
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
        loss, trial = None, None
        if closure is not None:
            rng = _RngState.capture(self._x.device)  # before the first call: trials replay it
            with torch.enable_grad():
                loss = closure()
            whole = len(self._segments) == 1
            if loss is not None and whole:  # the closure sees all of x: one segment only
                trial = self._trial_closure(closure, loss, rng)
            elif line_search:
                raise ValueError(f"{self.algorithm_name}: the closure returned None, not the loss")
        try:
            self._check_frozen()
        except ValueError:
            if self._round_mode:  # the buckets stepped in this backward pass cannot be undone
                self._cancel_round()
                self._start_round()
            raise
        if self._round_mode and self._round is not None:
            self._finish_round()
        else:
            if self._overlap and any(s.pending is not None for s in self._segments):
                self._check_posted()
            self._sync()
            if amp:
                self._amp_seen = True
                if self._unscale_or_skip(grad_scale, found_inf):
                    return loss
            if self._clip_mode == "local":
                clip_rows(self._g, self._clip)
            elif self._clip_mode == "averaged":
                self._g.copy_(clip_rows(self._comm.mean(self._g).clone(), self._clip))
            self._refresh_algorithms()
            with torch.no_grad():
                for seg in self._order:
                    self._run_segment(seg, trial)
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
        from peergrad.train.checkpoint import to_plain  # lazy: keeps this import light

        self._sync()
        state = self.algorithm_state
        payload = state_to_dict(state) if _is_dataclass_instance(state) else state
        comm = self._comm
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        return {
            "format": STATE_DICT_FORMAT,
            "algorithm": self.algorithm_name,
            "options": dict(self._base.options()),
            "state": to_plain(payload),
            "num_steps": self._steps,
            "param_names": list(self._names),
            "param_shapes": [tuple(s) for s in self._shapes],
            "num_params": len(self._params),
            "flat_params": self._x.detach().clone(),
            "worker_ids": [int(i) for i in comm.worker_ids.tolist()],
            "bytes_sent": comm.bytes_sent.detach().clone(),
            "simulated_comm_time_s": float(getattr(comm, "simulated_comm_time_s", 0.0)),
            "rounds": int(getattr(comm, "rounds", 0)),
            "param_groups": groups,
        }

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
        from peergrad.train.checkpoint import restore_into  # lazy: keeps this import light

        sd = state_dict
        missing = [k for k in _REQUIRED_KEYS if k not in sd]
        if missing:
            raise ValueError(f"not a DistributedOptimizer state dict: missing {', '.join(missing)}")
        if sd.get("format", STATE_DICT_FORMAT) not in _FORMATS:
            raise ValueError(
                f"unknown state dict format {sd.get('format')!r}; this version reads "
                f"{', '.join(_FORMATS)}"
            )
        if sd["algorithm"] != self.algorithm_name:
            raise ValueError(
                f"the state dict is for algorithm {sd['algorithm']!r}, but this optimizer runs "
                f"{self.algorithm_name!r}"
            )
        shapes = [tuple(int(d) for d in s) for s in sd["param_shapes"]]
        saved_names = list(sd["param_names"])
        if len(shapes) != len(self._shapes):
            raise ValueError(
                f"the state dict holds {len(shapes)} parameters, this optimizer {len(self._shapes)}"
            )
        for i, (name, mine, theirs) in enumerate(
            zip(self._names, self._shapes, shapes, strict=True)
        ):
            if mine != theirs:
                saved = saved_names[i] if i < len(saved_names) else "?"
                raise ValueError(
                    f"parameter {name!r} (index {i}) has shape {mine} here but {theirs} in the "
                    f"state dict (saved as {saved!r})"
                )
        for i, (name, saved) in enumerate(zip(self._names, saved_names, strict=False)):
            if name != saved and not _AUTO_NAME.fullmatch(name) and not _AUTO_NAME.fullmatch(saved):
                raise ValueError(
                    f"parameter {i} is named {name!r} here but {saved!r} in the state dict: it was "
                    "saved from another model (or the parameters are in another order)"
                )
        mine_ids = [int(i) for i in self._comm.worker_ids.tolist()]
        if list(sd["worker_ids"]) != mine_ids:
            raise ValueError(
                f"the state dict was saved by worker(s) {list(sd['worker_ids'])}, this optimizer "
                f"is worker(s) {mine_ids}; load each worker's own state dict"
            )
        flat = sd["flat_params"]
        if tuple(flat.shape) != tuple(self._x.shape):
            raise ValueError(
                f"flat_params has shape {tuple(flat.shape)}, expected {tuple(self._x.shape)}"
            )
        bytes_sent = sd["bytes_sent"]
        if tuple(bytes_sent.shape) != tuple(self._comm.bytes_sent.shape):
            raise ValueError(
                f"bytes_sent has shape {tuple(bytes_sent.shape)}, expected "
                f"{tuple(self._comm.bytes_sent.shape)}"
            )
        saved_groups = sd.get("param_groups")
        if saved_groups is not None:
            sizes = [len(g["params"]) for g in saved_groups]
            mine_sizes = [len(g["params"]) for g in self.param_groups]
            if sizes != mine_sizes:
                raise ValueError(
                    f"the state dict has param groups of sizes {sizes}, this optimizer {mine_sizes}"
                )
        base = self._base
        options = dict(sd["options"])
        if options and _is_dataclass_instance(base) and options != base.options():
            base = dataclasses.replace(base, **options)  # type: ignore[type-var]
        current = self.algorithm_state
        if _is_dataclass_instance(current) and isinstance(sd["state"], dict):
            fields = dict(sd["state"])
            if "__dataclass__" not in fields:  # the top level is a dict of fields
                fields = {"__dataclass__": type(current).__name__, "fields": fields}
            # Restored into a copy: nothing changes unless every field fits.
            state = restore_into(copy.deepcopy(current), fields, f"{self.algorithm_name} state")
        else:
            state = _restore_like(current, sd["state"])

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
        """One algorithm per param group, from the groups' current option values.

        Raises ``ValueError`` naming the group: a value the algorithm rejects, or (for an
        algorithm that is not coordinate-wise) values that differ between groups.
        """
        values = self._group_values()
        self._cached_values = [tuple(v.items()) for v in values]
        if not self._coordinatewise:
            for k, v in enumerate(values[1:], start=1):
                for opt in self._group_options:
                    if v[opt] != values[0][opt]:
                        raise ValueError(
                            f"param group {k} sets {opt}={v[opt]!r} but group 0 has "
                            f"{values[0][opt]!r}: {self.algorithm_name} is not coordinate-wise "
                            "(its compressor, clipping or line search couples all coordinates), "
                            f"so every group must use the same {opt}"
                        )
            values = values[:1]
        algorithms = []
        for k, v in enumerate(values):
            changes = {opt: val for opt, val in v.items() if getattr(self._base, opt) != val}
            # lr = 0 is a valid torch.optim value (warm-up from 0, cosine to 0): the step is x
            zero_lr = "lr" in changes and changes["lr"] == 0 and not isinstance(changes["lr"], bool)
            if zero_lr:
                changes["lr"] = self._base.lr  # type: ignore[attr-defined]
            try:
                algorithm = dataclasses.replace(self._base, **changes) if changes else self._base
            except (ValueError, TypeError) as exc:
                raise ValueError(f"param group {k}: {exc}") from None
            if zero_lr:
                algorithm = copy.copy(algorithm)
                object.__setattr__(algorithm, "lr", 0.0)
            algorithms.append(algorithm)
        if not self._coordinatewise:
            algorithms = algorithms * len(self.param_groups)
        return algorithms

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
        self._comm.broadcast(shared, src=0)  # every worker uses worker 0's order
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
                seg.saved = (self._seg_x(seg).clone(), _clone_tree(seg.state))
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
        from peergrad.train.params import average_buffers  # lazy: keeps this import light

        rows = {name: b.unsqueeze(0) for name, b in self._module.named_buffers()}  # [1, ...]
        with torch.no_grad():
            if self._buffers == "average":
                average_buffers(rows, self._comm)  # one accounted all-reduce per dtype
                return
            by_dtype: dict[torch.dtype, list[Tensor]] = {}
            for b in rows.values():
                if b.is_floating_point():
                    by_dtype.setdefault(b.dtype, []).append(b)
            for bufs in by_dtype.values():
                flat = torch.cat([b.reshape(1, -1) for b in bufs], dim=1)
                self._comm.broadcast(flat, src=0)
                offset = 0
                for b in bufs:
                    b.copy_(flat[:, offset : offset + b[0].numel()].view_as(b))
                    offset += b[0].numel()

    # ------------------------------------------------------------------ internals
    def _sync(self, first: int = 0, last: int | None = None) -> None:
        """Re-attach parameter storage and gradients that were replaced since the last call.

        For the parameters ``[first, last)`` (default all): a parameter whose ``.data`` was
        replaced has its new values copied into ``x``; a replaced ``.grad`` is copied into
        ``g``; a ``None`` gradient becomes zeros. Afterwards every ``p`` is a view of ``x`` and
        every ``p.grad`` a view of ``g`` again.
        """
        last = len(self._params) if last is None else last
        with torch.no_grad():
            for i in range(first, last):
                name, p = self._names[i], self._params[i]
                xv, gv = self._x_views[i], self._g_views[i]
                if p.data_ptr() != xv.data_ptr():
                    new = p.detach()
                    if (tuple(new.shape), new.dtype, new.device) != (
                        tuple(xv.shape),
                        xv.dtype,
                        xv.device,
                    ):
                        raise ValueError(
                            f"parameter {name!r} was replaced by a {new.dtype} tensor of shape "
                            f"{tuple(new.shape)} on {new.device}, but the optimizer holds it as "
                            f"{xv.dtype} {tuple(xv.shape)} on {xv.device}; build the optimizer "
                            "after moving or resizing the model"
                        )
                    xv.copy_(new)
                    p.data = xv
                grad = p.grad
                if grad is gv:
                    continue
                if grad is None:
                    gv.zero_()
                elif grad.data_ptr() != gv.data_ptr() or grad.shape != gv.shape:
                    gv.copy_(_dense(grad))
                p.grad = gv

    def _trial_closure(self, closure: Callable[[], Any], loss: Any, rng: _RngState) -> LossClosure:
        """The algorithm's closure: ``loss`` (the first call's value) at x, and ``x_trial [1, D]
        -> [1]`` evaluated by the user's closure under ``no_grad`` from the RNG state ``rng``;
        the parameters, the gradient and the RNG are restored after every trial."""
        x, g = self._x, self._g
        saved: list[Tensor] = []  # x and g, copied at the first trial (most steps make none)

        def as_row(value: Any) -> Tensor:
            return torch.as_tensor(value).detach().to(x.device, x.dtype).reshape(1)

        def trial(x_trial: Tensor) -> Tensor:
            if not saved:
                saved.extend((x.clone(), g.clone()))
            saved_x, saved_g = saved
            try:
                with torch.no_grad(), rng.replay():
                    x.copy_(x_trial)
                    value = closure()
            except RuntimeError as exc:
                if "does not require grad" not in str(exc):
                    raise
                raise RuntimeError(
                    f"{self.algorithm_name}: the closure called backward() while the line search "
                    "evaluated a trial point under torch.no_grad(); call loss.backward() only when "
                    "torch.is_grad_enabled()"
                ) from exc
            finally:
                self._sync()
                with torch.no_grad():
                    x.copy_(saved_x)
                    g.copy_(saved_g)
            return as_row(value)

        return LossClosure(trial, as_row(loss))


def _normalise_groups(
    params: Iterable[Any], group_options: tuple[str, ...], algorithm: Algorithm
) -> list[dict[str, Any]]:
    """Copies of the user's groups (a list of tensors or pairs becomes one group), checked.

    Raises ``TypeError`` for a single tensor and ``ValueError`` for an empty list or a group
    option the algorithm cannot take per group (named with its group).
    """
    if isinstance(params, Tensor):
        raise TypeError(
            "params must be an iterable of tensors (e.g. model.parameters()), got a single Tensor"
        )
    items = list(params)
    if not items:
        raise ValueError("DistributedOptimizer got an empty parameter list")
    if not all(isinstance(item, dict) for item in items):
        if any(isinstance(item, dict) for item in items):
            raise TypeError("params mixes param-group dicts with tensors; give one kind")
        items = [{"params": items}]
    name = getattr(algorithm, "name", "") or type(algorithm).__name__
    fields = set(algorithm.hyperparameters())
    allowed = ", ".join(group_options) or "(none)"
    groups = []
    index = 0
    seen: set[int] = set()
    for k, item in enumerate(items):
        if "params" not in item:
            raise ValueError(f"param group {k} has no 'params' entry")
        for key in sorted(set(item) - {"params"} - set(group_options)):
            why = (
                f"{name}'s option {key!r} applies to the whole model"
                if key in fields
                else f"{name} has no option {key!r}"
            )
            raise ValueError(
                f"param group {k} sets {key!r}: {why}; a param group may set {allowed}"
            )
        group = dict(item)
        tensors = group["params"]
        group["params"] = [tensors] if isinstance(tensors, Tensor) else list(tensors)
        if not group["params"]:
            raise ValueError(f"param group {k} has no parameters")
        for entry in group["params"]:
            named = isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
            label, p = (entry[0], entry[1]) if named else (f"param{index}", entry)
            index += 1
            if not isinstance(p, Tensor):
                raise TypeError(f"parameter {label!r} is a {type(p).__name__}, not a torch.Tensor")
            if id(p) in seen:
                raise ValueError(f"parameter {label!r} appears more than once")
            seen.add(id(p))
            if not p.is_leaf:
                raise ValueError(
                    f"parameter {label!r} is not a leaf tensor (it is computed from other "
                    "tensors); pass the model's parameters"
                )
        groups.append(group)
    return groups


def _trainable(
    groups: list[dict[str, Any]],
) -> tuple[list[str], list[Tensor], list[int], list[tuple[str, Tensor]]]:
    """``(names, tensors, group index, frozen (name, tensor) pairs)`` of the groups, checked.

    Raises ``ValueError``: a parameter that is not dense floating point or differs in dtype or
    device from the first trainable one; no trainable parameter at all (repeated parameters are
    caught by :func:`_normalise_groups`).
    """
    names: list[str] = []
    tensors: list[Tensor] = []
    group_of: list[int] = []
    frozen: list[tuple[str, Tensor]] = []
    index = 0
    for k, group in enumerate(groups):
        given = group.get("param_names")
        for j, p in enumerate(group["params"]):
            name = given[j] if given else f"param{index}"
            index += 1
            if p.layout != torch.strided or not p.is_floating_point():
                raise ValueError(
                    f"parameter {name!r} must be a dense floating-point tensor, got {p.dtype} "
                    f"with layout {p.layout}"
                )
            if not p.requires_grad:
                frozen.append((name, p))
                continue
            if tensors and (p.dtype != tensors[0].dtype or p.device != tensors[0].device):
                raise ValueError(
                    "all trainable parameters must share one dtype and device (they live in one "
                    f"flat buffer): {names[0]!r} is {tensors[0].dtype} on {tensors[0].device} "
                    f"but {name!r} is {p.dtype} on {p.device}"
                )
            names.append(name)
            tensors.append(p)
            group_of.append(k)
    if not tensors:
        raise ValueError(
            "DistributedOptimizer got no trainable parameter (every one has requires_grad=False)"
        )
    return names, tensors, group_of, frozen


@dataclasses.dataclass(frozen=True)
class _RngState:
    """The global RNG state at one moment: the CPU generator's and, for parameters on an
    accelerator (CUDA, ...), that device's."""

    cpu: Tensor
    device: torch.device
    accelerator: Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
        on_device = device.type != "cpu"
        module = torch.get_device_module(device.type) if on_device else None
        return cls(torch.get_rng_state(), device, module.get_rng_state(device) if module else None)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this RNG state; afterwards the RNG is as it was before the block."""
        on_device = self.accelerator is not None
        devices = [self.device] if on_device else []
        with torch.random.fork_rng(devices, device_type=self.device.type if on_device else None):
            torch.set_rng_state(self.cpu)
            if on_device:
                torch.get_device_module(self.device.type).set_rng_state(
                    self.accelerator, self.device
                )
            yield


def _views(
    row: Tensor, numels: list[int], shapes: tuple[tuple[int, ...], ...]
) -> tuple[Tensor, ...]:
    return tuple(c.view(s) for c, s in zip(torch.split(row, numels), shapes, strict=True))


def _clone_tree(state: Any) -> Any:
    """A copy of an algorithm state whose tensors are cloned (dataclasses, tuples, lists and
    dicts are walked; anything else is shared)."""
    if isinstance(state, Tensor):
        return state.clone()
    if _is_dataclass_instance(state):
        fields = dataclasses.fields(state)
        return type(state)(**{f.name: _clone_tree(getattr(state, f.name)) for f in fields})
    if isinstance(state, dict):
        return {k: _clone_tree(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        items = [_clone_tree(v) for v in state]
        return type(state)(*items) if hasattr(state, "_fields") else type(state)(items)
    return state


def _dense(t: Tensor) -> Tensor:
    return t.to_dense() if t.layout != torch.strided else t


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _restore_like(current: Any, saved: Any) -> Any:
    """A deep copy of ``saved`` (tensors cloned onto the device of ``current``'s counterpart).

    ``current`` is the live value of the same slot (or None): a dataclass state is rebuilt with
    :func:`state_from_dict` (which checks the field names); containers are copied recursively.
    """
    if _is_dataclass_instance(current):
        if not isinstance(saved, dict):
            raise ValueError(
                f"the saved state is a {type(saved).__name__}, expected the fields of "
                f"{type(current).__name__}"
            )
        fields = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        return state_from_dict(
            type(current), {k: _restore_like(fields.get(k), v) for k, v in saved.items()}
        )
    if isinstance(saved, Tensor):
        device = current.device if isinstance(current, Tensor) else saved.device
        return saved.detach().to(device, copy=True)
    if isinstance(saved, dict):
        cur = current if isinstance(current, dict) else {}
        return {k: _restore_like(cur.get(k), v) for k, v in saved.items()}
    if isinstance(saved, list | tuple):
        cur = current if isinstance(current, list | tuple) and len(current) == len(saved) else None
        items = [_restore_like(cur[i] if cur else None, v) for i, v in enumerate(saved)]
        return type(saved)(items) if not hasattr(saved, "_fields") else type(saved)(*items)
    return copy.deepcopy(saved)
