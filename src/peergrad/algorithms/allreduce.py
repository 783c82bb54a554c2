"""All-reduce SGD: synchronous mini-batch SGD with exact gradient averaging.

Reference: the centralized baseline of data-parallel training, e.g. P. Goyal et al., "Accurate,
Large Minibatch SGD: Training ImageNet in 1 Hour", 2017, arXiv:1706.02677. Every decentralized
method in peergrad reduces to it (complete graph, one local step, identity compressor).

Update rule (all workers, iteration k; shapes ``[w, D]``)::

    g_bar <- mean_i(g_i + weight_decay * x_i)        (one all-reduce of D values)
    d     <- heavy_ball(buf, g_bar, momentum, nesterov)
    x     <- x - lr * d

With identical initial models all workers hold the same x forever, and the run equals
``torch.optim.SGD(lr, momentum, nesterov=..., weight_decay)`` on the combined batch of n·B samples.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1) and ``weight_decay < 0``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor

from peergrad.algorithms.base import Closure, MomentumState, SGDAlgorithm
from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay, heavy_ball


@dataclasses.dataclass(frozen=True)
class AllReduceSGD(SGDAlgorithm):
    """Synchronous mini-batch SGD (the centralized reference every method reduces to).

    Options:

    - ``lr`` > 0: the step size; default 0.1, as for the other SGD-family methods.
    - ``momentum`` in [0, 1): heavy-ball momentum on the averaged gradient; default 0, plain
      mini-batch SGD, the reference the decentralized methods reduce to (Goyal et al.'s ImageNet
      recipe uses 0.9 with weight_decay 1e-4).
    """

    name: ClassVar[str] = "allreduce"
    paper: ClassVar[str] = "synchronous mini-batch SGD (e.g. Goyal et al. 2017, arXiv:1706.02677)"
    summary: ClassVar[str] = "centralized reference: all-reduce of gradients, then an SGD step"

    def uses_topology(self) -> bool:
        """False: the gradients are averaged exactly (all-reduce), with no topology."""
        return False

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: MomentumState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> MomentumState:
        g_bar = comm.mean(add_weight_decay(g, x, self.weight_decay))
        d = heavy_ball(state.momentum_buffer, g_bar, self.momentum, self.nesterov)
        x.sub_(d, alpha=self.lr)
        return MomentumState(step=state.step + 1, momentum_buffer=state.momentum_buffer)
