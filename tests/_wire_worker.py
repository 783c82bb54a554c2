"""Worker of ``test_wire_bytes.py``: run the compressed methods on the distributed engine with a
wire log, one worker per process; save what was handed to torch.distributed.

Started n times with torchrun's environment variables. Rank r writes
``{case: {"x": [1, D], "bytes": float, "wire": [(op, nbytes, peer), ...]}}`` to
``argv[1]/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from peergrad.algorithms import make_algorithm
from peergrad.algorithms.base import LossClosure
from peergrad.comm import distributed
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import make_topology

D, STEPS = 40, 6
#: (algorithm, options, topology): every way a compressed method puts bytes on the wire.
CASES: list[tuple[str, dict[str, object], str]] = [
    ("choco-sgd", {"compressor": "topk", "ratio": 0.1}, "ring"),
    ("choco-sgd", {"compressor": "qsgd", "levels": 3}, "ring"),
    ("choco-sgd", {"compressor": "identity"}, "ring"),
    (
        "choco-sgd",
        {"compressor": "topk", "ratio": 0.2, "layerwise": True, "segments": (10, 30)},
        "ring",
    ),
    ("ef-sgd", {"compressor": "randomk", "ratio": 0.1}, "ring"),
    ("ef-sgd", {"compressor": "identity"}, "ring"),
    # linear compressors: one all-reduce of the k values (exchange=auto), or the all-gather forced
    ("ef-sgd", {"compressor": "randomk", "ratio": 0.1, "exchange": "allgather"}, "ring"),
    (
        "ef-sgd",
        {"compressor": "randomk", "ratio": 0.2, "layerwise": True, "segments": (10, 30)},
        "ring",
    ),
    ("ef-sgd", {"compressor": "terngrad"}, "ring"),
    ("armijo-csgd", {"compressor": "topk", "ratio": 0.1, "agree_step": "min"}, "ring"),
    # PowerSGD: plain all-reduce for 2 steps, then the uncompressed tensors, P and Q
    ("powersgd", {"rank": 1, "start_iter": 2, "shapes": ((5, 6), (10,))}, "ring"),
    ("powersgd", {"rank": 2, "min_compression_rate": 0.0, "shapes": ((4, 2, 3), (16,))}, "ring"),
]


def run_case(name: str, options: dict, topology: str, comm_for) -> tuple[torch.Tensor, object]:
    """Run one case for the workers held by ``comm_for(topology)``; returns (x, comm)."""
    comm = comm_for(topology)
    ids = comm.worker_ids
    problem = heterogeneous_quadratics(n=comm.n_workers, d=D, seed=0)
    a, b = torch.tensor(problem.a)[ids], torch.tensor(problem.b)[ids]
    alg = make_algorithm(name, lr=0.1, **options)
    x = torch.zeros(len(ids), D, dtype=torch.float64)
    state = alg.init(x, comm)
    for _ in range(STEPS):
        g = a * (x - b)
        loss = 0.5 * (a * (x - b) ** 2).sum(1)
        closure = LossClosure(lambda X: 0.5 * (a * (X - b) ** 2).sum(1), loss)
        state = alg.step(x, g, state, comm, closure=closure)
    return x, comm


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n = distributed.dist.get_world_size()
    results = {}
    for k, (name, options, topology) in enumerate(CASES):
        x, comm = run_case(
            name,
            options,
            topology,
            lambda t: distributed.DistributedCommunicator(make_topology(t, n), record_wire=True),
        )
        results[k] = {
            "x": x.clone(),
            "bytes": float(comm.bytes_sent[0]),
            "wire": [(r.op, r.nbytes, r.peer) for r in comm.wire_log],
        }
    torch.save(results, Path(sys.argv[1]) / f"rank{distributed.dist.get_rank()}.pt")
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
