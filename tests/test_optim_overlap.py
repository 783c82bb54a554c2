"""Overlap never changes the iterates: every registered algorithm on 4 gloo processes.

``DistributedOptimizer(overlap=True)`` cuts x into buckets (tiny ones here, so a 4-layer model has
several), posts the x-only gossip at the end of ``step`` and, from the second step on, steps each
bucket on a background thread from the gradient hooks. After 8 steps of a plain loop the
parameters equal those of ``overlap=False`` (one step over the whole buffer, as before overlap
existed): bit-exact in float64 where every message is a gossip (the weighted sum is formed in
the same order); within 1e-12 relative in float64 and 1e-6 in float32 where a message is an
all-reduce (gloo's ring sums each coordinate in an order that depends on its offset in the
message, and buckets shift the offsets). Bytes, rounds and modelled time are identical. A run
interrupted after 4 steps (``state_dict``, a new optimizer, ``load_state_dict``) ends bit-exactly
where the uninterrupted overlapped run ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from _overlap_cases import CASES, Case
from peergrad.algorithms import REGISTRY, make_algorithm

HERE = Path(__file__).parent
USES_ALLREDUCE = {"allreduce", "local-sgd", "distributed-adam"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("overlap")
    out = tmp / "results.pt"
    procs = start_workers(
        [str(HERE / "_overlap_worker.py"), str(out), str(HERE)], 4, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=600)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-3000:] for r in range(4))
    assert codes == [0, 0, 0, 0], f"worker exit codes {codes}\n{logs}"
    return torch.load(out)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_overlapped_step_equals_the_whole_buffer_step(case: Case, results: dict) -> None:
    row = results[case.key]
    plain, overlap = row["plain"], row["overlap"]
    assert plain.dtype == getattr(torch, case.dtype)
    # clip_grad_norm goes to the optimizer: allreduce then averages and clips g in step() and
    # steps the buckets there (the global norm needs every gradient: no hooks)
    options = {k: v for k, v in case.options.items() if k != "clip_grad_norm"}
    algorithm = make_algorithm(case.algorithm, **options)
    if algorithm.coordinatewise:
        assert row["buckets"] > 2, row["buckets"]  # really cut into buckets
        hooks = "clip_grad_norm" not in case.options
        assert row["overlapping"] == hooks, "buckets were (not) stepped from the gradient hooks"
    else:
        assert row["buckets"] == 1 and not row["overlapping"]
    if case.dtype == "float64" and case.algorithm not in USES_ALLREDUCE:
        assert torch.equal(overlap, plain), float((overlap - plain).abs().max())
    else:
        tol = 1e-12 if case.dtype == "float64" else 1e-6
        rel = float((overlap - plain).abs().max() / plain.abs().max())
        assert rel <= tol, rel
    assert torch.equal(row["bytes_overlap"], row["bytes_plain"])
    assert row["bytes_plain"].min() > 0
    assert row["rounds_overlap"] == row["rounds_plain"]
    assert row["time_overlap"] == pytest.approx(row["time_plain"], rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_resumed_overlapped_run_is_bit_exact(case: Case, results: dict) -> None:
    row = results[case.key]
    assert torch.equal(row["resumed"], row["overlap"])


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
    means = results["buffers"][key]
    same = all(torch.equal(means[0], row) for row in means[1:])
    assert same == equal, means


def test_cases_cover_the_whole_registry() -> None:
    assert {c.algorithm for c in CASES} == set(REGISTRY)
