"""Copies of a run's records for other tools: ``metrics.csv`` and TensorBoard event files.

``metrics.jsonl`` stays the run's record of truth (one JSON object per evaluation); next to it
every run folder gets ``metrics.csv`` with the same records, rewritten whole after every record
(:func:`write_metrics_csv`), so the two always agree, after a ``--resume`` too. With
``--tensorboard`` (:attr:`TrainConfig.tensorboard <peergrad.train.config.TrainConfig>`) the run
folder also gets ``tensorboard/``: event files with every numeric field of every record as a
scalar (:class:`TensorBoardLog`); ``tensorboard --logdir RUN_DIR`` shows them. TensorBoard is an
optional extra (``pip install 'peergrad[tensorboard]'``): :func:`check_tensorboard` says so in one
line before any run starts when it is missing.
"""

from __future__ import annotations

import csv
import io
import json
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peergrad.train.checkpoint import atomic_write_text

__all__ = [
    "TENSORBOARD_DIR",
    "TensorBoardLog",
    "check_tensorboard",
    "metrics_csv_text",
    "write_metrics_csv",
]

#: The sub-folder of a run folder that holds the TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'peergrad[tensorboard]'"


# ---------------------------------------------------------------------------------- CSV
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value)
    return value  # numbers as str() writes them: repr, so floats read back exactly


def metrics_csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    """``records`` as CSV text: the header is the union of the records' keys in the order they
    are first seen; a ``None`` or missing value is an empty cell; floats are written with
    ``repr`` (``float(cell)`` gives the value back exactly). No records: the empty string."""
    fields: dict[str, None] = {}
    for rec in records:
        fields.update(dict.fromkeys(rec))
    if not fields:
        return ""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for rec in records:
        writer.writerow([_cell(rec.get(k)) for k in fields])
    return buf.getvalue()


def write_metrics_csv(path: str | Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``records`` to ``path`` (``RUN_DIR/metrics.csv``) atomically: a reader sees the old
    file or the new one, never a part."""
    atomic_write_text(path, metrics_csv_text(records))


# ---------------------------------------------------------------------------------- TensorBoard
def check_tensorboard() -> None:
    """``ValueError`` (one line naming ``--tensorboard`` and the install command) when
    ``torch.utils.tensorboard`` cannot be imported, i.e. the ``tensorboard`` package is
    missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError(
            f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}"
        ) from None


def numeric_fields(record: Mapping[str, Any]) -> dict[str, float]:
    """The fields of ``record`` written as scalars: every int or float value (not bools, not
    ``None``) except ``step``, which is their x coordinate (``global_step``)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class TensorBoardLog:
    """TensorBoard event files of a run's records in ``log_dir`` (``RUN_DIR/tensorboard``).

    :meth:`add` writes every numeric field of a record (:func:`numeric_fields`) as a scalar
    whose tag is the field name (``test_accuracy``, ``wall_time_s`` ...) at ``global_step =
    record["step"]``, and flushes, so an interrupted run keeps every record it made. The writer
    (``torch.utils.tensorboard.SummaryWriter``) opens at the first record. ``purge_step``: set by
    a resumed run to the first step it will record again (the checkpoint's step + 1); TensorBoard
    then hides what the interrupted run wrote from that step on, so no step appears twice.
    :meth:`close` is idempotent; a log that is never closed is closed when garbage-collected or
    at interpreter exit."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self._writer: Any = None
        self._close: weakref.finalize | None = None  # type: ignore[type-arg]

    def add(self, record: Mapping[str, Any]) -> None:
        """Write ``record``'s numeric fields at its ``step`` and flush."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.purge_step)
            self._close = weakref.finalize(self, self._writer.close)
        step = int(record["step"])
        for tag, value in numeric_fields(record).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (nothing to do when no record was added)."""
        if self._close is not None:
            self._close()
