"""D-PSGD: decentralized parallel stochastic gradient descent.

Paper: X. Lian, C. Zhang, H. Zhang, C.-J. Hsieh, W. Zhang, J. Liu, "Can Decentralized Algorithms
Outperform Centralized Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient
Descent", NeurIPS 2017, arXiv:1705.09056.

Update rule (worker i, iteration k, W = ``comm.topology.at(k)``; shapes ``[w, D]``)::

    g   <- g + weight_decay * x                      (if weight_decay > 0)
    d   <- heavy_ball(buf, g, momentum, nesterov)    (d = g when momentum = 0)
    CTA (the paper's form):   x <- W x - lr * d      (gossip of x overlaps the gradient:
                                                      pre_gradient posts it, step waits)
    ATC (adapt-then-combine): x <- W (x - lr * d)

Average dynamics (doubly stochastic W, momentum 0): ``mean(x) <- mean(x) - lr * mean(d)`` exactly,
in both forms. On heterogeneous data D-PSGD converges to a biased fixed point whose distance to
the optimum is roughly proportional to ``lr`` (spec decentralized.md §3.1).

One message (the model) per neighbour per iteration.

Deviations from the paper: local momentum, Nesterov momentum and weight decay are common in
deep-learning practice but are not part of the paper's analysis; the ATC form is offered besides
the paper's CTA form. With time-varying W(k) (e.g. the one-peer exponential graph, Ying et al.
2021) the matrix of iteration k is used.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, an unknown
``form`` and a topology whose W(k) is not doubly stochastic.

Under failures (a system profile's dropped links or absent workers): each round mixes with the
Metropolis-Hastings W of the surviving graph (symmetric, doubly stochastic), so mean(x) still moves
by exactly the mean local step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    MomentumState,
    SGDAlgorithm,
    check_choice,
    require_doubly_stochastic,
)
from peergrad.comm.base import Communicator


@dataclasses.dataclass(frozen=True)
class DPSGD(SGDAlgorithm):
    """D-PSGD (Lian et al. 2017); see the module docstring.

    Options:

    - ``lr`` > 0: the step size γ; default 0.1, the spec's γ (decentralized.md §6).
    - ``momentum`` in [0, 1): local heavy-ball momentum; default 0: the paper's D-PSGD is plain
      SGD (the spec's table suggests 0.9 for deep-learning runs: ``--momentum 0.9``).
    - ``form`` one of cta, atc: cta (the paper's) gossips x and adds the local step,
      x <- W x - lr d, overlapping the gossip with the gradient; atc takes the local step first,
      x <- W (x - lr d).
    """

    form: str = "cta"

    name: ClassVar[str] = "dpsgd"
    preserves_mean: ClassVar[bool] = True
    failures_note: ClassVar[str] = (
        "each round mixes with the Metropolis-Hastings W of the surviving graph (symmetric, "
        "doubly stochastic), so mean(x) still moves by exactly the mean local step"
    )
    paper: ClassVar[str] = "Lian et al., NeurIPS 2017, arXiv:1705.09056"
    summary: ClassVar[str] = "decentralized SGD: gossip the model with neighbours, local SGD step"

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("form", self.form, ("cta", "atc"))

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, "dpsgd")

    def pre_gradient(self, x: Tensor, state: MomentumState, comm: Communicator) -> Any:
        """CTA: the gossip of x does not need the gradient, so it starts here."""
        if self.form == "cta":
            # mix_start is not in the Communicator protocol (overlap-capable comms)
            return comm.mix_start(x, comm.topology.at(state.step))
        return None

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: MomentumState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> MomentumState:
        W = comm.topology.at(state.step)
        d = self.direction(x, g, state)
        if self.form == "cta":
            ws = comm.workspace(x, "mix")
            mixed = pending.wait(ws) if pending is not None else comm.mix(x, W, out=ws)
            torch.sub(mixed, d, alpha=self.lr, out=x)
        else:
            local = torch.sub(x, d, alpha=self.lr, out=comm.workspace(x, "mix"))
            comm.mix(local, W, out=x)
        return MomentumState(step=state.step + 1, momentum_buffer=state.momentum_buffer)
