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

Overlap (``overlap``): messages are sent early, during the user's forward and backward pass, and
whatever the user changes around ``backward()`` and ``step()`` is checked at ``step``; the
semantics, the defaults per device and what a user must know are documented in
:mod:`peergrad.optim.overlap`. Gradient clipping, mixed precision (``GradScaler``) and module
buffers: :mod:`peergrad.optim.optimizer`.

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

Elastic training (issue 29): on an :class:`~peergrad.comm.elastic.ElasticCommunicator`, wrap
each step of your loop in ``with loop.step():`` of an :class:`ElasticLoop` around the optimizer;
a worker may then die and the others go on, and a restarted worker rejoins from a live peer
(:mod:`peergrad.optim.elastic`).

Layout of the package (all public names are exported here, as when ``peergrad.optim`` was one
module):

- :mod:`peergrad.optim.optimizer`: :class:`DistributedOptimizer` proper (the flat buffer
  binding, the step contract), assembled from the mixins below (issue 25);
- :mod:`peergrad.optim.overlap`: the overlap machinery (buckets, gradient hooks, the
  communication thread, the round and its hazard checks);
- :mod:`peergrad.optim.groups`: param groups, trainable parameters, the flat buffer's views, the
  segments of x, the per-group algorithms and ``set_options``;
- :mod:`peergrad.optim.state`: ``state_dict``/``load_state_dict`` and state copies;
- :mod:`peergrad.optim.line_search`: the closure and the RNG replay of line searches;
- :mod:`peergrad.optim.amp`: gradient clipping and mixed precision (``GradScaler``);
- :mod:`peergrad.optim.buffers`: the module's buffers (``buffers=``);
- :mod:`peergrad.optim.elastic`: :class:`ElasticLoop`, elastic training from your own loop on
  the elastic engine (torchft: a worker may die, a restarted one rejoins from a live peer;
  issue 29);
- :mod:`peergrad.comm.segments`: the segments' communicators, byte settlement, state split/merge
  and the communication thread (below ``optim/``).
"""

from __future__ import annotations

from peergrad.optim.elastic import ElasticLoop
from peergrad.optim.groups import GROUP_OPTIONS
from peergrad.optim.groups import _check_positive as _check_positive
from peergrad.optim.groups import _dense as _dense
from peergrad.optim.groups import _normalise_groups as _normalise_groups
from peergrad.optim.groups import _Segment as _Segment
from peergrad.optim.groups import _trainable as _trainable
from peergrad.optim.groups import _views as _views
from peergrad.optim.line_search import _RngState as _RngState
from peergrad.optim.optimizer import BUFFER_MODES, DistributedOptimizer
from peergrad.optim.state import _AUTO_NAME as _AUTO_NAME
from peergrad.optim.state import _FORMATS as _FORMATS
from peergrad.optim.state import _REQUIRED_KEYS as _REQUIRED_KEYS
from peergrad.optim.state import STATE_DICT_FORMAT
from peergrad.optim.state import _is_dataclass_instance as _is_dataclass_instance
from peergrad.optim.state import _restore_like as _restore_like
from peergrad.optim.state import clone_tree as clone_tree

__all__ = [
    "STATE_DICT_FORMAT",
    "DistributedOptimizer",
    "ElasticLoop",
    "GROUP_OPTIONS",
    "BUFFER_MODES",
]
