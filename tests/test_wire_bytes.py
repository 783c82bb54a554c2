"""Byte accounting on the distributed engine is exact: ``bytes_sent`` equals what the tensors
handed to ``torch.distributed`` add up to, and compressed messages travel packed.

Starts 3 real gloo processes on loopback (``_wire_worker.py``) that run the compressed methods
with ``DistributedCommunicator(record_wire=True)``; every send, all-gather and all-reduce is in
the wire log with the ``numel * itemsize`` of the tensor handed over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from _wire_worker import CASES, STEPS, D, run_case
from peergrad.algorithms import make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.topology import make_topology

HERE = Path(__file__).parent
WORLD = 3


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("wire")
    procs = start_workers([str(HERE / "_wire_worker.py"), str(tmp)], WORLD, cwd=tmp, log_dir=tmp)
    codes = wait_all(procs, timeout_s=180)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(WORLD))
    assert codes == [0] * WORLD, f"worker exit codes {codes}\n{logs}"
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def charged(wire: list[tuple[str, int, int | None]], n: int) -> float:
    """Bytes a worker sent, from the tensors it handed over: a gossip send costs its size, a ring
    all-gather (n - 1) times it, a ring all-reduce 2 (n - 1) / n times it."""
    factor = {"send": 1.0, "all_gather": float(n - 1), "all_reduce": 2.0 * (n - 1) / n}
    return sum(factor[op] * nbytes for op, nbytes, _ in wire)


@pytest.mark.parametrize(
    "k",
    range(len(CASES)),
    ids=[f"{k}-{c[0]}-{c[1].get('compressor', 'lowrank')}" for k, c in enumerate(CASES)],
)
def test_bytes_sent_is_what_was_handed_to_torch_distributed(k: int, wire: list[dict]) -> None:
    """On every rank: bytes_sent equals the wire log's total and the simulated engine's count;
    CHOCO-SGD sends exactly one packed message of C.nbytes to each ring neighbour per step (it
    used to send D dense values while counting C.nbytes); PowerSGD all-reduces D values before
    start_iter, then the uncompressed tensors, P and Q; the iterates match the simulated
    engine."""
    name, options, topology = CASES[k]
    x_sim, comm_sim = run_case(
        name, options, topology, lambda t: SimulatedCommunicator(make_topology(t, WORLD))
    )
    alg = make_algorithm(name, **options)
    for r, result in enumerate(wire):
        case = result[k]
        assert case["wire"], "nothing was sent"
        assert case["bytes"] == pytest.approx(charged(case["wire"], WORLD), rel=1e-12, abs=0)
        assert case["bytes"] == float(comm_sim.bytes_sent[r])  # both engines count the same
        if name == "choco-sgd":  # per step one message to each of the 2 ring neighbours
            message = alg.make_compressor().nbytes(D, torch.float64)
            peers = [(r - 1) % WORLD, (r + 1) % WORLD]
            expected = [("send", message, p) for _ in range(STEPS) for p in peers]
            assert sorted(case["wire"]) == sorted(expected)
        if name == "powersgd":  # D values, then uncompressed tensors (if any), P, Q per step
            plan = alg.plan(D)
            messages = [size for size in (plan.u_size, plan.p_size, plan.q_size) if size]
            sizes = [D] * alg.start_iter + messages * (STEPS - alg.start_iter)
            assert case["wire"] == [("all_reduce", 8 * size, None) for size in sizes]
        torch.testing.assert_close(case["x"][0], x_sim[r], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [k for k, c in enumerate(CASES) if c[0] == "ef-sgd"])
def test_ef_sgd_all_reduces_only_the_values_of_a_linear_compressor(
    k: int, wire: list[dict]
) -> None:
    """ef-sgd hands torch.distributed one [1, k] all-reduce per step for a linear compressor
    (random-k: its k values, no indices, no seed; layer-wise: the segments' values in one
    tensor; identity: D values) under exchange=auto, else one packed message of C.nbytes to
    all-gather; random-k gives the same iterates by either exchange."""
    name, options, _ = CASES[k]
    alg = make_algorithm(name, **options)
    C = alg.compressor_for(D, error_feedback=alg.memory)
    if C.linear and alg.exchange != "allgather":
        msg = C.compress(torch.zeros(1, D, dtype=torch.float64), torch.Generator())
        expected = [("all_reduce", 8 * C.linear_values(msg).shape[1], None)] * STEPS
    else:
        expected = [("all_gather", C.nbytes(D, torch.float64), None)] * STEPS
    for result in wire:
        assert result[k]["wire"] == expected
    if options.get("exchange") == "allgather":  # the same case without it: all-reduced
        plain = {key: v for key, v in options.items() if key != "exchange"}
        auto = [j for j, c in enumerate(CASES) if c[:2] == (name, plain)]
        assert len(auto) == 1
        for result in wire:
            torch.testing.assert_close(result[auto[0]]["x"], result[k]["x"], rtol=0, atol=1e-12)
