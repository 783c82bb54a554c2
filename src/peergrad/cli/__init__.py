"""The ``peergrad`` command: ``train``, ``compare``, ``topology``, ``system``, ``algorithms``,
``plot``, ``check-adam`` and ``counterexample``.

Algorithm hyper-parameters that have no flag of their own are given with ``--set key=value``
(repeatable), so a new algorithm needs no CLI change; ``--lr``, ``--momentum`` and
``--weight-decay`` default to the algorithm's own values (``peergrad algorithms NAME``). Options
of the model and of a data callable are given the same way with ``--model-set`` / ``--data-set``
(see :mod:`peergrad.train.resolve`); ``--lr-schedule`` / ``--warmup-steps`` schedule every
algorithm's step size (see :mod:`peergrad.train.schedules`).

Exit status: 0 on success, 1 when a run fails (non-finite values, a lost peer), 2 for bad input
(one ``error:`` line naming the argument; nothing is written), 130 after Ctrl-C (one line naming
the step reached, the last checkpoint and the ``--resume`` command), 141 when the reader of
stdout goes away (``peergrad topology ... | head -3``). Warnings are one line each.

Layout (each ``cmd_*`` parses, calls the library and prints; heavy modules are imported inside
it, so building the parser imports no torch):

- :mod:`peergrad.cli.common`: the torch-free name tuples the parser lists, ``HelpFormatter``,
  ``--set`` parsing, exit statuses, what the commands share;
- :mod:`peergrad.cli.train`: ``peergrad train``, its flags (also ``compare``'s) and ``--resume``;
- :mod:`peergrad.cli.compare`: ``peergrad compare``;
- :mod:`peergrad.cli.tools`: ``topology``, ``system``, ``algorithms``, ``plot``, ``check-adam``,
  ``counterexample``;
- :mod:`peergrad.cli.parser`: ``build_parser``; :mod:`peergrad.cli.entry`: ``main``.

Every name importable from the single-module ``peergrad.cli`` of earlier releases still is.
"""

from __future__ import annotations

from peergrad.train.config import RESUMABLE_CHANGES as RESUMABLE_CHANGES
from peergrad.train.config import TrainConfig as TrainConfig

from .common import (
    ADAM_PRESET_NAMES,
    ALGORITHM_DEFAULT,
    ALGORITHM_NAMES,
    DATASET_NAMES,
    DEFAULTS,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    KEY_VALUE_FIELDS,
    MODEL_NAMES,
    PARTITION_NAMES,
    PLOT_AXIS_NAMES,
    SYSTEM_PRESET_NAMES,
    TOPOLOGY_NAMES,
    HelpFormatter,
    check_config,
    command_argv,
    flag_of,
    is_main_process,
    parse_set,
    stop_on_peer_failure,
)
from .compare import cmd_compare, parse_set_for
from .entry import _one_line_warnings as _one_line_warnings
from .entry import _stdout_gone as _stdout_gone
from .entry import main
from .parser import build_parser
from .tools import (
    SCHEDULE_HELP,
    add_generic_adam_commands,
    add_plot_command,
    cmd_algorithms,
    cmd_check_adam,
    cmd_counterexample,
    cmd_plot,
    cmd_system,
    cmd_topology,
    report_schedule,
)
from .tools import _describe_algorithm as _describe_algorithm
from .tools import _print_report as _print_report
from .train import (
    add_train_arguments,
    cmd_train,
    config_from_args,
    explicit_fields,
    refuse_python_task,
    resume_config,
)

# The private names of the single-module ``peergrad.cli``, for code that reached for them
# (``_describe_algorithm``, ``_print_report``, ``_one_line_warnings`` and ``_stdout_gone`` are
# imported above under their own names).
_command_argv = command_argv
_is_main_process = is_main_process
_stop_on_peer_failure = stop_on_peer_failure

__all__ = [
    "ADAM_PRESET_NAMES",
    "ALGORITHM_DEFAULT",
    "ALGORITHM_NAMES",
    "DATASET_NAMES",
    "DEFAULTS",
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "KEY_VALUE_FIELDS",
    "MODEL_NAMES",
    "PARTITION_NAMES",
    "PLOT_AXIS_NAMES",
    "SCHEDULE_HELP",
    "SYSTEM_PRESET_NAMES",
    "TOPOLOGY_NAMES",
    "HelpFormatter",
    "add_generic_adam_commands",
    "add_plot_command",
    "add_train_arguments",
    "build_parser",
    "check_config",
    "cmd_algorithms",
    "cmd_check_adam",
    "cmd_compare",
    "cmd_counterexample",
    "cmd_plot",
    "cmd_system",
    "cmd_topology",
    "cmd_train",
    "command_argv",
    "config_from_args",
    "explicit_fields",
    "flag_of",
    "is_main_process",
    "main",
    "parse_set",
    "parse_set_for",
    "refuse_python_task",
    "report_schedule",
    "resume_config",
    "stop_on_peer_failure",
]
