"""Shared test helpers: run an algorithm on the heterogeneous quadratics of spec §7; the flags of
a small, fast CLI run."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from peergrad.algorithms import Algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import Topology, make_topology

#: ``peergrad train`` / ``compare`` flags of a small run (digits, logreg, 4 workers, 12 steps).
SMALL = [
    "--dataset",
    "digits",
    "--model",
    "logreg",
    "--workers",
    "4",
    "--steps",
    "12",
    "--eval-every",
    "4",
    "--batch-size",
    "16",
    "--no-progress",
]


def run_quadratics(
    algorithm: Algorithm,
    topology: str | Topology = "ring",
    *,
    n: int = 8,
    d: int = 5,
    steps: int = 4000,
    seed: int = 0,
    noise: float = 0.0,
    callback: Callable[[int, Tensor, Tensor, object], None] | None = None,
) -> tuple[Tensor, object, SimulatedCommunicator]:
    """Deterministic (or noisy) gradients of f_i(x) = ½ Σ_c a_ic (x_c − b_ic)², X₀ = 0, float64.

    ``callback(k, x_before, g, state_before)`` runs before each step.
    """
    problem = heterogeneous_quadratics(n=n, d=d, seed=seed)
    topo = make_topology(topology, n) if isinstance(topology, str) else topology
    comm = SimulatedCommunicator(topo)
    x = torch.zeros(n, d, dtype=torch.float64)
    state = algorithm.init(x, comm)
    gen = torch.Generator().manual_seed(1234)
    for k in range(steps):
        g = problem.grad(x)
        if noise:
            g = g + noise * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        if callback is not None:
            callback(k, x.clone(), g, state)
        state = algorithm.step(x, g, state, comm)
    return x, problem, comm
