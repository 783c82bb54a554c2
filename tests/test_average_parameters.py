"""``DistributedOptimizer.average_parameters()``: every worker ends with the exact mean x̄ of the
workers' parameters, counted in the bytes like every all-reduce, with or without overlap.

Real gloo processes (2 and 4) run a few D-PSGD steps in float64 and call it with overlap off, with
the default, and with overlap on (the gossip of x still in flight, gradient hooks on).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.base import allreduce_bytes
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

HERE = Path(__file__).parent
MODES = ("plain", "auto", "hooks")


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}-workers")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    n = request.param
    tmp = tmp_path_factory.mktemp(f"average{n}")
    out = tmp / "results.pt"
    procs = start_workers([str(HERE / "_average_worker.py"), str(out)], n, cwd=tmp, log_dir=tmp)
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-3000:] for r in range(n))
    assert codes == [0] * n, f"worker exit codes {codes}\n{logs}"
    return {"n": n, **torch.load(out)}


@pytest.mark.parametrize("mode", MODES)
def test_every_worker_ends_with_the_exact_mean(results: dict, mode: str) -> None:
    n, row = results["n"], results[mode]
    before, after, module = row["before"], row["after"], row["module"]
    assert before.dtype == torch.float64 and tuple(before.shape) == (n, row["D"])
    assert not torch.equal(before[0], before[1])  # the workers really differed
    assert row["overlapping"] == (mode == "hooks")
    # one all-reduce result: bit-identical on every worker, and the module sees it
    for r in range(n):
        assert torch.equal(after[r], after[0])
        assert torch.equal(module[r], after[r])
    mean = before.sum(dim=0) / n
    if n == 2:  # a + b is one rounding whatever the order: exact
        assert torch.equal(after[0], mean)
    else:  # gloo's ring sums each chunk in its own order: equal to the rounding of the sums
        torch.testing.assert_close(after[0], mean, rtol=0, atol=4e-16 * float(before.abs().max()))


@pytest.mark.parametrize("mode", MODES)
def test_the_all_reduce_is_counted_in_the_bytes(results: dict, mode: str) -> None:
    n, row = results["n"], results[mode]
    expected = allreduce_bytes(row["D"] * 8, n)  # 2 (n - 1) / n * D * 8 bytes
    growth = row["bytes"][:, 1] - row["bytes"][:, 0]
    assert torch.equal(growth, torch.full((n,), float(expected), dtype=torch.float64)), growth


def test_one_worker_leaves_x_unchanged() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    comm = SimulatedCommunicator(make_topology("ring", 1))
    opt = DistributedOptimizer(model.parameters(), "dpsgd", comm, lr=0.1)
    model(torch.ones(4, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    before = opt.flat_params.clone()
    opt.average_parameters()
    assert torch.equal(opt.flat_params, before)
    assert torch.equal(torch.cat([model.weight.reshape(-1), model.bias]), before[0])


@pytest.mark.parametrize(
    ("key", "equal"),
    [
        (("local", 1, 3), False),  # each worker keeps its own running statistics
        (("average", 1, 3), True),
        (("broadcast", 1, 3), True),
        (("average", 2, 3), False),  # averaged at step 2, then one local update
        (("average", 2, 4), True),
    ],
    ids=lambda v: str(v),
)
def test_module_buffers_local_averaged_or_broadcast(key: tuple, equal: bool, results: dict) -> None:
    """``module=, buffers=, buffers_every=``: BatchNorm running means of the 4 workers."""
    if results["n"] != 4:
        pytest.skip("run with 4 workers")
    means = results["buffers"][key]
    same = all(torch.equal(means[0], row) for row in means[1:])
    assert same == equal, means
