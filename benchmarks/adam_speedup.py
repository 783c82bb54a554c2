"""Mini-batch / distributed generic Adam on a noisy quadratic: how the error falls with the batch.

Spec ``compression-momentum-adam.md`` §5.8 item 7 (a report, not a CI gate): on
``f(x) = 1/2 ||x||**2`` in d = 100 with additive Gaussian gradient noise σ = 1, generic Adam
with s = 1/2, r = 1 (α_t = lr/√t, θ_t = 1 - 1/t, β = 0.9) runs T = 10**4 steps; the mean of
``||grad f||**2 = ||x||**2`` over the last 10% of the steps is reported for n ∈ {1, 4, 16}.

The runs use the registered ``distributed-adam`` on the simulated engine: n workers, each with
its own noise draw (batch 1 per worker), and an exact all-reduce mean, which is mini-batch Adam
with batch b = n (identical iterates, ``tests/test_generic_adam.py``). Two step-size rules are
compared: a fixed lr, and lr / √b (the question of spec §5.5 whether α must scale with the batch
is [R?]). It prints the error per b, its ratio to b = 1, and the fitted exponent k in error ∝ b^-k
(k = 1 is linear speed-up in the batch).

Usage: ``python benchmarks/adam_speedup.py [--steps 10000] [--seeds 4] [--lr 0.3]``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from peergrad.algorithms import make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.topology import make_topology


def final_error(
    n: int, lr: float, steps: int, seed: int, d: int = 100, sigma: float = 1.0
) -> float:
    """Mean ||x||**2 over the last 10% of ``steps`` for ``n`` workers (float64, x_0 = ones)."""
    alg = make_algorithm("distributed-adam", lr=lr, momentum=0.9, alpha="inv-sqrt", theta="zou:1")
    comm = SimulatedCommunicator(make_topology("complete", n))
    gen = torch.Generator().manual_seed(seed)
    x = torch.ones(n, d, dtype=torch.float64)
    state = alg.init(x, comm)
    tail, acc = steps - steps // 10, 0.0
    for k in range(steps):
        if k >= tail:
            acc += float(x[0].square().sum())
        g = x + sigma * torch.randn(n, d, generator=gen, dtype=torch.float64)
        state = alg.step(x, g, state, comm)
    return acc / (steps - tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--batches", default="1,4,16")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(1)
    start = time.perf_counter()
    for rule, scale in (("fixed lr", lambda b: 1.0), ("lr / sqrt(b)", lambda b: 1 / math.sqrt(b))):
        errors = []
        for b in batches:
            runs = [final_error(b, args.lr * scale(b), args.steps, s) for s in range(args.seeds)]
            errors.append(float(np.mean(runs)))
        k = -np.polyfit(np.log(batches), np.log(errors), 1)[0]
        print(f"{rule}: lr = {args.lr:g}, T = {args.steps}, mean over {args.seeds} seeds")
        print("   b   mean ||grad f||^2 (last 10%)   ratio to b = 1")
        for b, e in zip(batches, errors, strict=True):
            print(f"{b:4d}   {e:.4e}                     {e / errors[0]:.3f}")
        print(f"   fitted: error ~ b^-{k:.2f}  (linear speed-up: b^-1)\n")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
