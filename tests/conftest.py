from __future__ import annotations

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def registry_distributed_reports() -> dict:
    """The conformance kit's distributed checks (``engine_parity``, ``overlap``) on every case of
    ``tests/_conformance_cases.DISTRIBUTED_CASES``, in one launch of 4 gloo processes shared by
    ``tests/test_conformance.py`` and ``tests/test_optim_overlap.py``, with the kit's own
    distributed cases (``USER_DISTRIBUTED_CASES``, ``tests/test_conformance_kit.py``):
    ``{case key: report}``."""
    from _conformance_cases import DISTRIBUTED_CASES, USER_DISTRIBUTED_CASES
    from peergrad.testing import check_algorithms

    cases = [*DISTRIBUTED_CASES, *USER_DISTRIBUTED_CASES]
    return check_algorithms(cases, distributed=True, timeout_s=900)
