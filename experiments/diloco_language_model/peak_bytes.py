"""Bytes each worker sends per step for the study's labels (issue 28 item 6: peak bandwidth).

Runs each label's algorithm for 600 steps on the study's model size (the `transformer` preset,
8 workers, simulated engine) with random gradients and reads the communicator's exact byte
counter after every step: the schedule of the traffic does not depend on the gradients, only on
the algorithm, the fragments and the compressor (whose byte counts are exact and fixed per D).
Prints, per label: total bytes per worker, the number of steps that send anything, and the peak
(the most bytes one worker sends in a single step).

Usage: python experiments/diloco_language_model/peak_bytes.py
"""

from __future__ import annotations

import torch

from peergrad.algorithms import bind_run, make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.models import build_model
from peergrad.topology import make_topology

N, STEPS = 8, 600
LABELS: dict[str, tuple[str, dict[str, object]]] = {
    "distributed-adam@sync": ("distributed-adam", {"preset": "adam"}),
    "diloco@H10": ("diloco", {"period": 10}),
    "diloco@H50": ("diloco", {"period": 50}),
    "diloco@H200": ("diloco", {"period": 200}),
    "diloco@H50-int8": (
        "diloco",
        {"period": 50, "outer_compressor": "int8", "outer_exchange": "reduce-scatter",
         "outer_error_feedback": True},
    ),
    "diloco@H50-topk": (
        "diloco",
        {"period": 50, "outer_compressor": "topk", "outer_ratio": 0.05,
         "outer_exchange": "reduce-scatter", "outer_error_feedback": True},
    ),
    "diloco@H50-stream": ("diloco", {"period": 50, "fragments": 4, "overlap_steps": 5}),
}


def main() -> None:
    torch.manual_seed(0)
    model = build_model("transformer", (32,), 256)
    segments = [p.numel() for p in model.parameters()]
    D = sum(segments)
    print(f"transformer preset: D = {D} parameters in {len(segments)} tensors, {N} workers")
    print("| label | bytes per worker (600 steps) | steps that send | peak bytes in one step |")
    print("|---|--:|--:|--:|")
    for label, (name, options) in LABELS.items():
        alg = bind_run(make_algorithm(name, lr=1e-3, **options), segments=segments)
        comm = SimulatedCommunicator(make_topology("ring", N))
        x = torch.zeros(N, D)
        state = alg.init(x, comm)
        gen = torch.Generator().manual_seed(1)
        per_step = []
        before = float(comm.bytes_sent[0])
        for _ in range(STEPS):
            g = torch.randn(N, D, generator=gen)
            state = alg.step(x, g, state, comm)
            after = float(comm.bytes_sent[0])
            per_step.append(after - before)
            before = after
        sending = sum(1 for b in per_step if b > 0)
        print(f"| {label} | {sum(per_step):,.0f} | {sending} | {max(per_step):,.0f} |")


if __name__ == "__main__":
    main()
