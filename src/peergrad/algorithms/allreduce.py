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

With ``clip_grad_norm = c`` the averaged gradient is clipped before weight decay and momentum, as
a DDP user does with ``torch.nn.utils.clip_grad_norm_`` between ``backward()`` (which averages)
and ``optimizer.step()``::

    g_bar <- mean_i(g_i);  g_bar <- g_bar * min(1, c / (||g_bar||_2 + 1e-6))
    d     <- heavy_ball(buf, g_bar + weight_decay * x, momentum, nesterov);  x <- x - lr * d

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0`` and
``clip_grad_norm <= 0``.

Under failures (a system profile's dropped links or absent workers): the gradient mean is over the
present workers (quorum all-reduce); a worker that returns keeps its stale x, so the copies of x
stop being identical (no re-synchronisation is modelled).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor

from peergrad.algorithms.base import Closure, MomentumState, SGDAlgorithm, check_positive
from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay, clip_rows, heavy_ball


@dataclasses.dataclass(frozen=True)
class AllReduceSGD(SGDAlgorithm):
    """Synchronous mini-batch SGD (the centralized reference every method reduces to).

    Options:

    - ``lr`` > 0: the step size; default 0.1, as for the other SGD-family methods.
    - ``momentum`` in [0, 1): heavy-ball momentum on the averaged gradient; default 0, plain
      mini-batch SGD, the reference the decentralized methods reduce to (Goyal et al.'s ImageNet
      recipe uses 0.9 with weight_decay 1e-4).
    - ``clip_grad_norm`` > 0, or None: clip the averaged gradient to this Euclidean norm (as
      ``torch.nn.utils.clip_grad_norm_`` after DDP's backward); default None, no clipping. The
      global norm couples all coordinates, so with clipping the step is not cut into buckets.
    """

    clip_grad_norm: float | None = None

    name: ClassVar[str] = "allreduce"
    failures_note: ClassVar[str] = (
        "the gradient mean is over the present workers (quorum all-reduce); a worker that "
        "returns keeps its stale x, so the copies of x stop being identical (no re- "
        "synchronisation is modelled)"
    )
    paper: ClassVar[str] = "synchronous mini-batch SGD (e.g. Goyal et al. 2017, arXiv:1706.02677)"
    summary: ClassVar[str] = "centralized reference: all-reduce of gradients, then an SGD step"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_grad_norm is not None:
            check_positive("clip_grad_norm", self.clip_grad_norm)

    @property
    def coordinatewise(self) -> bool:  # type: ignore[override]
        """True unless ``clip_grad_norm`` is set (the global norm couples the coordinates)."""
        return self.clip_grad_norm is None

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
        if self.clip_grad_norm is None:
            g_bar = comm.mean(add_weight_decay(g, x, self.weight_decay))
        else:
            g_bar = clip_rows(comm.mean(g).clone(), self.clip_grad_norm)
            g_bar = add_weight_decay(g_bar, x, self.weight_decay)
        d = heavy_ball(state.momentum_buffer, g_bar, self.momentum, self.nesterov)
        x.sub_(d, alpha=self.lr)
        return MomentumState(step=state.step + 1, momentum_buffer=state.momentum_buffer)
