"""What every ``peergrad`` command shares: the torch-free name tuples the parser lists, the help
formatter, ``KEY=VALUE`` parsing, exit statuses and the handling of a lost peer.

Nothing here imports torch (``peergrad --help`` must not; see tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from peergrad.train.config import TrainConfig

DEFAULTS = TrainConfig()

# The names the parser lists, as plain tuples: the registries they come from import torch, and
# building the parser must not (``peergrad --help`` answers in well under a second; issue 25).
# tests/test_startup.py checks that each equals its registry, in order.
#: ``peergrad.algorithms.REGISTRY``
ALGORITHM_NAMES: tuple[str, ...] = (
    "allreduce",
    "dpsgd",
    "d2",
    "gradient-tracking",
    "detag",
    "decentralized-amsgrad",
    "decentralized-adagrad",
    "decentralized-adam",
    "dadam",
    "dadam-naive",
    "decentralized-adam-naive",
    "ef-sgd",
    "compressed-sgd",
    "armijo-csgd",
    "powersgd",
    "choco-sgd",
    "distributed-adam",
    "local-sgd",
)
#: ``peergrad.topology.TOPOLOGIES``
TOPOLOGY_NAMES: tuple[str, ...] = (
    "ring",
    "torus",
    "exponential",
    "one-peer-exponential",
    "complete",
    "star",
    "erdos-renyi",
    "identity",
)
#: ``peergrad.data.DATASETS``
DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "digits",
    "mnist1d",
    "mnist-idx",
    "cifar10",
    "cifar100",
    "synthetic-logistic",
)
#: ``peergrad.data.PARTITIONS``
PARTITION_NAMES: tuple[str, ...] = ("iid", "sorted", "dirichlet")
#: ``peergrad.models.MODELS``
MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "lenet5", "resnet20")
#: ``peergrad.system.PRESETS``
SYSTEM_PRESET_NAMES: tuple[str, ...] = ("uniform", "datacenter", "two-datacenters", "edge")
#: ``peergrad.train.plots.PLOT_AXES`` (that module imports matplotlib)
PLOT_AXIS_NAMES: tuple[str, ...] = (
    "steps",
    "samples",
    "bytes",
    "rounds",
    "simulated_time",
    "wall_time",
    "epochs",
)
#: ``peergrad.transforms.generic_adam.PRESETS``
ADAM_PRESET_NAMES: tuple[str, ...] = ("generic", "adam", "rmsprop", "adagrad", "adaema", "adamnc")

#: The value that ``--lr``, ``--momentum`` and ``--weight-decay`` take when not given.
ALGORITHM_DEFAULT = "the algorithm's own, see `peergrad algorithms NAME`"
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


#: ``TrainConfig`` fields given as repeatable ``KEY=VALUE`` flags, with their flag.
KEY_VALUE_FIELDS: dict[str, str] = {
    "options": "--set",
    "model_options": "--model-set",
    "data_options": "--data-set",
}


def flag_of(name: str) -> str:
    """The command-line flag of the ``TrainConfig`` field ``name`` (``model_options`` ->
    ``--model-set``, ``batch_size`` -> ``--batch-size``)."""
    return KEY_VALUE_FIELDS.get(name, "--" + name.replace("_", "-"))


def check_config(config: TrainConfig) -> None:
    """The checks of issue 14's fields that need no data (``ValueError`` naming the flag):
    see :func:`peergrad.train.resolve.check_config`."""
    from peergrad.train.resolve import check_config as check

    check(config)


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
