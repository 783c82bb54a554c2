"""Gradient tracking: every worker tracks the network-average gradient with a second variable.

Papers:

- CTA form: G. Qu and N. Li, "Harnessing Smoothness to Accelerate Distributed Optimization",
  IEEE Trans. Control of Network Systems, 2018, arXiv:1605.07112; A. Nedić, A. Olshevsky,
  W. Shi, "Achieving Geometric Convergence for Distributed Optimization over Time-Varying
  Graphs" (DIGing), SIAM J. Optimization, 2017, arXiv:1607.03218.
- ATC form (DSGT): S. Pu and A. Nedić, "Distributed Stochastic Gradient Tracking Methods",
  Mathematical Programming, 2021, arXiv:1805.11454 (the stochastic non-convex analysis is
  Zhang & You 2019).

Specification: ``decentralized.md`` §3.3. The two forms are recalled from the papers [R] (the
CTA form also appears in the ``nda`` library's ``DGD_tracking`` [V]); that DeTAG's paper calls
this line of methods "DSGT" is [R?].

Update rule (worker i, iteration k, W(k) = ``comm.topology.at(k)``; shapes ``[w, D]``; ``g_k``
is the stochastic gradient at ``x_k`` plus ``weight_decay * x_k``; ``y_(-1) = 0``,
``g_(-1) = 0`` so that ``y_0 = g_0``)::

    y_k     = W(k-1) y_(k-1) + g_k - g_(k-1)               (tracker; W(-1) y_(-1) = 0)
    d_k     = heavy_ball(buf, y_k, momentum, nesterov)     (d_k = y_k by default)
    CTA:      x_(k+1) = W(k) x_k - lr * d_k
    ATC:      x_(k+1) = W(k) (x_k - lr * d_k)

This is spec §3.3 shifted by one index (y_(k+1) = W(k) y_k + g_(k+1) - g_k): round k mixes x_k
and y_k with the *same* W(k), as DIGing does on time-varying graphs.

Messages: x and y travel in one fused message ``[w, 2D]`` per neighbour per iteration
(``2 * D * element_size`` bytes):

- ATC: ``[x_k - lr d_k, y_k]`` after the gradient, giving ``x_(k+1)`` and ``W(k) y_k``;
- CTA, static W: ``[x_k, y_(k-1)]``, which does not need the gradient: ``pre_gradient`` starts
  it, so the gossip overlaps the gradient computation, and gives ``W x_k`` and ``W y_(k-1)``;
- CTA, time-varying W(k): ``[x_k, y_k]`` after the gradient, giving ``W(k) x_k`` and
  ``W(k) y_k``. The overlapped message above would mix y_(k-1) with W(k) instead of W(k-1),
  a variant no paper analyses; so a time-varying schedule gives up the overlap (one fused
  message per round either way).

Invariants (doubly stochastic W(k), momentum 0): ``mean(y_k) = mean(g_k)`` at every k
(including with stochastic gradients) and ``mean(x_(k+1)) = mean(x_k) - lr * mean(g_k)``. With
deterministic gradients both forms converge to the exact optimum on heterogeneous data.

State: ``gossip`` ``[w, 2D]``, whose second half is the tracker (``state.tracker``): y_k in
the CTA form on a static W, ``W(k) y_k`` otherwise (the gossip of y_k has already happened; same
mean); ``grad_prev`` = g_k; ``momentum_buffer``.

Deviations from the papers: heavy-ball/Nesterov momentum on the tracker (as the DeTAG reference
code does; the average then follows heavy-ball SGD on the mean gradient) and weight decay
folded into the gradient before tracking.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, an unknown
``form`` and a W(k) that is not doubly stochastic.

Under failures (a system profile's dropped links or absent workers): link drops keep mean(y) =
mean(g_prev) (each surviving W is doubly stochastic), but a leaving worker takes its share of the
tracker with it: the present workers' trackers stop averaging their gradients.

On the elastic engine (``--elastic``): when the workers present change (a worker left, or one
rejoined with a live peer's state), every worker present re-initialises its tracker from its
last gradient, ``tracker = grad_prev`` (:meth:`GradientTracking.membership_changed`), so
``mean(y) = mean(g_prev)`` holds again over the workers present. Its memory of the earlier
gradients is lost: the first steps after a change are plain local gradient steps plus gossip,
as at the start of a run. [U] not from the papers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    SGDAlgorithm,
    check_choice,
    require_doubly_stochastic,
)
from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay, heavy_ball


@dataclasses.dataclass
class GTState:
    """``step``: iterations done; ``gossip``: ``[w, 2D]`` fused buffer (see the module doc);
    ``grad_prev``: the last (weight-decayed) gradient ``[w, D]``; ``momentum_buffer``."""

    step: int
    gossip: Tensor
    grad_prev: Tensor
    momentum_buffer: Tensor

    @property
    def tracker(self) -> Tensor:
        """The tracker half of ``gossip``, a ``[w, D]`` view: y_k (CTA on a static W) or
        W(k) y_k (ATC; CTA on a time-varying W)."""
        return self.gossip[:, self.grad_prev.shape[1] :]


@dataclasses.dataclass(frozen=True)
class GradientTracking(SGDAlgorithm):
    """Gradient tracking, ``form="atc"`` (DSGT, Pu–Nedić; default) or ``"cta"`` (Qu–Li/DIGing).

    Options:

    - ``lr`` > 0: the step size α; default 0.05, the spec's α (decentralized.md §6).
    - ``momentum`` in [0, 1): heavy-ball momentum on the tracker; default 0, the papers' plain
      update.
    - ``form`` one of atc, cta: atc (DSGT, default) gossips x - lr d and y after the gradient;
      cta (Qu–Li/DIGing) gossips x and y, x <- W x - lr d, overlapping the gradient on a
      static W.
    """

    lr: float = 0.05
    form: str = "atc"

    name: ClassVar[str] = "gradient-tracking"
    preserves_mean: ClassVar[bool] = True
    failures_note: ClassVar[str] = (
        "link drops keep mean(y) = mean(g_prev) (each surviving W is doubly stochastic), but a "
        "leaving worker takes its share of the tracker with it: the present workers' trackers "
        "stop averaging their gradients"
    )
    elastic_note: ClassVar[str] = (
        "when the workers present change, each worker present re-initialises its tracker from "
        "its last gradient (tracker = grad_prev), so mean(y) = mean(g_prev) holds again over them"
    )
    paper: ClassVar[str] = (
        "Qu & Li, arXiv:1605.07112 / DIGing, arXiv:1607.03218 (CTA); "
        "Pu & Nedić, arXiv:1805.11454 (DSGT, ATC)"
    )
    summary: ClassVar[str] = (
        "gradient tracking: gossip the model and a tracker of the average gradient (fused)"
    )

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("form", self.form, ("cta", "atc"))

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, "gradient-tracking")

    def init(self, x: Tensor, comm: Communicator) -> GTState:
        w, D = x.shape
        return GTState(
            step=0,
            gossip=x.new_zeros((w, 2 * D)),
            grad_prev=torch.zeros_like(x),
            momentum_buffer=torch.zeros_like(x),
        )

    def membership_changed(self, x: Tensor, state: GTState, comm: Communicator) -> GTState:
        """Elastic engine, the workers present changed: ``tracker = grad_prev`` (see the module
        docstring), which restores ``mean(tracker) = mean(grad_prev)`` over the workers
        present."""
        state.tracker.copy_(state.grad_prev)
        return state

    def overlaps(self, comm: Communicator) -> bool:
        """Whether the fused gossip starts before the gradient: CTA on a static W only."""
        return self.form == "cta" and not comm.topology.time_varying

    def pre_gradient(self, x: Tensor, state: GTState, comm: Communicator) -> Any:
        """CTA, static W: start the fused gossip of ``[x_k, y_(k-1)]`` (no gradient needed)."""
        if not self.overlaps(comm):
            return None
        state.gossip[:, : x.shape[1]].copy_(x)
        # mix_start is not in the Communicator protocol (overlap-capable comms)
        return comm.mix_start(state.gossip, comm.topology.at(state.step))

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: GTState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> GTState:
        D = x.shape[1]
        W = comm.topology.at(state.step)
        g = add_weight_decay(g, x, self.weight_decay)
        if self.overlaps(comm):  # static W: W(k) = W(k-1)
            if pending is None:
                pending = self.pre_gradient(x, state, comm)
            recv = pending.wait(comm.workspace(state.gossip, "gt.recv"))  # [W x_k, W y_(k-1)]
            y = state.gossip[:, D:]  # the sent buffer is free again: y_k goes here
            torch.add(recv[:, D:], g, out=y).sub_(state.grad_prev)
            d = heavy_ball(state.momentum_buffer, y, self.momentum, self.nesterov)
            torch.sub(recv[:, :D], d, alpha=self.lr, out=x)
        else:
            send = comm.workspace(state.gossip, "gt.send")
            y = send[:, D:]
            torch.add(state.gossip[:, D:], g, out=y).sub_(state.grad_prev)  # W(k-1) y_(k-1) + ...
            d = heavy_ball(state.momentum_buffer, y, self.momentum, self.nesterov)
            if self.form == "atc":
                torch.sub(x, d, alpha=self.lr, out=send[:, :D])
                comm.mix(send, W, out=state.gossip)  # [x_(k+1), W(k) y_k]
                x.copy_(state.gossip[:, :D])
            else:  # CTA on a time-varying schedule
                send[:, :D].copy_(x)
                comm.mix(send, W, out=state.gossip)  # [W(k) x_k, W(k) y_k]
                torch.sub(state.gossip[:, :D], d, alpha=self.lr, out=x)
        state.grad_prev.copy_(g)
        return dataclasses.replace(state, step=state.step + 1)
