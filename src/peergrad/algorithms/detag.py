"""DeTAG: decentralized training with gradient tracking, accelerated gossip and accumulation.

Paper: Y. Lu and C. De Sa, "Optimal Complexity in Decentralized Training", ICML 2021,
arXiv:2006.08085. Specification: ``decentralized.md`` §5.2–§5.8. No implementation by the
authors is public; §5.4 describes a third-party one (DoCoM's ``pcode/optim/detag.py``).

Gradient tracking whose single gossip step is replaced by R rounds of accelerated gossip
(:mod:`peergrad.comm.gossip`), pipelined with R minibatch gradients at the same point. One
``step`` = one minibatch gradient + one AG round; a *phase* k = R steps = R minibatches + R
rounds, each round sending x and y fused in one ``[w, 2D]`` message per neighbour.

Update rule, pipelined (default), phase k, worker i (W fixed and symmetric; ``g`` includes
``weight_decay * x``; ``AG_R`` is R rounds with momentum ``eta``; shapes ``[w, D]``)::

    step r = 0 of the phase:  gossip = gossip_prev = [x_k, y_k];  acc = 0
    every step r:             acc += g / R                  (gradients at the fixed x_k)
                              one AG round on gossip        (overlaps the gradient)
    step r = R - 1:           [AX, AY] = gossip             (= [AG_R(x_k), AG_R(y_k)])
                              d = heavy_ball(buf, AY, momentum, nesterov)   (d = AY by default)
                              x_(k+1) = AX - lr * d
                              y_(k+1) = AY + acc - grad_prev;  grad_prev = acc

Non-pipelined (``pipelined=False``): gradients accumulate at x_k for R steps; the phase's last
step forms ``y_k = AG_R(y_(k-1)) + acc - grad_prev`` and runs the R rounds back to back on
``[x_k - lr d_k, y_k]``, giving ``x_(k+1) = AG_R(x_k - lr d_k)`` and ``AG_R(y_k)`` (kept for the
next phase). The rounds cannot overlap the gradients there: they need the phase's last one.
With R = 1 and eta = 0 this is exactly DSGT (gradient tracking, ATC form).

Initialisation (spec §5.3): ``y_0 = 0`` and ``grad_prev = g~_(-1) = 0``, so that
``mean(y) - mean(grad_prev)`` starts at 0. (The third-party code sets y to the first gradient but
leaves acc_prev at 0, after which mean y carries the initial gradient forever, §5.4.)

Invariants (doubly stochastic W, momentum 0; g~_k = the phase's accumulated gradient):
pipelined: ``mean(y_(k+1)) = mean(g~_k)`` and ``mean(x_(k+1)) = mean(x_k) - lr * mean(g~_(k-1))``
(centralized SGD on R·B·n samples per update, one phase stale; phase 0 does not move x);
non-pipelined: ``mean(y_k) = mean(g~_k)`` and ``mean(x_(k+1)) = mean(x_k) - lr * mean(g~_k)``.

Hyper-parameters: ``lr`` (alpha), ``rounds`` (R; ``None`` = "auto": the smallest R with
``|p_R(lam)| <= 0.1``, capped at 8, spec §5.7), ``eta`` (AG momentum; ``None`` = the §5.2
formula from ``lam = max(|lambda_2|, |lambda_n|)`` of the symmetric W), ``pipelined``,
``momentum``/``nesterov`` (on the gossiped tracker, as in the reference code [V]),
``weight_decay`` (folded into g). R and eta are resolved once, by :meth:`init`, and kept in the
state (``state.rounds``, ``state.eta``): changing them later needs a new ``init``.

Topologies: DeTAG needs a fixed symmetric W for its acceleration. A directed or time-varying
topology raises ``ValueError`` unless ``eta = 0``: plain multi-round gossip with
doubly stochastic matrices still preserves averages, so all invariants above hold [D]. With
``eta = 0`` round j of the run uses ``W(j)`` of the schedule and ``rounds=None`` means
``min(period, 8)`` on a time-varying schedule (for the one-peer exponential graph with n a power
of two, R = period averages exactly) or the smallest R with ``rho^R <= 0.1`` (capped at 8) on a
directed one.

Confidence (spec §0, §8): the AG recurrence and its eta are [V] (public code and derivation);
the pipelined/non-pipelined pseudo-code order and the tracker initialisation are recalled [R]
and not yet checked against the PDF; the paper's R and eta in experiments are not recovered [U].

Deviations: the auto rule for R is the spec's [D]. Momentum on the tracker is not in the
theory. The paper outputs x̄ or the model of a random phase; here the workers' models are the
output.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``,
``rounds < 1``, eta outside [0, 1), and the topologies above.

Under failures (a system profile's dropped links or absent workers): refused: its accelerated gossip
(momentum over R rounds) and its tracker assume one fixed W, which a failed round changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    SGDAlgorithm,
    check_unit_interval,
    require_doubly_stochastic,
)
from peergrad.comm.base import Communicator
from peergrad.comm.gossip import ag_round, auto_rounds, check_accelerable, eta_from_lambda
from peergrad.transforms import add_weight_decay, heavy_ball

#: ``rounds=None`` ("auto") picks the smallest R with |p_R(lam)| <= AUTO_TARGET, at most AUTO_MAX.
AUTO_TARGET = 0.1
AUTO_MAX_ROUNDS = 8


@dataclasses.dataclass
class DeTAGState:
    """``step``: minibatches done (phase ``step // rounds``); ``rounds``, ``eta``: resolved R
    and eta; ``tracker`` y, ``grad_prev`` g~_(k-1), ``grad_acc`` (``[w, D]``); ``gossip`` and
    ``gossip_prev``: AG buffers z(r), z(r-1) of ``[x, y]`` (``[w, 2D]``); ``momentum_buffer``."""

    step: int
    rounds: int
    eta: float
    tracker: Tensor
    grad_prev: Tensor
    grad_acc: Tensor
    gossip: Tensor
    gossip_prev: Tensor
    momentum_buffer: Tensor


@dataclasses.dataclass(frozen=True)
class DeTAG(SGDAlgorithm):
    """DeTAG (Lu & De Sa 2021); see the module docstring.

    Options:

    - ``lr`` > 0: the step size α; default 0.1 (spec decentralized.md §6).
    - ``momentum`` in [0, 1): heavy-ball momentum on the gossiped tracker; default 0: not in the
      theory (the reference code has 0.9, spec §5.4).
    - ``rounds`` integer >= 1, or None (auto): R, gossip rounds (and accumulated minibatches) per
      phase; auto: the smallest R with |p_R(lambda)| <= 0.1, at most 8 (spec §5.7).
    - ``eta`` in [0, 1), or None (auto): the accelerated-gossip momentum; auto: the spec's §5.2
      formula from lambda of W; 0: plain multi-round gossip (allowed on any doubly stochastic W).
    - ``pipelined`` true or false: overlap each phase's R gossip rounds with its R gradients (the
      tracker is then one phase stale); false: accumulate, then gossip R rounds.
    """

    rounds: int | None = None
    eta: float | None = None
    pipelined: bool = True

    name: ClassVar[str] = "detag"
    preserves_mean: ClassVar[bool] = True
    failures: ClassVar[str] = "refused"
    failures_note: ClassVar[str] = (
        "its accelerated gossip (momentum over R rounds) and its tracker assume one fixed W, "
        "which a failed round changes"
    )
    paper: ClassVar[str] = "Lu & De Sa, ICML 2021, arXiv:2006.08085"
    summary: ClassVar[str] = (
        "gradient tracking with R rounds of accelerated gossip pipelined with R accumulated "
        "minibatches"
    )

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rounds, str) and self.rounds.lower() == "auto":
            object.__setattr__(self, "rounds", None)
        r = self.rounds
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"rounds must be an integer >= 1 or None/'auto', got {r!r}")
        if self.eta is not None:
            check_unit_interval("eta", self.eta)

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, "detag")
        topo = comm.topology
        if (topo.directed or topo.time_varying) and self.eta is None:
            kind = "time-varying" if topo.time_varying else "directed"
            raise ValueError(
                f"detag: topology {topo.name!r} is {kind}, but accelerated gossip needs a fixed "
                "symmetric mixing matrix; eta must be 0 there (pass eta=0 for plain "
                "multi-round gossip)"
            )
        check_accelerable(topo, self.eta or 0.0, "detag's accelerated gossip")

    def resolve(self, comm: Communicator) -> tuple[int, float]:
        """``(rounds, eta)`` for this topology, the automatic values filled in (spec §5.7)."""
        self.check_topology(comm)
        topo = comm.topology
        if topo.time_varying:
            return self.rounds or min(topo.period, AUTO_MAX_ROUNDS), 0.0
        lam = topo.at(0).spectral().rho
        if self.eta is not None:
            eta = float(self.eta)
        else:  # symmetric here; a W that does not mix (lam = 1) gets no momentum
            eta = eta_from_lambda(lam) if lam < 1.0 - 1e-12 else 0.0
        rounds = self.rounds or auto_rounds(
            lam, eta, target=AUTO_TARGET, max_rounds=AUTO_MAX_ROUNDS
        )
        return rounds, eta

    def init(self, x: Tensor, comm: Communicator) -> DeTAGState:
        rounds, eta = self.resolve(comm)
        w, D = x.shape
        return DeTAGState(
            step=0,
            rounds=rounds,
            eta=eta,
            tracker=torch.zeros_like(x),
            grad_prev=torch.zeros_like(x),
            grad_acc=torch.zeros_like(x),
            gossip=x.new_zeros((w, 2 * D)),
            gossip_prev=x.new_zeros((w, 2 * D)),
            momentum_buffer=torch.zeros_like(x),
        )

    @staticmethod
    def _load(state: DeTAGState, first: Tensor, second: Tensor) -> None:
        """AG buffers z(0) = z(-1) = [first, second] (z(-1) is not read when eta = 0)."""
        D = first.shape[1]
        state.gossip[:, :D].copy_(first)
        state.gossip[:, D:].copy_(second)
        if state.eta != 0:
            state.gossip_prev.copy_(state.gossip)

    def pre_gradient(self, x: Tensor, state: DeTAGState, comm: Communicator) -> Any:
        """Pipelined: this step's AG round does not need the gradient, so it starts here."""
        if not self.pipelined:
            return None
        if state.step % state.rounds == 0:
            self._load(state, x, state.tracker)
        # mix_start is not in the Communicator protocol (overlap-capable comms)
        return comm.mix_start(state.gossip, comm.topology.at(state.step))

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: DeTAGState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> DeTAGState:
        R = state.rounds
        r = state.step % R
        g = add_weight_decay(g, x, self.weight_decay)
        if r == 0:
            torch.mul(g, 1.0 / R, out=state.grad_acc)
        else:
            state.grad_acc.add_(g, alpha=1.0 / R)
        if self.pipelined:
            if pending is None:
                pending = self.pre_gradient(x, state, comm)
            cur, prev = ag_round(
                comm,
                comm.topology.at(state.step),
                state.gossip,
                state.gossip_prev,
                state.eta,
                pending=pending,
            )
            state = dataclasses.replace(state, gossip=cur, gossip_prev=prev)
        if r == R - 1:
            state = self._end_phase(x, state, comm)
        return dataclasses.replace(state, step=state.step + 1)

    def _end_phase(self, x: Tensor, state: DeTAGState, comm: Communicator) -> DeTAGState:
        D, y = x.shape[1], state.tracker
        if self.pipelined:
            ax, ay = state.gossip[:, :D], state.gossip[:, D:]  # AG_R(x_k), AG_R(y_k)
            d = heavy_ball(state.momentum_buffer, ay, self.momentum, self.nesterov)
            torch.sub(ax, d, alpha=self.lr, out=x)
            torch.add(ay, state.grad_acc, out=y).sub_(state.grad_prev)
        else:
            torch.add(state.gossip[:, D:], state.grad_acc, out=y).sub_(state.grad_prev)
            d = heavy_ball(state.momentum_buffer, y, self.momentum, self.nesterov)
            torch.sub(x, d, alpha=self.lr, out=state.gossip[:, :D])  # z(0) = [x - lr d, y]
            state.gossip[:, D:].copy_(y)
            if state.eta != 0:
                state.gossip_prev.copy_(state.gossip)
            first = state.step - state.rounds + 1
            cur, prev = state.gossip, state.gossip_prev
            for j in range(state.rounds):
                cur, prev = ag_round(comm, comm.topology.at(first + j), cur, prev, state.eta)
            x.copy_(cur[:, :D])
            state = dataclasses.replace(state, gossip=cur, gossip_prev=prev)
        # g~_(k-1) <- g~_k: swap the buffers (the old one is overwritten by the next phase)
        return dataclasses.replace(state, grad_prev=state.grad_acc, grad_acc=state.grad_prev)
