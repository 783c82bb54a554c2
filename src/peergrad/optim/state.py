"""``state_dict``/``load_state_dict`` of :class:`~peergrad.optim.DistributedOptimizer` (the
mixin :class:`_Checkpointing`) and copies of algorithm states.

The state dict stores the algorithm's state for the whole buffer (the segments' states merged by
:func:`peergrad.comm.segments.merge_state`), so a checkpoint does not depend on the buckets.
:meth:`_Checkpointing._checked_state` checks a state dict against the optimizer before anything
changes (``load_state_dict`` then applies it). :func:`clone_tree` copies a state (the round's
snapshots of a bucket, :mod:`peergrad.optim.overlap`); :func:`_restore_like` rebuilds a saved
one. The RNG replay of line searches moved to :mod:`peergrad.optim.line_search` (issue 25;
:class:`_RngState` is still importable from here). This module does not import the optimizer:
the mixin declares what it uses of it.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm, state_from_dict, state_to_dict
from peergrad.comm.base import Communicator
from peergrad.comm.segments import split_state
from peergrad.optim.groups import _Segment
from peergrad.optim.line_search import _RngState as _RngState

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


class _Checkpointing:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: :meth:`state_dict` and
    :meth:`load_state_dict`.

    It uses the optimizer's buffers and records (``_x`` ``[1, D]``, ``_comm``, ``_base``,
    ``_steps``, ``_names``, ``_shapes``, ``_params``, ``_segments``, ``_cached_values``,
    ``param_groups``), its properties ``algorithm_state`` and ``algorithm_name`` and its methods
    ``synchronize``, ``_sync``, ``_seg_bounds``, ``_refresh_algorithms`` and (from
    :mod:`peergrad.optim.overlap`) ``_post_pre_gradient`` and ``_start_round``.
    """

    _x: Tensor
    _comm: Communicator
    _base: Algorithm
    _steps: int
    _names: tuple[str, ...]
    _shapes: tuple[tuple[int, ...], ...]
    _params: tuple[Tensor, ...]
    _segments: list[_Segment]
    _cached_values: Any
    param_groups: list[dict[str, Any]]

    if TYPE_CHECKING:  # the optimizer's (see the class docstring); no runtime effect

        @property
        def algorithm_state(self) -> Any: ...
        @property
        def algorithm_name(self) -> str: ...
        def synchronize(self) -> None: ...
        def _sync(self, first: int = 0, last: int | None = None) -> None: ...
        def _seg_bounds(self) -> list[tuple[int, int]]: ...
        def _refresh_algorithms(self) -> None: ...
        def _post_pre_gradient(self) -> None: ...
        def _start_round(self) -> None: ...

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
        from peergrad.train.checkpoint import drain_in_flight, to_plain  # lazy: keeps it light

        self._sync()
        drain_in_flight(self._comm)  # means posted with mean_start land in the state first
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
        sd = state_dict
        base, state, flat, bytes_sent, saved_groups = self._checked_state(sd)
        self.synchronize()
        self._sync()
        with torch.no_grad():
            self._x.copy_(flat)
            self._comm.bytes_sent.copy_(bytes_sent)
        if "simulated_comm_time_s" in sd and hasattr(self._comm, "simulated_comm_time_s"):
            self._comm.simulated_comm_time_s = float(sd["simulated_comm_time_s"])
        if "rounds" in sd and hasattr(self._comm, "rounds"):
            self._comm.rounds = int(sd["rounds"])
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

    def _checked_state(
        self, sd: dict[str, Any]
    ) -> tuple[Any, Any, Tensor, Tensor, list[dict[str, Any]] | None]:
        """Check ``sd`` against the optimizer (see :meth:`load_state_dict`) without changing
        anything; returns ``(algorithm, state, flat_params, bytes_sent, param_groups)``."""
        from peergrad.train.checkpoint import restore_into  # lazy: keeps this import light

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
        self._check_params(sd)
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
            base = dataclasses.replace(base, **options)
        current = self.algorithm_state
        if _is_dataclass_instance(current) and isinstance(sd["state"], dict):
            fields = dict(sd["state"])
            if "__dataclass__" not in fields:  # the top level is a dict of fields
                fields = {"__dataclass__": type(current).__name__, "fields": fields}
            # Restored into a copy: nothing changes unless every field fits.
            state = restore_into(copy.deepcopy(current), fields, f"{self.algorithm_name} state")
        else:
            state = _restore_like(current, sd["state"])
        return base, state, flat, bytes_sent, saved_groups

    def _check_params(self, sd: dict[str, Any]) -> None:
        """The saved parameters' number, shapes and names against the optimizer's."""
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


def clone_tree(state: Any) -> Any:
    """A copy of an algorithm state whose tensors are cloned (dataclasses, tuples, lists and
    dicts are walked; anything else is shared)."""
    if isinstance(state, Tensor):
        return state.clone()
    if _is_dataclass_instance(state):
        fields = dataclasses.fields(state)
        return type(state)(**{f.name: clone_tree(getattr(state, f.name)) for f in fields})
    if isinstance(state, dict):
        return {k: clone_tree(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        items = [clone_tree(v) for v in state]
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
