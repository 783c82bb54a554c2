"""Overlap never changes the iterates: every registered algorithm on 4 gloo processes, through
the conformance kit's ``overlap`` check (:mod:`peergrad.testing`).

``DistributedOptimizer(overlap=True)`` cuts x into buckets (tiny ones here, so a 4-layer model has
several), posts the x-only gossip at the end of ``step`` and, from the second step on, steps each
bucket on a background thread from the gradient hooks. After 8 steps of a plain loop the
parameters equal those of ``overlap=False`` (one step over the whole buffer, as before overlap
existed): bit-exact in float64 where no all-reduce crossed the wire (the weighted sum of a gossip
is formed in the same order); within 1e-12 relative in float64 and 1e-6 in float32 otherwise
(gloo's ring sums each coordinate in an order that depends on its offset in the message, and
buckets shift the offsets). Coordinate-wise algorithms are really cut into buckets and stepped
from the hooks (not with ``clip_grad_norm``, which needs every gradient); the others are stepped
over the whole buffer. Bytes, rounds and modelled time are identical. A run interrupted after 4
steps (``state_dict``, a new optimizer, ``load_state_dict``) ends bit-exactly where the
uninterrupted overlapped run ends.

The cases (``tests/_conformance_cases.DISTRIBUTED_CASES``: every algorithm in float64 and
float32, plus the forms whose messages differ) run in the same launch as the kit's
engine-parity cases (the ``registry_distributed_reports`` fixture of ``tests/conftest.py``).
Module buffers under ``DistributedOptimizer`` (local, averaged, broadcast):
``tests/test_average_parameters.py``.
"""

from __future__ import annotations

from _conformance_cases import DISTRIBUTED_CASES, NAMES
from peergrad.testing import AlgorithmCase, parametrize_algorithms

OVERLAP_CASES = [c for c in DISTRIBUTED_CASES if "overlap" in c.settings["checks"]]


@parametrize_algorithms(OVERLAP_CASES)
def test_overlapped_step_equals_the_whole_buffer_step(
    case: AlgorithmCase, registry_distributed_reports: dict
) -> None:
    report = registry_distributed_reports[case.key]
    report.raise_for_failures()  # one paragraph per failed check: step, difference, hint
    assert {(r.check, r.dtype) for r in report.passed} == {
        ("overlap", d) for d in case.settings["dtypes"]
    }


def test_cases_cover_the_whole_registry() -> None:
    assert {c.cls.name for c in OVERLAP_CASES} == set(NAMES)
