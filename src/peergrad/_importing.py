"""Import an object named ``package.module:attr``: the one importer of user code.

``--model`` / ``--dataset`` / ``--loss`` (:func:`peergrad.train.resolve.import_callable`) and
``--algorithm`` (:func:`peergrad.algorithms.registry.resolve_algorithm`) name user code this way.
Importing this module imports nothing else of peergrad, and no torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["algorithm_label", "algorithm_spec", "import_object"]


def import_object(spec: str, *, flag: str, what: str = "callable") -> Any:
    """The object named ``package.module:attr`` (``attr`` may be dotted: ``Cls.make``).

    The module is imported with :func:`importlib.import_module`; when its top-level package is
    not found and the current directory is not on ``sys.path``, the current directory is added
    (as ``python -m`` and ``python script.py`` do) and the import is tried again.

    Raises:
        ValueError: ``spec`` is not ``module:attr``, the module cannot be imported (the
            message has the import error) or it has no such attribute; the message starts with
            ``flag`` and ``spec`` (``what`` names the attribute in ``expected
            package.module:<what>``).
    """
    if not isinstance(spec, str):
        raise ValueError(f"{flag} must be a string package.module:{what}, got {spec!r}")
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise ValueError(f"{flag} {spec!r}: expected package.module:{what}")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ValueError(f"{flag} {spec!r}: no module named {exc.name!r}") from None
        raise ValueError(f"{flag} {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while being imported
        raise ValueError(
            f"{flag} {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{flag} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(module_name)


def algorithm_spec(algorithm: Any) -> Any:
    """What ``config.json`` records for an algorithm given as a name, a class or an instance:
    a name (a string) as it is; a built-in class (defined in ``peergrad.algorithms``) its
    ``name``; any other class (or an instance's class) ``package.module:QualifiedName``, which
    :func:`peergrad.algorithms.registry.resolve_algorithm` imports again. Anything else is
    returned unchanged (the resolver refuses it)."""
    if isinstance(algorithm, str):
        return algorithm
    cls = algorithm if isinstance(algorithm, type) else type(algorithm)
    if not hasattr(cls, "init") or not hasattr(cls, "name"):
        return algorithm
    if cls.__module__.startswith("peergrad.algorithms.") and isinstance(cls.name, str):
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def algorithm_label(algorithm: Any) -> str:
    """A short label of an algorithm given as a name, a spec, a class or an instance: its
    ``name`` for a class or instance, the class part of ``package.module:Class``, else the
    string itself (for titles, messages and folder names before the class is loaded)."""
    if isinstance(algorithm, str):
        return algorithm.rpartition(":")[2] if ":" in algorithm else algorithm
    name = getattr(algorithm, "name", None)
    return name if isinstance(name, str) and name else str(algorithm)
