"""Field metadata: what a configuration field means, what it accepts and how it is given.

Each field of :class:`~peergrad.train.config.TrainConfig` is declared with :func:`option`,
which stores an :class:`Option` in the field's ``metadata``: its help text, unit, accepted
range or choices, command-line flag and how argparse reads it. Everything else is generated
from it: the ``peergrad train`` / ``peergrad compare`` flags (:mod:`peergrad.cli.train`), the
range and choice checks of :func:`check_option` (run by :func:`peergrad.train.validate.validate`),
the Python spelling of error messages (:mod:`peergrad.train.spelling`) and the types that
``peergrad compare --set-for LABEL:KEY=VALUE`` converts to. Adding an option is one field.

Importing this module imports nothing else of peergrad, and no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["KINDS", "Option", "Range", "check_option", "field_type", "option", "option_of"]

#: How a field is given on the command line:
#:
#: - ``value``: ``--flag VALUE`` (int, float or text, from the field's type);
#: - ``key_value``: ``--flag KEY=VALUE``, repeatable, into a dict (``--set``, ``--model-set``);
#: - ``switch``: ``--flag`` sets True (the default is False);
#: - ``negated``: ``--no-X`` sets False (the default is True);
#: - ``tristate``: ``--X`` sets True, ``--no-X`` False, neither leaves None (auto).
KINDS = ("value", "key_value", "switch", "negated", "tristate")
Kind = Literal["value", "key_value", "switch", "negated", "tristate"]

#: :attr:`Option.parser_default` when argparse's default is the field's own.
FIELD_DEFAULT: Any = object()


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field accepts: ``low`` / ``high`` bounds (open or closed; None: none),
    always finite; an ``int`` field also needs an ``int`` (never a ``bool``).

    :attr:`text` is how an error says it (``--workers must be an integer >= 1, got 0``):
    ``prefix``, the bounds (``>= 1``, ``> 0``, ``in (0, 1]``) and ``note``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    prefix: str = ""
    note: str = ""

    @property
    def text(self) -> str:
        """``an integer >= 1``, ``> 0``, ``in [0, 0.5] (0: no validation split)`` ..."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            bounds = f"in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            bounds = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            bounds = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            bounds = ""
        space = " " if self.prefix and bounds and not self.prefix.endswith(" ") else ""
        return f"{self.prefix}{space}{bounds}{self.note}"

    def accepts(self, value: Any, kind: type = float) -> bool:
        """Whether ``value`` lies in the range (and is an ``int`` when ``kind`` is ``int``)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )


@dataclasses.dataclass(frozen=True)
class Option:
    """The metadata of one configuration field (``field.metadata["option"]``).

    Attributes:
        help: the ``--help`` text of its flag (with the default when it is not shown as
            ``(default: X)``).
        group: the ``--help`` section of its flag (a key of
            :data:`peergrad.train.config.GROUPS`).
        flag: its command-line flag; None: ``--`` and the field name with ``-`` for ``_``
            (``--no-`` and that for a ``negated`` field).
        kind: how the flag is read (:data:`KINDS`).
        unit: the unit of a number (``s``, ``ms``, ``steps`` ...), for readers and the docs.
        range: the numbers it accepts (:class:`Range`); None (an optional field) is always
            accepted.
        choices: the values it accepts (argparse refuses others too).
        metavar: argparse's ``metavar`` (None: argparse's own).
        parser_default: argparse's default when it differs from the field's (``--val-fraction``
            is None when not given, so ``peergrad compare`` can choose its own).
        negated_help: the ``--help`` text of a ``tristate`` field's ``--no-X`` flag.
        applies: the range is only checked where this returns True for the configuration
            (``--epochs`` only without ``--steps``); None: always.
        per_label: ``peergrad compare --set-for LABEL:KEY=VALUE`` may change it for one label.
        preset: only the built-in preset task reads it (a run on a user's ``Task`` does not).
    """

    help: str
    group: str
    flag: str | None = None
    kind: Kind = "value"
    unit: str | None = None
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parser_default: Any = FIELD_DEFAULT
    negated_help: str | None = None
    applies: Callable[[Any], bool] | None = None
    per_label: bool = False
    preset: bool = False

    def flag_for(self, name: str) -> str:
        """The flag of the field ``name`` (``batch_size`` -> ``--batch-size``)."""
        if self.flag is not None:
            return self.flag
        stem = name.replace("_", "-")
        return f"--no-{stem}" if self.kind == "negated" else f"--{stem}"

    def flags_for(self, name: str) -> list[str]:
        """Every flag of the field ``name``: :meth:`flag_for`, and ``--no-X`` after ``--X`` for
        a ``tristate`` field."""
        flag = self.flag_for(name)
        return [flag, "--no-" + flag[2:]] if self.kind == "tristate" else [flag]


def option(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    **metadata: Any,
) -> Any:
    """A dataclass field with ``default`` (or ``factory`` for a mutable one) and an
    :class:`Option` of ``metadata`` (``help=``, ``group=``, ``range=`` ...)."""
    meta = {"option": Option(**metadata)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_of(field: dataclasses.Field[Any]) -> Option:
    """The :class:`Option` of a field declared with :func:`option`; ``TypeError`` otherwise."""
    opt = field.metadata.get("option")
    if not isinstance(opt, Option):
        raise TypeError(f"field {field.name!r} has no Option metadata (declare it with option())")
    return opt


@functools.cache
def _hints(cls: type) -> Mapping[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> type:
    """The type of field ``name`` of dataclass ``cls`` without ``None`` (``int | None`` ->
    ``int``): ``int``, ``float``, ``str``, ``bool`` or ``dict``."""
    hint = _hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    return origin if isinstance(origin, type) else hint


def check_option(config: Any, field: dataclasses.Field[Any]) -> None:
    """Check one field of ``config`` against its :class:`Option`: a ``key_value`` field is a
    dict with string keys, a value with ``choices`` is one of them, a number with a ``range``
    lies in it (None is accepted where the field's default is None).

    Raises:
        ValueError: naming the flag, what it accepts and the value given, e.g. ``--workers
            must be an integer >= 1, got 0``, ``--engine must be one of simulated,
            distributed, got 'tpu'``, ``--model-set: model_options must be a dict of KEY ->
            VALUE, got ['hidden=3']``.
    """
    opt = option_of(field)
    name, value = field.name, getattr(config, field.name)
    flag = opt.flag_for(name)
    if opt.kind == "key_value":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{flag}: {name} must be a dict of KEY -> VALUE, got {value!r}")
        return
    if value is None and field.default is None:
        return
    if opt.choices is not None and value not in opt.choices:
        raise ValueError(f"{flag} must be one of {', '.join(opt.choices)}, got {value!r}")
    if opt.range is None or (opt.applies is not None and not opt.applies(config)):
        return
    if not opt.range.accepts(value, field_type(type(config), name)):
        raise ValueError(f"{flag} must be {opt.range.text}, got {value!r}")
