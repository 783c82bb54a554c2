"""The collectives of issue 28 on real gloo processes (2 and 4 on loopback, without torchrun;
worker ``_collectives_worker.py``):

- ``mean_start``/``wait_for``/``synchronize`` give ``mean``'s result bit for bit (float64),
  with three means in flight at once (one into a non-contiguous ``out``), x changed after the
  post, ``out`` being x, and the same bytes and wire log as the blocking means; posting into
  an ``out`` in flight is an error; ``destroy_process_group`` waits for a mean left in flight;
- ``all_to_all`` delivers slot j of worker i to worker j;
- the reduce-scatter exchange equals the simulated engine bit for bit (float64 and float32;
  identity, top-k, int8, int4, bf16, fp16, sign, and QSGD from a shared generator), with the
  same bytes, ``2 (n - 1) nbytes(S)``, and exactly those tensors handed to torch.distributed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _collectives_worker import CASES, D, inputs, reduce_scatter_cases
from _distributed import start_workers, wait_all
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.compressed import shard_width
from peergrad.compress import make_compressor
from peergrad.topology import make_topology

HERE = Path(__file__).parent


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"n{n}")
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    n = request.param
    tmp = tmp_path_factory.mktemp(f"collectives{n}")
    argv = [str(HERE / "_collectives_worker.py"), str(tmp)]
    procs = start_workers(argv, n, cwd=tmp, log_dir=tmp)
    codes = wait_all(procs, timeout_s=240)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(n))
    assert codes == [0] * n, f"worker exit codes {codes}\n{logs}"
    return n, [torch.load(tmp / f"rank{r}.pt") for r in range(n)]


def test_mean_start_is_mean_bit_for_bit_and_teardown_drains(run) -> None:
    n, results = run
    for r, result in enumerate(results):
        means = result["means"]
        assert means["same"] == [True] * 5, r
        assert means["error"].startswith("mean_start: a mean posted into this out is still")
        blocking, total = means["bytes"]
        one = 2 * (n - 1) / n * D * 8  # charged at each post, as mean charges it
        assert blocking == 3 * one and total == pytest.approx(7 * one, rel=1e-15)
        blocking_wire, posted_wire = means["wire"]
        assert blocking_wire == [("all_reduce", D * 8, None)] * 3
        assert posted_wire == blocking_wire + [("all_reduce", D * 8, None)]
        drained, left = result["drained"]
        assert drained
        torch.testing.assert_close(left, inputs(n, 7).mean(0, keepdim=True), rtol=0, atol=1e-14)


def test_all_to_all_delivers_slot_j_to_worker_j(run) -> None:
    n, results = run
    for r, result in enumerate(results):
        expected = torch.tensor([[[10 * j + r] * 3 for j in range(n)]], dtype=torch.uint8)
        assert torch.equal(result["all_to_all"], expected)


def test_reduce_scatter_equals_the_simulated_engine_bit_for_bit(run) -> None:
    n, results = run
    simulated = reduce_scatter_cases(lambda: SimulatedCommunicator(make_topology("ring", n)))
    for k, (name, options, dtype) in enumerate(CASES):
        P = make_compressor(name, **options).nbytes(
            shard_width(D, n, make_compressor(name, **options).alignment), dtype
        )
        sim = simulated[k]
        assert sim["bytes"].tolist() == [2 * (n - 1) * P] * n
        for r, result in enumerate(results):
            case = result["reduce_scatter"][k]
            assert case["x"].dtype == dtype
            assert torch.equal(case["x"][0], sim["x"][r]), (name, dtype, r)
            assert float(case["bytes"][0]) == float(sim["bytes"][r])
            assert case["wire"] == [("all_to_all", n * P), ("all_gather", P)]
