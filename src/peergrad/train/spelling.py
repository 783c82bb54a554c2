"""Option names in error messages: the field from Python, the flag on the command line.

Validation messages are written once, naming command-line flags (``--lr must be a finite
number``), because a ``--flag`` is unambiguous in running text while a field name (``lr``,
``steps``, ``model``) is an ordinary word. The Python entry points (:func:`peergrad.train.train`,
:func:`peergrad.study.compare`) are wrapped in :func:`field_names`: a ``ValueError`` or
``TypeError`` leaving them names every flag of a :class:`~peergrad.train.config.TrainConfig`
field (or of the entry point's own keywords) as Python spells it (``lr must be a finite number``;
``--model-set`` becomes ``model_options``, ``--no-download`` ``download=False``). Flags that are
no field of anything (``torchrun --nproc-per-node``), and commands quoted in backticks, are left
as they are. The command line runs
its commands inside :func:`cli_spelling`, where nothing is renamed, so ``peergrad train`` keeps
naming ``--lr``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from peergrad.train.config import TrainConfig
from peergrad.train.fields import option_of

__all__ = ["cli_spelling", "field_names", "python_spelling"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The keywords of ``train`` / ``compare`` that the command line spells as flags (they are no
#: ``TrainConfig`` field).
_SPECIAL = {
    "--resume": "resume",
    "--overwrite": "overwrite",
    "--run-plots": "run_plots",
    "--seeds": "seeds",
    "--lr-grid": "lr_grid",
    "--target-accuracy": "target_accuracy",
    "--algorithms": "entries",
}


def _field_flags() -> dict[str, str]:
    """``--flag`` -> its Python spelling for every ``TrainConfig`` field, from the fields'
    metadata: ``--batch-size`` -> ``batch_size``, ``--model-set`` -> ``model_options``,
    ``--no-download`` -> ``download=False``, ``--no-progress`` -> ``progress=False``."""
    out = {}
    for field in dataclasses.fields(TrainConfig):
        opt = option_of(field)
        flag, *negated = opt.flags_for(field.name)
        out[flag] = f"{field.name}=False" if opt.kind == "negated" else field.name
        out.update(dict.fromkeys(negated, f"{field.name}=False"))  # --no-progress
    return out


#: ``--flag`` -> its Python name, for every ``TrainConfig`` field and the keywords above.
FIELD_OF_FLAG: dict[str, str] = {**_field_flags(), **_SPECIAL}

# a whole flag: not preceded by a word character or a dash, and taken to its last dash-word
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

_CLI = contextvars.ContextVar("peergrad_cli_spelling", default=False)


def python_spelling(message: str) -> str:
    """``message`` with every known flag replaced by its Python name (others left alone).

    Text between backticks is a command to type (`` `torchrun ... peergrad train --engine ...` ``)
    and is kept as written."""
    parts = message.split("`")
    for k in range(0, len(parts), 2):  # outside the backtick pairs
        parts[k] = _FLAG.sub(lambda m: FIELD_OF_FLAG.get(m.group(0), m.group(0)), parts[k])
    return "`".join(parts)


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within this block :func:`field_names` renames nothing: messages keep naming flags (the
    command line's spelling). Scoped to the current thread / context."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def field_names(fn: _F) -> _F:
    """Decorate a Python entry point: a ``ValueError`` or ``TypeError`` it raises names option
    fields as Python spells them (:func:`python_spelling`), unless called inside
    :func:`cli_spelling`. The exception object, type and traceback are kept; only its
    one-string ``args`` is rewritten."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            if not _CLI.get() and len(exc.args) == 1 and isinstance(exc.args[0], str):
                exc.args = (python_spelling(exc.args[0]),)
            raise

    return wrapper  # type: ignore[return-value]
