"""Size limits of issue 25: no module in ``src/peergrad`` over 700 lines, no function over 80.

A function's length is ``end_lineno - lineno + 1`` of its ``def`` node (decorators excluded).
Generated tables would be exempt; there are none today.
"""

from __future__ import annotations

import ast
from pathlib import Path

import peergrad

SRC = Path(peergrad.__file__).parent
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


def test_no_module_over_700_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in sorted(SRC.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_80_lines() -> None:
    long = {}
    for p in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(SRC)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
