"""The test suite itself: an absolute tolerance must be absolute.

``torch.allclose``/``torch.testing.assert_close``/``numpy.allclose``/``numpy.isclose`` keep a
relative tolerance (1e-5, or 1.3e-6 for float32 in ``assert_close``) when only ``atol`` is given,
and that default once let a diverged run (3e155) pass a test of this suite. Every such call that
passes ``atol`` must also say ``rtol`` explicitly (``rtol=0`` where an absolute bound is meant).
``math.isclose`` has the same trap under other names (``abs_tol`` alone keeps ``rel_tol=1e-9``).

``pytest.approx(x, abs=...)`` is not checked: with ``abs`` and no ``rel`` pytest uses the absolute
tolerance alone (its default ``rel=1e-6`` joins in only when no ``abs`` is given), so ``abs=``
there already is the bound; ``test_approx_abs_alone_is_absolute`` pins that behaviour,
which about fifty assertions of this suite rely on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
CHECKED = {"allclose", "assert_close", "isclose"}
# keyword pairs (absolute, relative): torch/numpy spell them atol/rtol, math.isclose abs_tol/rel_tol
TOLERANCE_KEYWORDS = (("atol", "rtol"), ("abs_tol", "rel_tol"))


def loose_tolerances(source: str) -> list[int]:
    """Line numbers of ``allclose``/``assert_close``/``isclose`` calls with ``atol`` but no
    ``rtol`` keyword, or ``abs_tol`` but no ``rel_tol`` (``**kwargs`` counts as explicit)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name not in CHECKED:
            continue
        keys = {k.arg for k in node.keywords}
        if None not in keys and any(a in keys and r not in keys for a, r in TOLERANCE_KEYWORDS):
            lines.append(node.lineno)
    return lines


def test_every_absolute_tolerance_says_rtol() -> None:
    offenders = [
        f"tests/{p.name}:{line}"
        for p in sorted(TESTS.glob("*.py"))
        if p.name != Path(__file__).name
        for line in loose_tolerances(p.read_text())
    ]
    hint = "absolute tolerance without a relative one (say rtol=0 / rel_tol=0 if absolute is meant)"
    assert not offenders, f"{hint}: {', '.join(offenders)}"


def test_approx_abs_alone_is_absolute() -> None:
    # 0.5 off at 1e6 is inside the default rel=1e-6 (1.0) but far outside abs=1e-12: an ``abs``
    # without ``rel`` must reject it, for scalars, sequences, mappings and arrays alike
    assert 1e6 + 0.5 == pytest.approx(1e6)
    assert 1e6 + 0.5 != pytest.approx(1e6, abs=1e-12)
    assert [1e6 + 0.5] != pytest.approx([1e6], abs=1e-12)
    assert {"x": 1e6 + 0.5} != pytest.approx({"x": 1e6}, abs=1e-12)
    assert np.array([1e6 + 0.5]) != pytest.approx(np.array([1e6]), abs=1e-12)


def test_detector() -> None:
    assert loose_tolerances("torch.allclose(a, b, atol=1e-9)\n") == [1]
    assert loose_tolerances("np.allclose(a,\n b, atol=1e-9)\n") == [1]
    assert loose_tolerances("torch.testing.assert_close(a, b, atol=0.1)\n") == [1]
    assert loose_tolerances("torch.allclose(a, b, atol=1e-9, rtol=0)\n") == []
    assert loose_tolerances("torch.allclose(a, b)\n") == []
    assert loose_tolerances("close(a, b, atol=1)\n") == []
    assert loose_tolerances("math.isclose(a, b, abs_tol=1e-9)\n") == [1]
    assert loose_tolerances("isclose(a, b, abs_tol=1e-9, rel_tol=0)\n") == []
    assert loose_tolerances("math.isclose(a, b, rel_tol=1e-9)\n") == []
    assert loose_tolerances("torch.allclose(a, b, **tol)\n") == []
