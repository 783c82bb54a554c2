"""Import boundary: only peergrad/comm/distributed.py may import torch.distributed."""

from __future__ import annotations

import ast
from pathlib import Path

import peergrad

SRC = Path(peergrad.__file__).parent


def imports_torch_distributed(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name.startswith("torch.distributed") for a in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith("torch.distributed"):
                return True
            if mod == "torch" and any(a.name == "distributed" for a in node.names):
                return True
    return False


def test_only_comm_distributed_imports_torch_distributed() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if imports_torch_distributed(p) and p.relative_to(SRC).as_posix() != "comm/distributed.py"
    ]
    assert offenders == []


def test_detector_finds_an_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("from torch import distributed as dist\n")
    assert imports_torch_distributed(f)
    f.write_text("import torch.distributed\n")
    assert imports_torch_distributed(f)
    f.write_text("import torch\n")
    assert not imports_torch_distributed(f)
