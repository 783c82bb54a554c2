"""pytest helpers of the conformance kit: one test per algorithm.

::

    from peergrad.testing import check_case, parametrize_algorithms

    @parametrize_algorithms([MyDSGD, AlgorithmCase(MyDSGD, {"momentum": 0.9}, id="heavy")])
    def test_conformance(case):
        check_case(case)                      # ConformanceError: one line per failed check
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from peergrad.testing._api import AlgorithmCase


def as_cases(algorithms: Iterable[Any]) -> list[AlgorithmCase]:
    """Classes, instances and :class:`AlgorithmCase` as cases (instances keep their options)."""
    out = []
    for a in algorithms:
        if isinstance(a, AlgorithmCase):
            out.append(a)
        elif isinstance(a, type):
            out.append(AlgorithmCase(a))
        else:
            out.append(AlgorithmCase(type(a), a.options()))
    return out


def parametrize_algorithms(algorithms: Iterable[Any], argname: str = "case") -> Any:
    """``pytest.mark.parametrize`` over ``algorithms`` (classes, instances or
    :class:`AlgorithmCase`): the test receives an :class:`AlgorithmCase` as ``argname``, with
    its key as the test id. ``ValueError`` when two cases share a key."""
    cases = as_cases(algorithms)
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"parametrize_algorithms: cases with the same key {dup}; give them an id")
    return pytest.mark.parametrize(argname, cases, ids=keys)
