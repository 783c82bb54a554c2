"""``state_dict``/``load_state_dict`` of :class:`~peergrad.optim.DistributedOptimizer`, copies of
algorithm states, and the RNG replay of line searches.

The state dict stores the algorithm's state for the whole buffer (the segments' states merged by
:func:`peergrad.comm.segments.merge_state`), so a checkpoint does not depend on the buckets.
:func:`_checked_state` checks a state dict against an optimizer before anything changes (the
optimizer then applies it). :func:`_clone_tree` copies a state (the round's snapshots of a
bucket, :mod:`peergrad.optim.overlap`); :func:`_restore_like` rebuilds a saved one.
:class:`_RngState` and :func:`_trial_closure` let a line search re-evaluate the user's closure at
trial points with the randomness of its first call.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.algorithms.base import LossClosure, state_from_dict, state_to_dict

if TYPE_CHECKING:
    from peergrad.optim.optimizer import DistributedOptimizer

_AUTO_NAME = re.compile(r"param\d+")  # the name given to an unnamed tensor

#: Value of the ``"format"`` key of :meth:`DistributedOptimizer.state_dict` (``/1`` still loads).
STATE_DICT_FORMAT = "peergrad.optim.DistributedOptimizer/2"
_FORMATS = (STATE_DICT_FORMAT, "peergrad.optim.DistributedOptimizer/1")

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


def _state_dict(opt: DistributedOptimizer) -> dict[str, Any]:
    """The body of :meth:`DistributedOptimizer.state_dict` (see there)."""
    from peergrad.train.checkpoint import to_plain  # lazy: keeps this import light

    opt._sync()
    state = opt.algorithm_state
    payload = state_to_dict(state) if _is_dataclass_instance(state) else state
    comm = opt._comm
    groups, index = [], 0
    for group in opt.param_groups:
        saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
        saved["params"] = list(range(index, index + len(group["params"])))
        index += len(group["params"])
        groups.append(saved)
    return {
        "format": STATE_DICT_FORMAT,
        "algorithm": opt.algorithm_name,
        "options": dict(opt._base.options()),
        "state": to_plain(payload),
        "num_steps": opt._steps,
        "param_names": list(opt._names),
        "param_shapes": [tuple(s) for s in opt._shapes],
        "num_params": len(opt._params),
        "flat_params": opt._x.detach().clone(),
        "worker_ids": [int(i) for i in comm.worker_ids.tolist()],
        "bytes_sent": comm.bytes_sent.detach().clone(),
        "simulated_comm_time_s": float(getattr(comm, "simulated_comm_time_s", 0.0)),
        "rounds": int(getattr(comm, "rounds", 0)),
        "param_groups": groups,
    }


def _checked_state(
    opt: DistributedOptimizer, sd: dict[str, Any]
) -> tuple[Any, Any, Tensor, Tensor, list[dict[str, Any]] | None]:
    """Check ``sd`` against ``opt`` (see :meth:`DistributedOptimizer.load_state_dict`) without
    changing anything; returns ``(algorithm, state, flat_params, bytes_sent, param_groups)``."""
    from peergrad.train.checkpoint import restore_into  # lazy: keeps this import light

    missing = [k for k in _REQUIRED_KEYS if k not in sd]
    if missing:
        raise ValueError(f"not a DistributedOptimizer state dict: missing {', '.join(missing)}")
    if sd.get("format", STATE_DICT_FORMAT) not in _FORMATS:
        raise ValueError(
            f"unknown state dict format {sd.get('format')!r}; this version reads "
            f"{', '.join(_FORMATS)}"
        )
    if sd["algorithm"] != opt.algorithm_name:
        raise ValueError(
            f"the state dict is for algorithm {sd['algorithm']!r}, but this optimizer runs "
            f"{opt.algorithm_name!r}"
        )
    _check_params(opt, sd)
    mine_ids = [int(i) for i in opt._comm.worker_ids.tolist()]
    if list(sd["worker_ids"]) != mine_ids:
        raise ValueError(
            f"the state dict was saved by worker(s) {list(sd['worker_ids'])}, this optimizer "
            f"is worker(s) {mine_ids}; load each worker's own state dict"
        )
    flat = sd["flat_params"]
    if tuple(flat.shape) != tuple(opt._x.shape):
        raise ValueError(
            f"flat_params has shape {tuple(flat.shape)}, expected {tuple(opt._x.shape)}"
        )
    bytes_sent = sd["bytes_sent"]
    if tuple(bytes_sent.shape) != tuple(opt._comm.bytes_sent.shape):
        raise ValueError(
            f"bytes_sent has shape {tuple(bytes_sent.shape)}, expected "
            f"{tuple(opt._comm.bytes_sent.shape)}"
        )
    saved_groups = sd.get("param_groups")
    if saved_groups is not None:
        sizes = [len(g["params"]) for g in saved_groups]
        mine_sizes = [len(g["params"]) for g in opt.param_groups]
        if sizes != mine_sizes:
            raise ValueError(
                f"the state dict has param groups of sizes {sizes}, this optimizer {mine_sizes}"
            )
    base = opt._base
    options = dict(sd["options"])
    if options and _is_dataclass_instance(base) and options != base.options():
        base = dataclasses.replace(base, **options)  # type: ignore[type-var]
    current = opt.algorithm_state
    if _is_dataclass_instance(current) and isinstance(sd["state"], dict):
        fields = dict(sd["state"])
        if "__dataclass__" not in fields:  # the top level is a dict of fields
            fields = {"__dataclass__": type(current).__name__, "fields": fields}
        # Restored into a copy: nothing changes unless every field fits.
        state = restore_into(copy.deepcopy(current), fields, f"{opt.algorithm_name} state")
    else:
        state = _restore_like(current, sd["state"])
    return base, state, flat, bytes_sent, saved_groups


def _check_params(opt: DistributedOptimizer, sd: dict[str, Any]) -> None:
    """The saved parameters' number, shapes and names against ``opt``'s."""
    shapes = [tuple(int(d) for d in s) for s in sd["param_shapes"]]
    saved_names = list(sd["param_names"])
    if len(shapes) != len(opt._shapes):
        raise ValueError(
            f"the state dict holds {len(shapes)} parameters, this optimizer {len(opt._shapes)}"
        )
    for i, (name, mine, theirs) in enumerate(zip(opt._names, opt._shapes, shapes, strict=True)):
        if mine != theirs:
            saved = saved_names[i] if i < len(saved_names) else "?"
            raise ValueError(
                f"parameter {name!r} (index {i}) has shape {mine} here but {theirs} in the "
                f"state dict (saved as {saved!r})"
            )
    for i, (name, saved) in enumerate(zip(opt._names, saved_names, strict=False)):
        if name != saved and not _AUTO_NAME.fullmatch(name) and not _AUTO_NAME.fullmatch(saved):
            raise ValueError(
                f"parameter {i} is named {name!r} here but {saved!r} in the state dict: it was "
                "saved from another model (or the parameters are in another order)"
            )


def _trial_closure(
    opt: DistributedOptimizer, closure: Callable[[], Any], loss: Any, rng: _RngState
) -> LossClosure:
    """The algorithm's closure: ``loss`` (the first call's value) at x, and ``x_trial [1, D]
    -> [1]`` evaluated by the user's closure under ``no_grad`` from the RNG state ``rng``;
    the parameters, the gradient and the RNG are restored after every trial."""
    x, g = opt._x, opt._g
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
                f"{opt.algorithm_name}: the closure called backward() while the line search "
                "evaluated a trial point under torch.no_grad(); call loss.backward() only when "
                "torch.is_grad_enabled()"
            ) from exc
        finally:
            opt._sync()
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
        cur: Any = current if isinstance(current, dict) else {}  # a list or tuple below
        return {k: _restore_like(cur.get(k), v) for k, v in saved.items()}
    if isinstance(saved, list | tuple):
        cur = current if isinstance(current, list | tuple) and len(current) == len(saved) else None
        items = [_restore_like(cur[i] if cur else None, v) for i, v in enumerate(saved)]
        return type(saved)(items) if not hasattr(saved, "_fields") else type(saved)(*items)
    return copy.deepcopy(saved)
