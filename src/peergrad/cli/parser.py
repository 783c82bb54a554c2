"""``build_parser``: the ``peergrad`` parser, each command's flags added by its own module.

Building it imports no torch (``peergrad --help`` answers in well under a second; issue 25):
the command modules import their heavy modules inside their ``cmd_*`` functions.
"""

from __future__ import annotations

import argparse

from .common import HelpFormatter
from .compare import add_compare_command
from .tools import (
    add_algorithms_command,
    add_generic_adam_commands,
    add_plot_command,
    add_system_command,
    add_topology_command,
)
from .train import add_train_command


def build_parser() -> argparse.ArgumentParser:
    from peergrad import __version__

    parser = argparse.ArgumentParser(
        prog="peergrad",
        description="Communication-efficient distributed and decentralized training.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"peergrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_command(sub)
    add_compare_command(sub)
    add_topology_command(sub)
    add_system_command(sub)
    add_algorithms_command(sub)
    add_plot_command(sub)
    add_generic_adam_commands(sub)
    return parser
