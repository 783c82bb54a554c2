"""Worker of ``test_collectives_gloo.py``: the asynchronous mean, the all-to-all and the
reduce-scatter exchange on the distributed engine, one worker per process.

Started n times with torchrun's environment variables. Rank r writes
``{"means": {...}, "all_to_all": [1, n, P], "reduce_scatter": {case: {...}}}`` to
``argv[1]/rank{r}.pt``. :func:`reduce_scatter_cases` is shared with the test, which runs it on
the simulated engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from peergrad.comm import distributed
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import make_compressor
from peergrad.topology import make_topology

D = 45
F64 = torch.float64
#: (compressor, options, dtype): every case of the reduce-scatter parity test
CASES: list[tuple[str, dict[str, Any], torch.dtype]] = [
    (name, options, dtype)
    for dtype in (torch.float64, torch.float32)
    for name, options in (
        ("identity", {}),
        ("topk", {"ratio": 0.2}),
        ("int8", {"chunk": 4}),
        ("int4", {"chunk": 4}),
        ("bf16", {}),
        ("fp16", {}),
        ("sign", {}),
        ("qsgd", {"levels": 3}),
    )
]


def inputs(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """Every worker's values ``[n, D]`` (each engine keeps the rows of its workers)."""
    return (torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3).to(
        dtype
    )


def reduce_scatter_cases(comm_for: Callable[[], Any]) -> dict[int, dict[str, Any]]:
    """Every case of :data:`CASES` on a fresh communicator: result rows, bytes, wire log."""
    results = {}
    for k, (name, options, dtype) in enumerate(CASES):
        comm = comm_for()
        n, ids = comm.n_workers, comm.worker_ids
        c = make_compressor(name, **options)
        gen = torch.Generator().manual_seed(20 + k)
        msg = c.compress(inputs(n, k, dtype)[ids], gen, worker_ids=ids, n_workers=n)
        out = compressed_mean(
            comm, c, msg, exchange="reduce-scatter", generator=gen if c.stochastic else None
        )
        wire = getattr(comm, "wire_log", None)
        results[k] = {
            "x": out.clone(),
            "bytes": comm.bytes_sent.clone(),
            "wire": None if wire is None else [(r.op, r.nbytes) for r in wire],
        }
    return results


def _wire(comm: distributed.DistributedCommunicator) -> list[tuple[str, int, int | None]]:
    return [(r.op, r.nbytes, r.peer) for r in comm.wire_log or []]


def async_means(comm: distributed.DistributedCommunicator) -> dict[str, Any]:
    """``mean_start``/``wait_for`` against ``mean`` on one communicator (float64)."""
    n, r = comm.n_workers, comm.rank
    xs = [inputs(n, 100 + k)[r : r + 1] * 10.0**k for k in range(3)]
    expected = [comm.mean(x).clone() for x in xs]
    blocking_bytes, blocking_wire = float(comm.bytes_sent[0]), _wire(comm)
    buf = torch.zeros(1, 2 * D, dtype=F64)
    wide = torch.zeros(1, 2 * D, dtype=F64)
    outs = [buf[:, :D], buf[:, D:], wide[:, ::2]]  # the last one is not contiguous
    copies = [x.clone() for x in xs]
    for x, out in zip(copies, outs, strict=True):
        comm.mean_start(x, out=out)
    for x in copies:
        x.mul_(-3.0)  # after the post: must not change the results
    try:
        comm.mean_start(xs[0], out=buf[:, :D])
        error = ""
    except ValueError as exc:
        error = str(exc)
    waited = [comm.wait_for(v) for v in (wide[:, ::2], buf[:, D:], buf[:, :D])][::-1]
    same = [torch.equal(w, e) for w, e in zip(waited, expected, strict=True)]
    own = xs[1].clone()
    comm.mean_start(own, out=own)  # out is x
    comm.synchronize()
    same.append(torch.equal(own, expected[1]))
    lone = torch.ones(1, 3, dtype=F64)
    same.append(comm.wait_for(lone) is lone)
    return {
        "same": same,
        "error": error,
        "bytes": (blocking_bytes, float(comm.bytes_sent[0])),
        "wire": (blocking_wire, _wire(comm)[len(blocking_wire) :]),
    }


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n, rank = distributed.dist.get_world_size(), distributed.dist.get_rank()

    def comm_for() -> distributed.DistributedCommunicator:
        return distributed.DistributedCommunicator(make_topology("ring", n), record_wire=True)

    comm = comm_for()
    results: dict[str, Any] = {"means": async_means(comm)}
    P = 3
    slots = torch.tensor([[[10 * rank + j] * P for j in range(n)]], dtype=torch.uint8)
    results["all_to_all"] = comm.all_to_all(slots).clone()
    results["reduce_scatter"] = reduce_scatter_cases(comm_for)
    # a mean left in flight: destroy_process_group waits for it and drops the work handle
    left = inputs(n, 7)[rank : rank + 1].clone()
    comm.mean_start(left, out=left)
    distributed.destroy_process_group()
    results["drained"] = (not comm._in_flight, left.clone())
    torch.save(results, Path(sys.argv[1]) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
