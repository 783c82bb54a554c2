"""CHOCO-SGD: decentralized SGD with compressed gossip of public copies.

Paper: A. Koloskova, S. U. Stich, M. Jaggi, "Decentralized Stochastic Optimization and Gossip
Algorithms with Compressed Communication", ICML 2019, arXiv:1902.00340. Spec: decentralized.md
§3.5.

Update rule (worker i, iteration k, W = ``comm.topology.at(k)``; shapes ``[w, D]``;
C = ``make_compressor(compressor, ratio, levels)``)::

    d      <- heavy_ball(buf, g + weight_decay * x, momentum, nesterov)   (d = g by default)
    x_half <- x - lr * d
    q      <- C(x_half - x_hat)          (random compressors draw from ``rng``, per worker id)
    x_hat  <- x_hat + q                  (public copy; every neighbour keeps the same copy)
    s      <- s + W q                    (gossip of the packed message of q; s = W x_hat)
    x      <- x_half + gamma * (s - x_hat)

x_hat and s start at 0 (memory-efficient form of the paper's update). With the identity
compressor and gamma = 1 this is exactly D-PSGD in ATC form, ``x <- W (x - lr * d)``. For a
doubly stochastic W the consensus step keeps the mean: ``mean(x) = mean(x_half)``. On
heterogeneous data it keeps D-PSGD's bias (roughly proportional to ``lr``).

Bytes per worker and step: ``out_degree * C.nbytes(D, dtype)``, exactly what is sent: on both
engines q travels as its packed message (:func:`peergrad.comm.compressed.compressed_mix`), one
``uint8 [nbytes]`` tensor per out-neighbour, which every receiver decodes.

Deviations from the paper: heavy-ball/Nesterov momentum (on the local gradient) and weight decay
are additions (as in D-PSGD); the paper analyses plain SGD. Time-varying topologies are rejected:
the incremental form ``s += W q`` equals ``W x_hat`` only when W is fixed (recomputing ``W(k)
x_hat`` would need a dense gossip every step and is not offered).

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, ``gamma``
outside (0, 1], ``ratio`` outside (0, 1], ``levels < 1``, an unknown compressor name, a W that
is not doubly stochastic and a time-varying topology.

Under failures (a system profile's dropped links or absent workers): refused: its memory-efficient s
= W x_hat is only valid for a fixed W (as for time-varying topologies), and a failed round mixes
with another W.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import Closure, require_doubly_stochastic
from peergrad.algorithms.compressed import CompressedSGDAlgorithm
from peergrad.comm.base import Communicator
from peergrad.comm.compressed import compressed_mix
from peergrad.compress import (
    load_generator,
    new_generator_state,
)


@dataclasses.dataclass
class ChocoState:
    """``step``; ``momentum_buffer``, ``x_hat`` (public copy), ``s`` (= W x_hat): ``[w, D]``;
    ``rng``: uint8 state of the CPU generator shared by all workers (same on every engine)."""

    step: int
    momentum_buffer: Tensor
    x_hat: Tensor
    s: Tensor
    rng: Tensor


@dataclasses.dataclass(frozen=True)
class ChocoSGD(CompressedSGDAlgorithm):
    """CHOCO-SGD (Koloskova, Stich, Jaggi 2019); see the module docstring.

    Options:

    - ``lr`` > 0: the step size η; default 0.1, as D-PSGD.
    - ``momentum`` in [0, 1): heavy-ball momentum on the local gradient; default 0: the paper
      analyses plain SGD.
    - ``gamma`` in (0, 1]: γ, the consensus step size; default 0.2 (spec decentralized.md §6);
      with the identity compressor and γ = 1 this is D-PSGD in ATC form.
    """

    gamma: float = 0.2

    name: ClassVar[str] = "choco-sgd"
    preserves_mean: ClassVar[bool] = True
    failures: ClassVar[str] = "refused"
    failures_note: ClassVar[str] = (
        "its memory-efficient s = W x_hat is only valid for a fixed W (as for time-varying "
        "topologies), and a failed round mixes with another W"
    )
    paper: ClassVar[str] = "Koloskova, Stich, Jaggi, ICML 2019, arXiv:1902.00340"
    summary: ClassVar[str] = "decentralized SGD with compressed gossip of public model copies"

    def __post_init__(self) -> None:
        super().__post_init__()
        g = self.gamma
        if not (
            isinstance(g, int | float) and not isinstance(g, bool) and math.isfinite(g)
        ) or not (0 < g <= 1):
            raise ValueError(f"gamma must be in (0, 1], got {g!r}")

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, "choco-sgd")
        if comm.topology.time_varying:
            raise ValueError(
                f"choco-sgd needs a static topology (its s = W x_hat form is only valid for a "
                f"fixed W), but {comm.topology.name!r} is time-varying with period "
                f"{comm.topology.period}"
            )

    def init(self, x: Tensor, comm: Communicator) -> ChocoState:
        self.check_topology(comm)
        return ChocoState(
            step=0,
            momentum_buffer=torch.zeros_like(x),
            x_hat=torch.zeros_like(x),
            s=torch.zeros_like(x),
            rng=new_generator_state(self.seed),
        )

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: ChocoState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> ChocoState:
        W = comm.topology.at(state.step)
        C = self.compressor_for(x.shape[1])
        d = self.direction(x, g, state)  # updates state.momentum_buffer
        x.sub_(d, alpha=self.lr)  # x now holds x_half
        diff = torch.sub(x, state.x_hat, out=comm.workspace(x, "choco-diff"))
        gen = load_generator(state.rng)
        msg = C.compress(diff, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
        state.x_hat.add_(C.decompress(msg))
        state.s.add_(compressed_mix(comm, C, msg, W, out=comm.workspace(x, "mix")))
        x.add_(torch.sub(state.s, state.x_hat, out=diff), alpha=self.gamma)
        return ChocoState(
            state.step + 1, state.momentum_buffer, state.x_hat, state.s, gen.get_state()
        )
