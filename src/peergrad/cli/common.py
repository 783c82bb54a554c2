"""What every ``peergrad`` command shares: the torch-free name tuples the parser lists (from
:mod:`peergrad.train.names`), the help formatter, ``KEY=VALUE`` parsing, exit statuses and the
handling of a lost peer.

Nothing here imports torch (``peergrad --help`` must not; see tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import NoReturn

from peergrad.train.config import KEY_VALUE_FIELDS as KEY_VALUE_FIELDS
from peergrad.train.config import TrainConfig
from peergrad.train.config import flag_of as flag_of

# The names the parser lists (torch-free tuples, checked against the registries by
# tests/test_startup.py), the CLI's vocabulary: defined in peergrad.train.names.
from peergrad.train.names import ADAM_PRESET_NAMES as ADAM_PRESET_NAMES
from peergrad.train.names import ALGORITHM_DEFAULT as ALGORITHM_DEFAULT
from peergrad.train.names import ALGORITHM_NAMES as ALGORITHM_NAMES
from peergrad.train.names import DATASET_NAMES as DATASET_NAMES
from peergrad.train.names import MODEL_NAMES as MODEL_NAMES
from peergrad.train.names import PARTITION_NAMES as PARTITION_NAMES
from peergrad.train.names import PLOT_AXIS_NAMES as PLOT_AXIS_NAMES
from peergrad.train.names import SYSTEM_PRESET_NAMES as SYSTEM_PRESET_NAMES
from peergrad.train.names import TOPOLOGY_NAMES as TOPOLOGY_NAMES
from peergrad.train.validate import validate

DEFAULTS = TrainConfig()

#: Exit status after Ctrl-C (128 + SIGINT) and when stdout's reader has gone (128 + SIGPIPE).
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` is added unless the help text
    already says it (options whose default is computed, e.g. ``--lr``), and on/off flags show
    ``(default: off)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.required:
            return text
        if action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # store_true / store_false: the flag itself is the value
            return f"{text} (default: off)"
        if action.default == []:  # repeatable (--set)
            return f"{text} (default: none)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


def parse_set(items: Sequence[str], *, flag: str = "--set") -> dict[str, str]:
    """``["a=1", "b=x"] -> {"a": "1", "b": "x"}``; ``ValueError`` naming ``flag`` on a missing
    ``=``. Values stay strings (``config.json`` records what was given); the algorithm, model or
    data callable converts them (see :func:`peergrad.train.resolve.parse_option_value`)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def check_config(config: TrainConfig) -> None:
    """Deprecated: :func:`peergrad.train.validate.validate` (which this calls) checks every
    option; ``ValueError`` naming the flag."""
    warnings.warn(
        "peergrad.cli.check_config is deprecated: use peergrad.train.validate.validate",
        DeprecationWarning,
        stacklevel=2,
    )
    validate(config)


def stop_on_peer_failure(command: str, exc: Exception, config: TrainConfig) -> NoReturn:
    """A peer is gone: report and leave at once. Tearing down the process group could wait on
    the dead peer, which is the silent hang this error exists to prevent."""
    print(f"peergrad {command}: error: {exc}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    from peergrad.comm import distributed

    if distributed.hosts_store():  # let the peers read the heartbeats before it goes
        time.sleep(min(3.0, config.timeout_s))
    os._exit(1)


def command_argv(args: argparse.Namespace) -> list[str]:
    """The arguments after the sub-command's name."""
    argv = list(args.argv)
    return argv[argv.index(args.command) + 1 :]


def is_main_process(config: TrainConfig) -> bool:
    return config.engine == "simulated" or os.environ.get("RANK", "0") == "0"
