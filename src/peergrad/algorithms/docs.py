"""Option documentation read from the algorithms' docstrings (``peergrad algorithms NAME``).

Every algorithm class documents its hyper-parameters in an ``Options:`` section of its class
docstring, one entry per option::

    Options:

    - ``lr`` > 0: the step size γ; default 0.1, the spec's γ (decentralized.md §6).
    - ``form`` one of cta, atc: cta is the paper's combine-then-adapt update, ...
      (continuation lines are indented; a blank line ends the section)

i.e. ``- ``NAME`` RANGE: MEANING``, where RANGE is the set of accepted values (it contains no
``": "``). Entries are looked up along the class's MRO, so options shared by a family (``lr``,
``momentum``, ``nesterov``, ``weight_decay`` of :class:`~peergrad.algorithms.base.SGDAlgorithm`)
are documented once in the base class, and a subclass entry overrides the base's (e.g. to say
why its default differs). ``tests/test_algorithm_options.py`` checks that every option of every
registered algorithm has an entry.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

_ENTRY = re.compile(r"^(?P<indent>\s*)- ``(?P<name>\w+)`` (?P<range>.+?): (?P<meaning>.*)$")


def parse_options_section(doc: str | None) -> dict[str, tuple[str, str]]:
    """``{name: (range, meaning)}`` from the ``Options:`` section of one docstring."""
    out: dict[str, tuple[str, str]] = {}
    if not doc:
        return out
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Options:")
    except StopIteration:
        return out
    current: str | None = None
    indent = 0
    for line in lines[start + 1 :]:
        if not line.strip():
            if out:
                break  # a blank line after the entries ends the section
            continue
        match = _ENTRY.match(line)
        if match:
            current, indent = match["name"], len(match["indent"])
            out[current] = (match["range"].strip(), match["meaning"].strip())
        elif current is not None and len(line) - len(line.lstrip()) > indent:
            rng, meaning = out[current]
            out[current] = (rng, f"{meaning} {line.strip()}")
        else:
            break  # not an entry: the section is over
    return out


def option_docs(cls: type) -> dict[str, tuple[str, str]]:
    """``{name: (range, meaning)}`` for the options documented along ``cls``'s MRO (a subclass's
    entry replaces its base's)."""
    docs: dict[str, tuple[str, str]] = {}
    for klass in reversed(cls.__mro__):
        docs.update(parse_options_section(klass.__dict__.get("__doc__")))
    return docs


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_options(cls: type) -> list[dict[str, Any]]:
    """One record per hyper-parameter of algorithm class ``cls``, in field order: ``name``,
    ``type``, ``default``, ``range`` and ``meaning`` (``"(undocumented)"`` when the docstrings
    have no entry)."""
    docs = option_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        rng, meaning = docs.get(f.name, ("(undocumented)", "(undocumented)"))
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(
            {
                "name": f.name,
                "type": _type_name(hints.get(f.name, f.type)),
                "default": default,
                "range": rng,
                "meaning": meaning,
            }
        )
    return out
