"""Issue 24, items 1-4: a plain torchrun loop that does what users do around ``backward()`` and
``step()`` ends bit-identical with ``overlap=True`` (gradient hooks, bucket steps on a
background thread) and ``overlap=False``: float64, ``torch.equal``, on 4 and 2 gloo processes.

Hazards (see ``_overlap_hazards_worker.py``): a user ``dist.all_reduce(loss)`` between
``backward()`` and ``step()`` (item 1: peergrad's messages go on its own process group); ``lr``,
``momentum`` and ``weight_decay`` changed there (item 2); gradients masked there, replaced or in
place, differently per rank (item 3); ``p.clamp_()`` after ``step()`` on every rank, and EMA
weights copied in after ``step()`` on rank 0 only (item 4: the early gossip of x is checked and
sent again). Each alone and all together (the acceptance loop), for ``allreduce``, ``dpsgd`` on
the one-peer exponential graph and ``gradient-tracking``. ``allreduce`` runs with one bucket per
param group (the layout of ``overlap=False``), because gloo's ring all-reduce sums a coordinate
in an order that depends on its offset in the message; ``allreduce-tiny-buckets-all`` cuts it
into buckets and is compared within 1e-12 relative on 4 processes (bit-exact on 2, where a sum
of two terms does not depend on the order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _overlap_hazards_worker import CASES  # noqa: E402


def _launch(tmp: Path, n: int) -> dict:
    out = tmp / "results.pt"
    procs = start_workers(
        [str(HERE / "_overlap_hazards_worker.py"), str(out), str(HERE)], n, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=400)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-3000:] for r in range(n))
    assert codes == [0] * n, f"worker exit codes {codes}\n{logs}"
    return torch.load(out)


@pytest.fixture(scope="module")
def results4(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _launch(tmp_path_factory.mktemp("hazards4"), 4)


@pytest.fixture(scope="module")
def results2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _launch(tmp_path_factory.mktemp("hazards2"), 2)


def _check(row: dict, exact: bool, decentralized: bool) -> None:
    plain, overlap = row["plain"], row["overlap"]
    assert row["overlapping"], "the buckets were not stepped from the gradient hooks"
    assert plain.dtype == torch.float64 and plain.shape == overlap.shape
    if exact:
        assert torch.equal(overlap, plain), float((overlap - plain).abs().max())
    else:
        rel = float((overlap - plain).abs().max() / plain.abs().max())
        assert rel <= 1e-12, rel
    if not decentralized:
        return
    assert not torch.equal(plain[0], plain[1])  # the workers really differ


@pytest.mark.parametrize("case", list(CASES))
def test_overlapped_loop_equals_plain_loop_on_4_processes(case: str, results4: dict) -> None:
    exact = case != "allreduce-tiny-buckets-all"
    _check(results4[case], exact, decentralized=not case.startswith("allreduce"))


@pytest.mark.parametrize("case", list(CASES))
def test_overlapped_loop_equals_plain_loop_on_2_processes(case: str, results2: dict) -> None:
    _check(results2[case], True, decentralized=False)  # W averages exactly at n = 2
