"""What :class:`~peergrad.optim.DistributedOptimizer` does to the gradient before the algorithm
sees it: mixed-precision unscaling and gradient clipping. Split out of
:mod:`peergrad.optim.optimizer` (issue 25).

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.transforms import clip_rows


class _GradientPrep:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: clipping and GradScaler
    unscaling of ``g``. The optimizer calls :meth:`_choose_clip` at construction,
    :meth:`_scaler_inputs` at the start of ``step`` and :meth:`_prepare_gradient` before the
    segments are stepped. It uses the optimizer's ``_x``, ``_g`` (``[1, D]``), ``_comm`` and
    ``_round_mode``/``_cancel_round`` (:mod:`peergrad.optim.overlap`); it owns ``_clip``,
    ``_clip_mode`` and ``_amp_seen`` (set once a GradScaler stepped the optimizer)."""

    _x: Tensor
    _g: Tensor
    _comm: Communicator
    _round_mode: bool
    _amp_seen: bool

    if TYPE_CHECKING:  # the optimizer's (see the class docstring); no runtime effect

        def _cancel_round(self) -> None: ...

    def _choose_clip(self, clip_grad_norm: float | None, averaged: bool) -> None:
        """Clip to ``clip_grad_norm`` (None: no clipping): the averaged gradient when the
        algorithm is ``allreduce`` (``averaged``: the optimizer averages g with one all-reduce,
        clips it and steps the buckets with a communicator whose mean is the identity), else
        the local one."""
        self._clip = clip_grad_norm
        self._clip_mode = None if clip_grad_norm is None else "averaged" if averaged else "local"

    def _scaler_inputs(self) -> tuple[Tensor | None, Tensor | None]:
        """``(grad_scale, found_inf)`` that ``GradScaler.step`` set on the optimizer (None
        without a GradScaler); a GradScaler first seen once the buckets were stepped from the
        backward pass cancels the round and raises ``RuntimeError``."""
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and self._round_mode:
            self._cancel_round()
            raise RuntimeError(
                "DistributedOptimizer: GradScaler.step(opt) was first used after the buckets "
                "were already stepped from the backward pass with scaled gradients; use the "
                "GradScaler from the first step on, or build the optimizer with overlap=False"
            )
        return grad_scale, found_inf

    def _prepare_gradient(self, grad_scale: Tensor | None, found_inf: Tensor | None) -> bool:
        """Unscale (under a GradScaler) and clip ``g`` in place; True when a GradScaler
        overflow on some worker skips the step (on every worker)."""
        if found_inf is not None:
            self._amp_seen = True
            if self._unscale_or_skip(grad_scale, found_inf):
                return True
        # _clip_mode is not None exactly when _clip is not None (_choose_clip)
        if self._clip_mode == "local":
            clip_rows(self._g, cast(float, self._clip))
        elif self._clip_mode == "averaged":
            self._g.copy_(clip_rows(self._comm.mean(self._g).clone(), cast(float, self._clip)))
        return False

    def _unscale_or_skip(self, grad_scale: Tensor | None, found_inf: Tensor) -> bool:
        """GradScaler: True when some worker overflowed (every worker skips); else unscale g."""
        flag = found_inf.detach().to(self._x.device, torch.float32).reshape(1, 1)
        if float(self._comm.mean(flag, account=False)[0, 0]) > 0:
            return True
        if grad_scale is not None:
            inv = grad_scale.detach().double().reciprocal().float().to(self._g.device)
            self._g.mul_(inv)
        return False
