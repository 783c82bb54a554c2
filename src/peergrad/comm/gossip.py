"""Accelerated gossip: R rounds of gossip with momentum (Chebyshev-type acceleration).

Reference: J. Liu and A. S. Morse, "Accelerated linear iterations for distributed averaging",
Annual Reviews in Control 35(2), 2011; used by DeTAG (Lu & De Sa, ICML 2021, arXiv:2006.08085)
for its multi-round gossip. Specification: ``decentralized.md`` §5.2 [V].

Recurrence, per worker, on a value ``z`` (``[w, ...]``) with mixing matrix W::

    z(-1) = z(0) = z
    z(r+1) = (1 + eta) * (W z(r)) - eta * z(r-1)        r = 0 ... R-1
    AG_R(z) = z(R)

For an eigenvalue ``mu`` of W the mode is multiplied by ``p_R(mu)`` with
``p_(r+1)(mu) = (1 + eta) mu p_r(mu) - eta p_(r-1)(mu)``, ``p_0 = p_(-1) = 1``
(:func:`ag_polynomial`). With ``lam = max(|lambda_2|, |lambda_n|)`` of a **symmetric** W the
momentum ``eta = (1 - sqrt(1 - lam^2)) / (1 + sqrt(1 - lam^2))`` (:func:`optimal_eta`) makes the
discriminant of ``s^2 - (1 + eta) mu s + eta`` vanish at ``|mu| = lam``: the slowest mode decays
like ``sqrt(eta) ~ 1 - sqrt(2 (1 - lam))`` per round instead of ``lam ~ 1 - (1 - lam)``.

Properties: AG is linear and, for doubly stochastic W, preserves the average exactly (the
coefficients sum to one and ``z(-1) = z(0)``); ``eta = 0`` gives ``W^R``; on the complete graph
(``lam = 0``, ``eta = 0``) one round averages exactly.

Directed or time-varying W: the argument above needs a real spectrum, and on the directed
exponential graph AG with ``eta`` from ``rho = ||W - J||_2`` is *worse* than plain gossip
(spec §5.2). :func:`accelerated_gossip` therefore raises ``ValueError`` for a non-symmetric or
time-varying W unless ``eta == 0`` (plain multi-round gossip, always valid for doubly stochastic
W). :func:`ag_operator` still evaluates AG on any W, for analysis.

Engines: only ``comm.mix`` and element-wise math are used, so both engines run this unchanged;
every round is one ``comm.mix`` (one message per neighbour, accounted by the communicator).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from peergrad.comm.base import Communicator, PendingMix
from peergrad.topology import MixingMatrix, Topology

__all__ = [
    "accelerated_gossip",
    "ag_operator",
    "ag_polynomial",
    "ag_round",
    "auto_rounds",
    "check_accelerable",
    "eta_from_lambda",
    "optimal_eta",
]


def eta_from_lambda(lam: float) -> float:
    """``(1 - sqrt(1 - lam^2)) / (1 + sqrt(1 - lam^2))`` for ``0 <= lam <= 1`` (spec §5.2)."""
    if not (math.isfinite(lam) and 0.0 <= lam <= 1.0 + 1e-12):
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    s = math.sqrt(max(0.0, 1.0 - lam * lam))
    return (1.0 - s) / (1.0 + s)


def _single(W: MixingMatrix | Topology, what: str) -> MixingMatrix:
    if isinstance(W, Topology):
        if W.time_varying:
            raise ValueError(
                f"{what} needs a fixed mixing matrix, but topology {W.name!r} is time-varying "
                f"(period {W.period})"
            )
        return W.matrices[0]
    return W


def optimal_eta(W: MixingMatrix | Topology) -> float:
    """The AG momentum of spec §5.2 from ``lam = max(|lambda_2|, |lambda_n|)`` of symmetric W.

    Raises ``ValueError`` for a non-symmetric (directed) or time-varying W: the formula assumes a
    real spectrum; run plain multi-round gossip (``eta = 0``) there.
    """
    M = _single(W, "optimal_eta")
    if not M.symmetric:
        raise ValueError(
            f"optimal_eta needs a symmetric mixing matrix, but {M.name!r} is directed; "
            "accelerated gossip is not defined there (use eta = 0)"
        )
    return eta_from_lambda(M.spectral().rho)


def ag_polynomial(mu: float | np.ndarray, rounds: int, eta: float) -> float | np.ndarray:
    """``p_R(mu)``: the factor AG applies to an eigenvector of W with eigenvalue ``mu``.

    ``p_(r+1) = (1 + eta) mu p_r - eta p_(r-1)`` with ``p_0 = p_(-1) = 1``. ``mu`` may be an
    array (complex eigenvalues of a directed W included).
    """
    _check_rounds_eta(rounds, eta)
    prev = cur = np.ones_like(np.asarray(mu), dtype=np.result_type(np.asarray(mu), np.float64))
    for _ in range(rounds):
        prev, cur = cur, (1.0 + eta) * mu * cur - eta * prev
    return cur if isinstance(mu, np.ndarray) else cur.item()


def ag_operator(W: MixingMatrix | np.ndarray, rounds: int, eta: float) -> np.ndarray:
    """The ``[n, n]`` matrix of ``AG_R`` for W (float64 numpy), any W; for analysis only.

    ``||ag_operator(W, R, eta) - J||_2`` is the worst-case consensus contraction after R rounds.
    """
    _check_rounds_eta(rounds, eta)
    M = np.asarray(W.dense if isinstance(W, MixingMatrix) else W, dtype=np.float64)
    prev = cur = np.eye(M.shape[0])
    for _ in range(rounds):
        prev, cur = cur, (1.0 + eta) * (M @ cur) - eta * prev
    return cur


def auto_rounds(lam: float, eta: float, *, target: float = 0.1, max_rounds: int = 8) -> int:
    """Smallest R >= 1 with ``|p_R(lam)| <= target``, capped at ``max_rounds`` (spec §5.7).

    The rule looks at ``mu = lam`` only, as the spec states it. [D] Modes with a negative
    eigenvalue ``mu = -lam`` shrink more slowly in the first rounds (``|p_1(-lam)| =
    (1 + eta) lam + eta``), so on graphs with ``lambda_n`` close to ``-lam`` the contraction after
    R rounds can be weaker than ``target``.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    prev = cur = 1.0
    for r in range(1, max_rounds + 1):
        prev, cur = cur, (1.0 + eta) * lam * cur - eta * prev
        if abs(cur) <= target:
            return r
    return max_rounds


