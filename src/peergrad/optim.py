"""Drop-in optimizer for your own training loop: :class:`DistributedOptimizer`.

``DistributedOptimizer`` runs any peergrad algorithm (D-PSGD, all-reduce SGD, ...) behind the
``torch.optim`` calling convention, so an existing PyTorch loop becomes a decentralized one by
swapping the optimizer. Under ``torchrun`` every process is one worker::

    from peergrad.comm import distributed
    distributed.init_process_group()                    # reads torchrun's environment
    comm = distributed.DistributedCommunicator(make_topology("ring", world_size))
    opt = DistributedOptimizer(model.parameters(), "dpsgd", comm, lr=0.1, momentum=0.9)
    for xb, yb in loader:
        opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()

How it works. At construction the parameters are copied into one flat buffer ``x`` (shape
``[1, D]``: the worker axis of the distributed engine has size 1, see :mod:`peergrad.comm.base`)
and each parameter's ``.data`` becomes a view of its slice of ``x``; likewise every ``.grad``
becomes a view of a flat gradient buffer ``g`` (``[1, D]``). ``loss.backward()`` therefore
accumulates straight into ``g``, and the algorithm's in-place update of ``x`` *is* the update of
the model: no flattening copies per step, and one message per neighbour carries the whole model.

Update contract. ``opt.step()`` is one iteration of the algorithm: it takes the gradient the user
accumulated since the last ``zero_grad`` (evaluated at the current parameters), does the
communication the paper does in one iteration (a gossip with the neighbours of W(k), or an
all-reduce) and updates the parameters in place. Every worker must call ``step`` the same number
of times (the communication is collective). ``comm.bytes_sent`` counts the bytes this worker sent.

Mapping onto ``torch.optim``:

- ``DistributedOptimizer(params, algorithm, comm, **options)`` plays the part of
  ``torch.optim.SGD(params, **options)``; ``params`` is an iterable of tensors, of ``(name,
  tensor)`` pairs (``model.named_parameters()``, which gives better error messages), or of
  param-group dicts with only a ``"params"`` key.
- ``step(closure=None)``, ``zero_grad(set_to_none=True)``, ``state_dict()``,
  ``load_state_dict(sd)`` behave like torch.optim's, with the deviations below.
- ``algorithm`` may be a registered name (``peergrad algorithms`` lists them; ``options`` are its
  hyper-parameters) or an :class:`~peergrad.algorithms.Algorithm` instance.

Only the parameters passed in are communicated. Module buffers (BatchNorm running statistics)
stay local to each worker; use GroupNorm, ``BatchNorm(track_running_stats=False)`` or average
them yourself. Workers should start from identical parameters (seed the model identically on
every rank): all-reduce SGD keeps workers identical only if they start identical.

Deviations from ``torch.optim``:

- ``zero_grad(set_to_none=True)`` zeroes the flat gradient in place and keeps the ``.grad``
  views: the gradient buffer is the communication buffer, so it is never freed. ``set_to_none``
  is accepted for compatibility only.
- A parameter whose ``.grad`` is ``None`` at ``step`` contributes a zero gradient; it is still
  gossiped, and momentum and weight decay still apply (torch.optim would skip it). Frozen
  parameters (``requires_grad=False``) are therefore rejected: pass only trainable ones.
- No per-group hyper-parameters: one algorithm with one set of options updates every parameter.
  There is no ``param_groups`` list, so ``torch.optim.lr_scheduler`` does not apply; change the
  learning rate with :meth:`DistributedOptimizer.set_options` (``opt.set_options(lr=...)``).
- All parameters must share one dtype and one device (they live in one flat buffer).
- No overlap of communication with the backward pass: ``step`` does the whole iteration (the
  combine-then-adapt gossip that ``Algorithm.pre_gradient`` can start early is started inside
  ``step``; the result is the same, only slower on a slow network).
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
- ``load_state_dict`` restores the algorithm's options saved with the state (as torch.optim
  restores ``lr`` and friends), the flat parameters (the model sees them) and the byte counters.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Algorithm,
    LossClosure,
    bind_run,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.registry import make_algorithm
from peergrad.comm.base import Communicator

__all__ = ["STATE_DICT_FORMAT", "DistributedOptimizer", "collect_parameters"]

_AUTO_NAME = re.compile(r"param\d+")  # the name collect_parameters gives an unnamed tensor

#: Value of the ``"format"`` key of :meth:`DistributedOptimizer.state_dict`.
STATE_DICT_FORMAT = "peergrad.optim.DistributedOptimizer/1"

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


def collect_parameters(params: Iterable[Any]) -> tuple[list[str], list[Tensor]]:
    """Flatten ``params`` (tensors, ``(name, tensor)`` pairs or ``{"params": ...}`` groups).

    Returns ``(names, tensors)`` in order; unnamed tensors are called ``param<i>``.

    Raises:
        TypeError: ``params`` is a single tensor, or an entry is not a tensor.
        ValueError: the list is empty; a group sets options besides ``"params"``; a parameter is
            not a leaf, does not require grad, is not a dense floating-point tensor, appears
            twice, or differs in dtype or device from the first one.
    """
    if isinstance(params, Tensor):
        raise TypeError(
            "params must be an iterable of tensors (e.g. model.parameters()), got a single Tensor"
        )
    entries: list[Any] = []
    for k, item in enumerate(list(params)):
        if isinstance(item, dict):
            extra = sorted(set(item) - {"params"})
            if extra:
                raise ValueError(
                    f"param group {k} sets {', '.join(extra)}: per-group options are not "
                    "supported; the algorithm's options apply to every parameter"
                )
            if "params" not in item:
                raise ValueError(f"param group {k} has no 'params' entry")
            group = item["params"]
            entries.extend([group] if isinstance(group, Tensor) else list(group))
        else:
            entries.append(item)
    if not entries:
        raise ValueError("DistributedOptimizer got an empty parameter list")

    names: list[str] = []
    tensors: list[Tensor] = []
    seen: dict[int, str] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            name, p = entry
        else:
            name, p = f"param{i}", entry
        if not isinstance(p, Tensor):
            raise TypeError(f"parameter {name!r} is a {type(p).__name__}, not a torch.Tensor")
        if id(p) in seen:
            raise ValueError(f"parameter {name!r} appears more than once (also as {seen[id(p)]!r})")
        if not p.is_leaf:
            raise ValueError(
                f"parameter {name!r} is not a leaf tensor (it is computed from other tensors); "
                "pass the model's parameters"
            )
        if not p.requires_grad:
            raise ValueError(
                f"parameter {name!r} does not require grad; a frozen parameter would still be "
                "gossiped and decayed, so pass only trainable parameters "
                "([p for p in model.parameters() if p.requires_grad])"
            )
        if p.layout != torch.strided or not p.is_floating_point():
            raise ValueError(
                f"parameter {name!r} must be a dense floating-point tensor, got {p.dtype} "
                f"with layout {p.layout}"
            )
        if tensors and (p.dtype != tensors[0].dtype or p.device != tensors[0].device):
            raise ValueError(
                "all parameters must share one dtype and device (they live in one flat buffer): "
                f"{names[0]!r} is {tensors[0].dtype} on {tensors[0].device} but {name!r} is "
                f"{p.dtype} on {p.device}"
            )
        seen[id(p)] = name
        names.append(name)
        tensors.append(p)
    return names, tensors


class DistributedOptimizer:
    """Run a peergrad algorithm as a ``torch.optim``-style optimizer (one worker per process).

    Args:
        params: the parameters to train (see :func:`collect_parameters`): tensors, ``(name,
            tensor)`` pairs or ``{"params": [...]}`` groups, all trainable leaves of one
            floating dtype on one device.
        algorithm: a registered algorithm name (``"dpsgd"``, ``"allreduce"``, ...) or an
            :class:`~peergrad.algorithms.Algorithm` instance.
        comm: a communicator holding exactly one worker: a
            :class:`~peergrad.comm.distributed.DistributedCommunicator` under torchrun, or a
            :class:`~peergrad.comm.SimulatedCommunicator` on a 1-worker topology.
        **algorithm_options: hyper-parameters of a named algorithm (``lr``, ``momentum``, ...).

    Attributes (read-only properties): ``algorithm``, ``comm``, ``state`` (the algorithm's state),
    ``flat_params`` (``x``, ``[1, D]``, the parameters' storage), ``flat_grad`` (``g``,
    ``[1, D]``, the gradients' storage), ``params``, ``param_names``, ``num_steps``.

    Raises:
        ValueError: invalid parameters (see :func:`collect_parameters`); options given together
            with an algorithm instance; an unknown algorithm name or option; a communicator that
            holds more than one worker; a topology the algorithm rejects.
        TypeError: ``params`` entries that are not tensors.
    """

    def __init__(
        self,
        params: Iterable[Any],
        algorithm: Algorithm | str,
        comm: Communicator,
        **algorithm_options: Any,
    ) -> None:
        if isinstance(algorithm, str):
            algorithm = make_algorithm(algorithm, **algorithm_options)
        elif algorithm_options:
            raise ValueError(
                f"options {sorted(algorithm_options)} were given together with an algorithm "
                "instance; set them on the instance or pass the algorithm's name"
            )
        w = int(comm.worker_ids.numel())
        if w != 1:
            raise ValueError(
                f"DistributedOptimizer runs one worker per process, but the communicator holds "
                f"{w} workers; use a DistributedCommunicator under torchrun (or a 1-worker "
                "topology), and peergrad.train for simulated multi-worker runs"
            )
        algorithm.check_topology(comm)
        names, tensors = collect_parameters(params)
        algorithm = bind_run(algorithm, segments=[p.numel() for p in tensors])
        self._algorithm = algorithm
        self._comm = comm
        self._names = tuple(names)
        self._params = tuple(tensors)
        self._shapes = tuple(tuple(p.shape) for p in tensors)
        numels = [p.numel() for p in tensors]
        first = tensors[0]
        self._x = torch.empty(1, sum(numels), dtype=first.dtype, device=first.device)
        self._g = torch.zeros_like(self._x)
        self._x_views = _views(self._x[0], numels, self._shapes)
        self._g_views = _views(self._g[0], numels, self._shapes)
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
        self._state = algorithm.init(self._x, comm)
        self._steps = 0

    # ------------------------------------------------------------------ properties
    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    @property
    def comm(self) -> Communicator:
        return self._comm

    @property
    def state(self) -> Any:
        """The algorithm's state (replaced by every :meth:`step`)."""
        return self._state

    @property
    def flat_params(self) -> Tensor:
        """``x``, shape ``[1, D]``: the storage of every parameter (writes change the model)."""
        return self._x

    @property
    def flat_grad(self) -> Tensor:
        """``g``, shape ``[1, D]``: the storage of every parameter's ``.grad``."""
        return self._g

    @property
    def params(self) -> tuple[Tensor, ...]:
        return self._params

    @property
    def param_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def num_steps(self) -> int:
        """Number of :meth:`step` calls so far (restored by :meth:`load_state_dict`)."""
        return self._steps

    @property
    def algorithm_name(self) -> str:
        return getattr(self._algorithm, "name", "") or type(self._algorithm).__name__

    def __repr__(self) -> str:
        return (
            f"DistributedOptimizer({self._algorithm!r}, {len(self._params)} parameters, "
            f"D={self._x.shape[1]}, worker {int(self._comm.worker_ids[0])} of "
            f"{self._comm.n_workers})"
        )

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
        copied into ``g`` and the views re-attached; a missing gradient counts as zeros.

        Raises:
            ValueError: a line-search algorithm stepped without a closure (or with one that
                returns ``None``); a parameter's storage was replaced by a tensor of another
                shape, dtype or device (e.g. ``model.to(...)`` after the optimizer was built).
            RuntimeError: the closure called ``backward()`` while evaluating a trial point.
            peergrad.comm.PeerFailure: on the distributed engine, a peer died or stopped answering.
        """
        line_search = getattr(self._algorithm, "needs_closure", False)
        if line_search and closure is None:
            raise ValueError(
                f"{self.algorithm_name} runs a line search: call step(closure) with a closure "
                "that zeroes the gradients, computes the minibatch loss, calls loss.backward() "
                "only when torch.is_grad_enabled(), and returns the loss"
            )
        begin_step = getattr(self._comm, "begin_step", None)
        if begin_step is not None:
            begin_step(self._steps + 1)
        loss, trial = None, None
        if closure is not None:
            rng = _RngState.capture(self._x.device)  # before the first call: trials replay it
            with torch.enable_grad():
                loss = closure()
            if loss is not None:
                trial = self._trial_closure(closure, loss, rng)
            elif line_search:
                raise ValueError(f"{self.algorithm_name}: the closure returned None, not the loss")
        self._sync()
        with torch.no_grad():
            self._state = self._algorithm.step(
                self._x, self._g, self._state, self._comm, closure=trial
            )
        self._steps += 1
        return loss

    def set_options(self, **changes: Any) -> None:
        """Change hyper-parameters between steps, e.g. ``opt.set_options(lr=0.01)``.

        The algorithm (a frozen dataclass) is replaced by a copy with ``changes``; the state is
        kept. Raises ``ValueError`` for an unknown option or an invalid value.
        """
        fields = {f.name for f in dataclasses.fields(self._algorithm)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(
                f"algorithm {self.algorithm_name!r} has no option(s) {', '.join(unknown)}; its "
                f"options are: {', '.join(sorted(fields)) or '(none)'}"
            )
        self._algorithm = dataclasses.replace(self._algorithm, **changes)  # type: ignore[type-var]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly, as a new dict of cloned tensors.

        Keys: ``format``, ``algorithm`` (name), ``options`` (hyper-parameters), ``state`` (the
        algorithm state as a dict, tensors cloned), ``num_steps``, ``param_names``,
        ``param_shapes`` (tuples), ``num_params``, ``flat_params`` (``[1, D]``), ``worker_ids``,
        ``bytes_sent`` (float64 ``[1]``, bytes), ``simulated_comm_time_s`` (seconds), ``rounds``.
        Only plain containers, numbers, strings and tensors: loadable with
        ``torch.load(..., weights_only=True)``. Each worker saves its own.
        """
        from peergrad.train.checkpoint import to_plain  # lazy: keeps this import light

        self._sync()
        state = self._state
        payload = state_to_dict(state) if _is_dataclass_instance(state) else state
        options = self._algorithm.options() if hasattr(self._algorithm, "options") else {}
        comm = self._comm
        return {
            "format": STATE_DICT_FORMAT,
            "algorithm": self.algorithm_name,
            "options": dict(options),
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
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: parameters (in place), state, options and counters.

        Everything is checked before anything changes.

        Raises:
            ValueError: missing keys; another algorithm; a different number of parameters or
                the first parameter whose shape differs (named); a parameter saved under another
                name (when both sides have real names, e.g. from ``named_parameters()``); a
                state dict saved by another worker; a state that does not fit the algorithm's
                state type or a state tensor whose shape or dtype differs (named).
        """
        from peergrad.train.checkpoint import restore_into  # lazy: keeps this import light

        sd = state_dict
        missing = [k for k in _REQUIRED_KEYS if k not in sd]
        if missing:
            raise ValueError(f"not a DistributedOptimizer state dict: missing {', '.join(missing)}")
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
        algorithm = self._algorithm
        options = dict(sd["options"])
        if options and _is_dataclass_instance(algorithm) and options != algorithm.options():
            algorithm = dataclasses.replace(algorithm, **options)  # type: ignore[type-var]
        current = self._state
        if _is_dataclass_instance(current) and isinstance(sd["state"], dict):
            fields = dict(sd["state"])
            if "__dataclass__" not in fields:  # the top level is a dict of fields
                fields = {"__dataclass__": type(current).__name__, "fields": fields}
            # Restored into a copy: nothing changes unless every field fits.
            state = restore_into(copy.deepcopy(current), fields, f"{self.algorithm_name} state")
        else:
            state = _restore_like(current, sd["state"])

        self._sync()
        with torch.no_grad():
            self._x.copy_(flat)
            self._comm.bytes_sent.copy_(bytes_sent)
        if "simulated_comm_time_s" in sd and hasattr(self._comm, "simulated_comm_time_s"):
            self._comm.simulated_comm_time_s = float(sd["simulated_comm_time_s"])
        if "rounds" in sd and hasattr(self._comm, "rounds"):
            self._comm.rounds = int(sd["rounds"])  # type: ignore[attr-defined]
        self._algorithm = algorithm
        self._state = state
        self._steps = int(sd["num_steps"])

    # ------------------------------------------------------------------ internals
    def _sync(self) -> None:
        """Re-attach parameter storage and gradients that were replaced since the last call.

        A parameter whose ``.data`` was replaced has its new values copied into ``x``; a
        replaced ``.grad`` is copied into ``g``; a ``None`` gradient becomes zeros. Afterwards
        every ``p`` is a view of ``x`` and every ``p.grad`` a view of ``g`` again.
        """
        with torch.no_grad():
            for name, p, xv, gv in zip(
                self._names, self._params, self._x_views, self._g_views, strict=True
            ):
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
