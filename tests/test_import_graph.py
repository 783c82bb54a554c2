"""No import cycle between the files of ``src/peergrad`` (issue 25).

The imports are read with ``ast``, nothing is imported. Every import counts: module level,
inside a function and under ``if TYPE_CHECKING:`` (a type-only cycle is still two files that
cannot be read, or moved, one without the other). ``from package import name`` is an edge to the
submodule ``package.name`` when there is one, else to the package's ``__init__``; the implicit
import of a module's parent packages is not an edge.

The layering (nothing below ``train/`` imports ``train/``, ``cli/``, ``study/`` or ``optim/``) is
checked in ``tests/test_boundaries.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import peergrad

SRC = Path(peergrad.__file__).parent

#: Cycles known today, each one strongly connected set of modules, to be removed; the test fails
#: on any other cycle (and on one of these growing), and says when one of these is gone.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_files(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is a package __init__)}`` for every ``.py`` under ``src``."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def module_imports(name: str, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports (relative imports resolved)."""
    path, is_package = modules[name]
    package = name if is_package else name.rpartition(".")[0]
    root = name.partition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in modules else module)
    edges = set()
    for target in targets:
        if target != root and not target.startswith(root + "."):
            continue
        while target not in modules and "." in target:  # a name inside a module
            target = target.rpartition(".")[0]
        if target in modules and target != name:
            edges.add(target)
    return edges


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = module_files(src)
    return {name: module_imports(name, modules) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected sets of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.add(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        found.append(frozenset(members))
    return found


def test_no_new_import_cycle() -> None:
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert new == [], f"import cycles between files: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert gone == [], f"remove these fixed cycles from KNOWN_CYCLES: {gone}"


def test_the_cycles_issue_25_removed_stay_removed() -> None:
    graph = import_graph()
    # the Session cycle: recorder.py <-> steps.py (Session is in train/session.py)
    assert "peergrad.train.steps" not in graph["peergrad.train.recorder"]
    assert "peergrad.train.session" in graph["peergrad.train.recorder"]
    # the folder loop: peergrad/task.py <-> train/ (Task is in train/task.py; the old path is a
    # re-export that only imports it)
    assert graph["peergrad.task"] == {"peergrad.train.task"}
    assert not any(m.startswith("peergrad.study") for m in graph["peergrad.train.loop"])


def test_detector(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n"
    )
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom ..a import thing\nimport os\n")
    (pkg / "d.py").write_text("from pkg import sub\nfrom pkg.sub.c import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.sub", "pkg.sub.c"}
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.sub.c"})]
    (pkg / "b.py").write_text("")
    assert cycles(import_graph(pkg)) == []