def _check_rounds_eta(rounds: int, eta: float) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    if not (isinstance(eta, int | float) and 0.0 <= eta < 1.0):
        raise ValueError(f"eta must be in [0, 1), got {eta!r}")


def check_accelerable(
    W: MixingMatrix | Topology, eta: float, what: str = "accelerated gossip"
) -> None:
    """Raise ``ValueError`` when ``eta != 0`` on a directed or time-varying W (spec §5.2).

    The message names the topology and says that eta must be 0 there.
    """
    if eta == 0:
        return
    if isinstance(W, Topology) and W.time_varying:
        raise ValueError(
            f"{what} with momentum eta = {eta} needs a fixed symmetric mixing matrix, but "
            f"topology {W.name!r} is time-varying; eta must be 0 there (plain multi-round gossip)"
        )
    M = _single(W, what)
    if not M.symmetric:
        raise ValueError(
            f"{what} with momentum eta = {eta} needs a symmetric mixing matrix, but "
            f"{M.name!r} is directed (its eigenvalues are complex and momentum makes mixing "
            "worse, spec §5.2); eta must be 0 there (plain multi-round gossip)"
        )


def accelerated_gossip(
    comm: Communicator,
    x: Tensor,
    W: MixingMatrix | Topology,
    rounds: int,
    eta: float,
    *,
    out: Tensor | None = None,
    start_round: int = 0,
) -> Tensor:
    """``AG_R(x)``: ``rounds`` gossip rounds with momentum ``eta`` (one ``comm.mix`` each).

    Args:
        comm: the communicator (bytes and time are accounted by it, one message per round).
        x: ``[w, ...]`` values, not modified.
        W: the mixing matrix, or a topology whose round ``start_round + r`` matrix is used in
            round r (only with ``eta == 0`` when it is time-varying).
        rounds: R >= 0 (0 returns a copy of x).
        eta: momentum in [0, 1); 0 gives plain gossip ``W^R x``.
        out: receives the result when given (shape of x, not overlapping it).
        start_round: index of the first round in a time-varying schedule.

    Raises:
        ValueError: bad ``rounds``/``eta``; ``eta != 0`` on a directed or time-varying W.
    """
    _check_rounds_eta(rounds, eta)
    check_accelerable(W, eta)
    if out is None:
        out = torch.empty_like(x)
    if rounds == 0:
        return out.copy_(x)

    def matrix(r: int) -> MixingMatrix:
        return W.at(start_round + r) if isinstance(W, Topology) else W

    prev, cur = x, x
    for r in range(rounds):
        # Three scratch slots rotate: the destination is never z(r) or z(r-1).
        dst = out if r == rounds - 1 else comm.workspace(x, f"gossip.ag{r % 3}")
        comm.mix(cur, matrix(r), out=dst)
        if eta != 0:
            torch.lerp(prev, dst, 1.0 + eta, out=dst)  # (1 + eta) W z(r) - eta z(r-1)
        prev, cur = cur, dst
    return out


def ag_round(
    comm: Communicator,
    W: MixingMatrix,
    cur: Tensor,
    prev: Tensor,
    eta: float,
    *,
    pending: PendingMix | None = None,
) -> tuple[Tensor, Tensor]:
    """One AG round on persistent buffers (the stateful form used by DeTAG's pipeline).

    ``cur`` holds ``z(r)`` and ``prev`` holds ``z(r-1)`` (load both with z before round 0).
    ``z(r+1) = (1 + eta) W z(r) - eta z(r-1)`` is written into ``prev``'s storage and the pair is
    returned swapped: ``(new_cur, new_prev) = (prev, cur)``. ``pending`` is a gossip of ``cur``
    already started with ``comm.mix_start(cur, W)`` (to overlap it with computation).

    The caller checks W and eta (:func:`check_accelerable`) once, not every round.
    """
    if eta == 0:
        if pending is not None:
            pending.wait(prev)
        else:
            comm.mix(cur, W, out=prev)
    else:
        mixed = comm.workspace(cur, "gossip.ag_round")
        if pending is not None:
            pending.wait(mixed)
        else:
            comm.mix(cur, W, out=mixed)
        torch.lerp(prev, mixed, 1.0 + eta, out=prev)
    return prev, cur
