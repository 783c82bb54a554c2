"""The test suite itself: an absolute tolerance must be absolute.

``torch.allclose``/``torch.testing.assert_close``/``numpy.allclose``/``numpy.isclose`` keep a
relative tolerance (1e-5, or 1.3e-6 for float32 in ``assert_close``) when only ``atol`` is given,
and that default once let a diverged run (3e155) pass a test of this suite. Every such call that
passes ``atol`` must also say ``rtol`` explicitly (``rtol=0`` where an absolute bound is meant).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
CHECKED = {"allclose", "assert_close", "isclose"}


def loose_tolerances(source: str) -> list[int]:
    """Line numbers of ``allclose``/``assert_close``/``isclose`` calls with ``atol`` but no
    ``rtol`` keyword (``**kwargs`` counts as explicit)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name not in CHECKED:
            continue
        keys = {k.arg for k in node.keywords}
        if "atol" in keys and "rtol" not in keys and None not in keys:
            lines.append(node.lineno)
    return lines


def test_every_absolute_tolerance_says_rtol() -> None:
    offenders = {
        p.name: loose_tolerances(p.read_text())
        for p in sorted(TESTS.glob("*.py"))
        if p.name != Path(__file__).name
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_detector() -> None:
    assert loose_tolerances("torch.allclose(a, b, atol=1e-9)\n") == [1]
    assert loose_tolerances("np.allclose(a,\n b, atol=1e-9)\n") == [1]
    assert loose_tolerances("torch.testing.assert_close(a, b, atol=0.1)\n") == [1]
    assert loose_tolerances("torch.allclose(a, b, atol=1e-9, rtol=0)\n") == []
    assert loose_tolerances("torch.allclose(a, b)\n") == []
    assert loose_tolerances("close(a, b, atol=1)\n") == []
