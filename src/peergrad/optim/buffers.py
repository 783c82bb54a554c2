"""Module buffers of :class:`~peergrad.optim.DistributedOptimizer` (``module``, ``buffers``,
``buffers_every``). Split out of :mod:`peergrad.optim.optimizer` (issue 25).

Only parameters are communicated by the algorithm. Given ``module=``, its floating-point buffers
(BatchNorm running statistics) are, every ``buffers_every`` steps at the end of ``step``:
``"local"`` (default) left alone, each worker keeps its own (no communication, as the simulated
engine's default); ``"average"`` all-reduced to their mean (one all-reduce, counted in
``bytes_sent``); ``"broadcast"`` replaced by worker 0's (as DDP's ``broadcast_buffers``; not
counted). Integer buffers (``num_batches_tracked``) stay local.
"""

from __future__ import annotations

import torch
from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.comm.buffers import average_buffers

#: The values of ``buffers=`` (see the module docstring).
BUFFER_MODES = ("local", "average", "broadcast")


class _ModuleBuffers:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: the module's buffers, kept by
    :meth:`_keep_buffers` at construction and synchronised by :meth:`_sync_buffers` at the end
    of every ``step``. It uses the optimizer's ``_comm`` and ``_steps``."""

    _comm: Communicator
    _steps: int

    def _keep_buffers(self, module: torch.nn.Module | None, mode: str, every: int) -> None:
        self._module = module
        self._buffers = mode
        self._buffers_every = every

    def _sync_buffers(self) -> None:
        if self._module is None or self._buffers == "local":
            return
        if self._steps % self._buffers_every:
            return
        _sync_module_buffers(self._module, self._buffers, self._comm)


def _sync_module_buffers(module: torch.nn.Module, mode: str, comm: Communicator) -> None:
    """``"average"`` or ``"broadcast"`` the module's floating-point buffers (see the module doc)."""
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
            comm.broadcast(flat, src=0)
            offset = 0
            for b in bufs:
                b.copy_(flat[:, offset : offset + b[0].numel()].view_as(b))
                offset += b[0].numel()
