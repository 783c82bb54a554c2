"""``main``: parse, run the command, and turn its errors into one line and an exit status
(see :mod:`peergrad.cli`)."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from peergrad.train.spelling import cli_spelling

from .common import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED
from .parser import build_parser


def _one_line_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``peergrad COMMAND: warning: ...`` on one line."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        print(f"peergrad {command}: warning: {text}", file=file or sys.stderr, flush=True)

    return show


def _stdout_gone() -> int:
    """The reader of stdout has gone (``| head``): point stdout at /dev/null so that the
    interpreter's final flush is quiet, and leave with 128 + SIGPIPE, as ``cat`` would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured)
        pass
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``peergrad ARGV``; returns the exit status (see :mod:`peergrad.cli`)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings(), cli_spelling():  # messages name --flags, not fields
            warnings.showwarning = _one_line_warnings(args.command)
            code = int(args.func(args))
        sys.stdout.flush()  # a broken pipe shows up here, not at interpreter exit
        return code
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(f"peergrad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:  # before or after the steps (the loop reports its own step)
        print(f"peergrad {args.command}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
