"""Param groups, the trainable parameters and the flat buffer's views, for
:class:`~peergrad.optim.DistributedOptimizer`.

The user's ``params`` (tensors, ``(name, tensor)`` pairs or group dicts) become checked copies of
the groups (:func:`_normalise_groups`); their trainable parameters, in x's order, with their
names and groups (:func:`_trainable`); one algorithm per group from the groups' option values
(:func:`_group_algorithms`, kept current by the mixin :class:`_GroupOptions`, which also holds
``set_options``); and the views of the flat buffers ``x`` and ``g`` that the
parameters and their ``.grad`` are bound to (:func:`_views`, re-attached by :func:`_reattach`).
A :class:`_Segment` is a column range of x stepped by one algorithm copy: one per param group,
or one per bucket with the gradient hooks (:mod:`peergrad.optim.overlap`).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm

#: Options a param group may set, where the algorithm has them.
GROUP_OPTIONS = ("lr", "momentum", "weight_decay")


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


def _group_algorithms(
    base: Algorithm,
    values: list[dict[str, Any]],
    *,
    coordinatewise: bool,
    group_options: tuple[str, ...],
    name: str,
) -> list[Algorithm]:
    """One algorithm per param group, from the groups' option ``values``.

    Raises ``ValueError`` naming the group: a value the algorithm rejects, or (for an
    algorithm that is not coordinate-wise) values that differ between groups.
    """
    n_groups = len(values)
    if not coordinatewise:
        for k, v in enumerate(values[1:], start=1):
            for opt in group_options:
                if v[opt] != values[0][opt]:
                    raise ValueError(
                        f"param group {k} sets {opt}={v[opt]!r} but group 0 has "
                        f"{values[0][opt]!r}: {name} is not coordinate-wise "
                        "(its compressor, clipping or line search couples all coordinates), "
                        f"so every group must use the same {opt}"
                    )
        values = values[:1]
    algorithms = []
    for k, v in enumerate(values):
        changes = {opt: val for opt, val in v.items() if getattr(base, opt) != val}
        # lr = 0 is a valid torch.optim value (warm-up from 0, cosine to 0): the step is x
        zero_lr = "lr" in changes and changes["lr"] == 0 and not isinstance(changes["lr"], bool)
        if zero_lr:
            changes["lr"] = base.lr  # type: ignore[attr-defined]
        try:
            algorithm = dataclasses.replace(base, **changes) if changes else base
        except (ValueError, TypeError) as exc:
            raise ValueError(f"param group {k}: {exc}") from None
        if zero_lr:
            algorithm = copy.copy(algorithm)
            object.__setattr__(algorithm, "lr", 0.0)
        algorithms.append(algorithm)
    if not coordinatewise:
        algorithms = algorithms * n_groups
    return algorithms


def _reattach(
    names: Sequence[str],
    params: Sequence[Tensor],
    x_views: Sequence[Tensor],
    g_views: Sequence[Tensor],
    first: int,
    last: int,
) -> None:
    """Re-attach parameter storage and gradients that were replaced (parameters ``[first,
    last)``): see :meth:`DistributedOptimizer._sync <peergrad.optim.DistributedOptimizer>`."""
    with torch.no_grad():
        for i in range(first, last):
            name, p = names[i], params[i]
            xv, gv = x_views[i], g_views[i]
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


def _views(
    row: Tensor, numels: list[int], shapes: tuple[tuple[int, ...], ...]
) -> tuple[Tensor, ...]:
    return tuple(c.view(s) for c, s in zip(torch.split(row, numels), shapes, strict=True))


def _dense(t: Tensor) -> Tensor:
    return t.to_dense() if t.layout != torch.strided else t


def _flat_buffers(
    tensors: Sequence[Tensor], shapes: tuple[tuple[int, ...], ...]
) -> tuple[Tensor, Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """``x`` (uninitialised) and ``g`` (zeros), ``[1, D]`` on the parameters' dtype and
    device, and their views shaped like the parameters."""
    numels = [p.numel() for p in tensors]
    first = tensors[0]
    D = sum(numels)
    x = torch.empty(1, D, dtype=first.dtype, device=first.device)
    g = torch.zeros_like(x)
    return x, g, _views(x[0], numels, shapes), _views(g[0], numels, shapes)


def _bind(params: Sequence[Tensor], x_views: Sequence[Tensor], g_views: Sequence[Tensor]) -> None:
    """Copy the parameters (and gradients) into their views; make ``p.data`` and ``p.grad``
    those views."""
    with torch.no_grad():
        for p, xv, gv in zip(params, x_views, g_views, strict=True):
            xv.copy_(p.detach())
            if p.grad is not None:
                gv.copy_(_dense(p.grad))
            p.data = xv
            p.grad = gv


class _GroupOptions:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: the hyper-parameters.
    :meth:`set_options`, and one algorithm per param group, rebuilt when a group's option
    values change (a scheduler writing ``lr``). It uses the optimizer's ``param_groups``,
    ``_base``, ``_group_options``, ``_coordinatewise``, ``_segments``, ``algorithm_name``,
    ``synchronize`` and (from :mod:`peergrad.optim.overlap`) ``_post_pre_gradient`` and
    ``_start_round``; it owns ``_cached_values`` (the values the segments' algorithms were
    built from)."""

    param_groups: list[dict[str, Any]]
    _base: Algorithm
    _group_options: tuple[str, ...]
    _coordinatewise: bool
    _segments: list[_Segment]
    _cached_values: Any

    if TYPE_CHECKING:  # the optimizer's (see the class docstring); no runtime effect

        @property
        def algorithm_name(self) -> str: ...
        def synchronize(self) -> None: ...
        def _post_pre_gradient(self) -> None: ...
        def _start_round(self) -> None: ...

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
        base = dataclasses.replace(self._base, **changes)
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

    def _group_values(self) -> list[dict[str, Any]]:
        return [{k: group[k] for k in self._group_options} for group in self.param_groups]

    def _group_algorithms(self) -> list[Algorithm]:
        """One algorithm per param group, from the groups' current option values (checked:
        see the function :func:`_group_algorithms`)."""
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
