"""Import boundaries: only peergrad/comm/distributed.py may import torch.distributed; the data
package knows nothing of optimizers; collectives live with the communicators."""

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


def peergrad_imports(path: Path) -> set[str]:
    """The ``peergrad.*`` modules a file imports (relative imports resolved against its package)."""
    package = ("peergrad." + ".".join(path.parent.relative_to(SRC).parts)).rstrip(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("peergrad")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("peergrad"):
                found.add(mod)
    return found


def test_data_package_knows_nothing_of_optimizers() -> None:
    """``peergrad.data`` holds data sets and partitioners only: no optimizer, algorithm,
    transform or test problem (those moved to ``peergrad.problems``)."""
    allowed = ("peergrad.data",)
    offenders = {
        p.name: sorted(m for m in peergrad_imports(p) if not m.startswith(allowed))
        for p in (SRC / "data").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert not (SRC / "data" / "reddi.py").exists()
    assert not (SRC / "data" / "quadratics.py").exists()


def test_collectives_live_with_the_communicators() -> None:
    """Compressors are local math; averaging compressed messages is a collective (comm/)."""
    for p in (SRC / "compress").rglob("*.py"):
        assert not any(m.startswith("peergrad.comm") for m in peergrad_imports(p)), p.name
    from peergrad.comm import compressed_mean

    assert compressed_mean.__module__ == "peergrad.comm.compressed"


def test_import_detector_resolves_relative_imports(tmp_path: Path) -> None:
    f = SRC / "data" / "__init__.py"
    assert "peergrad.data.datasets" in peergrad_imports(f)


#: The engines' communicators: torch.distributed's process group, and the elastic engine, whose
#: process groups are torchft's (it needs torch.distributed's TCPStore and ReduceOp).
ENGINE_MODULES = ("comm/distributed.py", "comm/elastic.py")


def test_only_the_engine_modules_import_torch_distributed() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if imports_torch_distributed(p) and p.relative_to(SRC).as_posix() not in ENGINE_MODULES
    ]
    assert offenders == []


def test_only_the_elastic_engine_imports_torchft() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "import torchft" in p.read_text() or "from torchft" in p.read_text()
    ]
    assert offenders == ["comm/elastic.py"]


def test_detector_finds_an_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("from torch import distributed as dist\n")
    assert imports_torch_distributed(f)
    f.write_text("import torch.distributed\n")
    assert imports_torch_distributed(f)
    f.write_text("import torch\n")
    assert not imports_torch_distributed(f)


#: The layers below the training loop: none of them knows the loop, the CLI, the study package
#: or the torch optimizer wrapper (issue 25). ``train/`` builds on them; ``study/`` and ``cli/``
#: build on ``train/``.
LOWER_LAYERS = (
    "algorithms",
    "comm",
    "compress",
    "topology",
    "transforms",
    "data",
    "models",
    "system",
    "problems",
)
UPPER_LAYERS = ("peergrad.train", "peergrad.cli", "peergrad.study", "peergrad.optim")


def test_nothing_below_train_imports_the_layers_above() -> None:
    offenders = {
        p.relative_to(SRC).as_posix(): sorted(
            m for m in peergrad_imports(p) if m.startswith(UPPER_LAYERS)
        )
        for layer in LOWER_LAYERS
        for p in (SRC / layer).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert all((SRC / layer).is_dir() for layer in LOWER_LAYERS)
