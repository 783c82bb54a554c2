"""QG-DSGDm: decentralized SGD with quasi-global momentum, written as a peergrad user would.

Paper: T. Lin, S. P. Karimireddy, S. U. Stich, M. Jaggi, "Quasi-Global Momentum: Accelerating
Decentralized Deep Learning on Heterogeneous Data", ICML 2021, arXiv:2102.04761 (Algorithm 1,
heavy-ball form; reference code: github.com/epfml/quasi-global-momentum,
``code/pcode/optim/decentralized_qg_sgd.py``).

Update rule (all workers at once, shapes ``[w, D]``; ``m_hat`` is ``state.momentum_buffer``,
β = ``momentum``, μ = ``mu``, η = ``lr``, W = ``comm.topology.at(step)``)::

    g     <- g + weight_decay * x                 (if weight_decay > 0)
    m     <- g + β m_hat                          (local buffer from the quasi-global momentum)
    x_new <- W (x - η m)                          (local step, then gossip: adapt then combine)
    d     <- (x - x_new) / η                      (model difference: the global direction)
    m_hat <- μ m_hat + (1 - μ) d                  (quasi-global momentum)

Local heavy-ball momentum (D-SGDm) keeps ``m <- β m + g`` of each worker's *own* gradients, which
on heterogeneous data point to each worker's own optimum; ``m_hat`` is built from what the model
actually did after gossip, which estimates the direction of the global average.

Facts: W doubly stochastic ⇒ the workers' average moves by exactly ``-η mean(m)``. With ``mu=0``
on one worker (or W = I) d = m, so ``m_hat`` is the heavy-ball buffer and the method is
``torch.optim.SGD(lr, momentum=β, weight_decay)`` (declared in ``centralized``).

Deviations and uncertainties: ``mu=None`` means μ = β, the paper's choice [R?: the paper sets μ
= β in its experiments as far as I recall; the reference code's default is μ = 0.9 through its
``factor`` option, independent of β]. ``nesterov=True`` applies ``g + β m``, as the reference
code does, beyond the paper's Algorithm 1. Weight decay is folded into ``g`` as in the code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from peergrad.algorithms import MomentumState, SGDAlgorithm
from peergrad.algorithms.base import check_unit_interval, require_doubly_stochastic


@dataclasses.dataclass(frozen=True)
class QGDSGDm(SGDAlgorithm):
    """QG-DSGDm (Lin et al., ICML 2021): D-SGD with quasi-global momentum.

    Options:

    - ``momentum`` in [0, 1): β, the weight of the quasi-global momentum in the local step;
      default 0.9, the paper's.
    - ``mu`` in [0, 1), or None: μ, the averaging weight of the quasi-global momentum; None
      (default): μ = β, the paper's choice.
    """

    name: ClassVar[str] = "qg-dsgdm"
    paper: ClassVar[str] = "Lin, Karimireddy, Stich, Jaggi, ICML 2021, arXiv:2102.04761"
    summary: ClassVar[str] = "D-SGD with quasi-global momentum, for heterogeneous data"
    failures_note: ClassVar[str] = "gossip with the surviving graph's Metropolis-Hastings W"
    coordinatewise: ClassVar[bool] = True
    preserves_mean: ClassVar[bool] = True
    centralized: ClassVar[tuple[Any, ...]] = (
        ({"lr": 0.1, "momentum": 0.9, "mu": 0.0}, "torch.optim.SGD", {"lr": 0.1, "momentum": 0.9}),
        (
            {"lr": 0.05, "momentum": 0.5, "mu": 0.0, "weight_decay": 0.01},
            "torch.optim.SGD",
            {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01},
        ),
    )

    momentum: float = 0.9
    mu: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mu is not None:
            check_unit_interval("mu", self.mu)

    def check_topology(self, comm: Any) -> None:
        require_doubly_stochastic(comm, self.name)

    def step(self, x, g, state: MomentumState, comm, closure=None, pending=None) -> MomentumState:
        beta, m_hat = self.momentum, state.momentum_buffer
        mu = beta if self.mu is None else self.mu
        if self.weight_decay:
            g = g.add(x, alpha=self.weight_decay)
        m = torch.add(g, m_hat, alpha=beta)
        if self.nesterov:
            m = torch.add(g, m, alpha=beta)
        x_old = x.clone()
        comm.mix(x - self.lr * m, comm.topology.at(state.step), out=x)
        d = x_old.sub_(x).div_(self.lr)
        m_hat.mul_(mu).add_(d, alpha=1 - mu)
        return MomentumState(step=state.step + 1, momentum_buffer=m_hat)


if __name__ == "__main__":
    from peergrad.testing import check_algorithm

    print(check_algorithm(QGDSGDm))
