"""One check of a training configuration: :func:`validate`.

Every entry point runs it before any work: ``peergrad train`` (before it imports torch, so a bad
range is refused at once) and ``--resume``, :func:`peergrad.train.train` (through
:func:`~peergrad.train.loop.prepare`) and :func:`peergrad.study.compare.compare` (for every run
of the comparison). So one bad value gets one error, the same from each of them (the Python
entry points name fields as Python spells them, see :mod:`peergrad.train.spelling`).

Importing this module imports no torch; :func:`validate` imports what its later checks need.
"""

from __future__ import annotations

from peergrad.train.checks import check_fields
from peergrad.train.config import TrainConfig
from peergrad.train.spelling import field_names

__all__ = ["check_fields", "validate"]


@field_names
def validate(config: TrainConfig, *, custom_task: bool = False) -> None:
    """Refuse a bad configuration before any work starts (nothing is built, no data is read).

    In this order (the first failing check raises):

    1. :func:`~peergrad.train.checks.check_fields`, which needs no torch: every field's range
       or choices from its metadata (``--workers`` an integer >= 1, ``--epochs`` > 0,
       ``--engine`` one of simulated, distributed ...), the names of ``--algorithm``,
       ``--topology``, ``--partition``, ``--model`` and ``--dataset``, ``--set lr=...``
       beside ``--lr`` (and ``momentum``, ``weight_decay``), ``--lr-schedule`` with
       ``--warmup-steps``, ``--checkpoint-every`` on the distributed engine without ``--out``,
       and ``--data-root``;
    2. :func:`~peergrad.train.build.check_environment`: ``--device`` exists on this machine,
       ``--system`` loads, and the distributed engine runs under torchrun with ``--workers``
       processes;
    3. :func:`~peergrad.train.resolve.check_resolvable`: ``--loss`` resolves, ``--tensorboard``
       has its package, ``package.module:callable`` models and data sets import and take their
       ``--model-set`` / ``--data-set`` keys (a built-in model its ``--model-set`` keys);
    4. the algorithm builds from ``--algorithm``, ``--set``, ``--lr``, ``--momentum`` and
       ``--weight-decay`` (:func:`~peergrad.train.build.build_algorithm`: its own checks of its
       options, e.g. ``lr must be a finite number > 0``); a user's algorithm
       (``package.module:Class``, a plugin, a class or an instance) is imported, checked
       (:func:`~peergrad.algorithms.registry.check_algorithm_class`) and probed with one step
       on a tiny problem (:func:`~peergrad.train.build.check_algorithm`).

    What needs the data or the topology (``--batch-size`` against the shards, a directed graph
    for an algorithm that needs a symmetric one ...) is checked by
    :func:`~peergrad.train.loop.prepare` once they are built.

    ``custom_task``: the run trains a user's :class:`~peergrad.train.task.Task`, so
    ``config.model``, ``config.dataset``, ``config.data_root`` and their options are not read
    (and not checked).

    Raises:
        ValueError: the first bad option, naming it (``--workers must be an integer >= 1, got
            0``; from Python ``workers must be ...``) and what it accepts.
        TypeError: ``--lr-schedule`` is not a string.
    """
    check_fields(config, custom_task=custom_task)
    from peergrad.train.build import check_algorithm, check_environment
    from peergrad.train.resolve import check_resolvable

    check_environment(config)
    check_resolvable(config, custom_task=custom_task)
    check_algorithm(config)
