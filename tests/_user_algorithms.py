"""A user's own algorithm, written as a peergrad user would, for the conformance kit's tests
(``tests/test_conformance_kit.py``), and deliberately broken variants of it.

:class:`MomentumDSGD` is D-PSGD with local heavy-ball momentum, combine-then-adapt:
``m = momentum * m + g``; ``x = W(k) x - lr * m`` (shapes ``[w, D]``). It declares what the kit
checks: ``preserves_mean`` (doubly stochastic gossip) and its ``centralized`` reduction (one
worker: torch.optim.SGD with the same lr and momentum).

The classes live at the top level of a module so the kit's gloo processes can import them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms import Algorithm
from peergrad.algorithms.base import check_positive, check_unit_interval


@dataclasses.dataclass
class MomentumState:
    """``step``: iterations done (the position in W(k)); ``momentum_buffer``: ``[w, D]``."""

    step: int
    momentum_buffer: Tensor


@dataclasses.dataclass(frozen=True)
class MomentumDSGD(Algorithm):
    """D-SGD with local heavy-ball momentum (a user's algorithm).

    Options:

    - ``lr`` > 0: the step size.
    - ``momentum`` in [0, 1): the heavy-ball momentum.
    """

    name: ClassVar[str] = "my-dsgd"
    paper: ClassVar[str] = "Lian et al. 2017 (D-PSGD), with momentum"
    summary: ClassVar[str] = "D-SGD with local heavy-ball momentum"
    failures_note: ClassVar[str] = (
        "each round mixes with the Metropolis-Hastings weights of the surviving graph, which "
        "keep the average"
    )
    coordinatewise: ClassVar[bool] = True
    preserves_mean: ClassVar[bool] = True
    centralized: ClassVar[tuple[Any, ...]] = (
        ({"lr": 0.1, "momentum": 0.9}, "torch.optim.SGD", {"lr": 0.1, "momentum": 0.9}),
        ({"lr": 0.05}, torch.optim.SGD, {"lr": 0.05}),
    )

    lr: float = 0.1
    momentum: float = 0.0

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_unit_interval("momentum", self.momentum)

    def init(self, x: Tensor, comm: Any) -> Any:
        return MomentumState(step=0, momentum_buffer=torch.zeros_like(x))

    def update_momentum(self, g: Tensor, state: Any) -> Tensor:
        return state.momentum_buffer.mul_(self.momentum).add_(g)

    def consensus(self, x: Tensor, comm: Any, W: Any) -> Tensor:
        """``W x`` (into a scratch buffer)."""
        return comm.mix(x, W, out=comm.workspace(x, "mix"))  # type: ignore[no-any-return]

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: Any,
        comm: Any,
        closure: Any = None,
        pending: Any = None,
    ) -> Any:
        m = self.update_momentum(g, state)
        mixed = self.consensus(x, comm, comm.topology.at(state.step))
        x.copy_(mixed).sub_(m, alpha=self.lr)
        state.step += 1
        return state


# ---------------------------------------------------------------------------- broken variants
@dataclasses.dataclass
class LeakyState:
    """A state whose momentum buffer is an attribute set in ``init``, not a dataclass field:
    checkpoints (which store the fields) drop it."""

    step: int


@dataclasses.dataclass(frozen=True)
class DropsStateOnSave(MomentumDSGD):
    """Keeps its momentum outside the state's fields: lost by every checkpoint."""

    def init(self, x: Tensor, comm: Any) -> Any:
        state = LeakyState(step=0)
        state.momentum_buffer = torch.zeros_like(x)  # type: ignore[attr-defined]
        return state


@dataclasses.dataclass(frozen=True)
class LoopsOverWorkers(MomentumDSGD):
    """Updates the momentum one worker at a time in Python: the same numbers, n Python calls."""

    def update_momentum(self, g: Tensor, state: Any) -> Tensor:
        buf = state.momentum_buffer
        for i in range(buf.shape[0]):
            buf[i].mul_(self.momentum).add_(g[i])
        return buf  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class BreaksMeanPreservation(MomentumDSGD):
    """Gives each worker its own consensus rate ``1 / (1 + i)``:
    ``x_i + (W x - x)_i / (1 + i)``, which moves the workers' average."""

    def consensus(self, x: Tensor, comm: Any, W: Any) -> Tensor:
        mixed = comm.mix(x, W)
        rate = 1.0 / (1.0 + comm.worker_ids.to(x.dtype))[:, None]
        return x + rate * (mixed - x)


@dataclasses.dataclass(frozen=True)
class ChangesDtype(MomentumDSGD):
    """ "Upcasts x for accuracy": replaces x's storage by a float64 copy (a no-op in float64)."""

    def step(self, x: Tensor, g: Tensor, state: Any, comm: Any, **kw: Any) -> Any:
        state = super().step(x, g, state, comm, **kw)
        x.data = x.data.to(torch.float64)
        return state


@dataclasses.dataclass(frozen=True)
class RaisesAtStep3(MomentumDSGD):
    """Raises ``RuntimeError`` at its third step."""

    def step(self, x: Tensor, g: Tensor, state: Any, comm: Any, **kw: Any) -> Any:
        if state.step == 2:
            raise RuntimeError("the user's bug at step 3")
        return super().step(x, g, state, comm, **kw)


@dataclasses.dataclass(frozen=True)
class AveragesWithoutComm(MomentumDSGD):
    """Averages with ``x.mean(0)`` instead of ``comm.mean``: right on the simulated engine
    (all workers in one tensor), wrong on gloo processes (each holds its own row only)."""

    def consensus(self, x: Tensor, comm: Any, W: Any) -> Tensor:
        return x.mean(dim=0, keepdim=True).expand_as(x)


@dataclasses.dataclass
class LastGradientState:
    step: int
    momentum_buffer: Tensor
    last_g: Tensor | None = None


@dataclasses.dataclass(frozen=True)
class KeepsGradientReference(MomentumDSGD):
    """Adds a correction with the previous gradient, kept as a reference to ``g`` (the engines
    reuse that buffer: ``state.last_g.copy_(g)`` is right)."""

    def init(self, x: Tensor, comm: Any) -> Any:
        return LastGradientState(step=0, momentum_buffer=torch.zeros_like(x))

    def step(self, x: Tensor, g: Tensor, state: Any, comm: Any, **kw: Any) -> Any:
        if state.last_g is not None:
            x.sub_(state.last_g, alpha=0.01 * self.lr)
        state = super().step(x, g, state, comm, **kw)
        state.last_g = g
        return state
