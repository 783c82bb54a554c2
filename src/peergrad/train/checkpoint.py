"""Checkpoints of a training run: atomic, one shard per process, resumed bit-exactly.

A checkpoint holds everything the next step depends on, so that ``k`` steps, a crash, a resume and
``k`` more steps give the same parameters, algorithm state and ``metrics.jsonl`` as ``2k`` steps
in one go (bit-exact on the simulated engine):

- the parameters ``x`` (this process's rows ``[w, D]``);
- the algorithm state, whatever its type: a dataclass of tensors, ints, floats, bools, ``None``,
  tuples/lists/dicts of those, nested dataclasses and ``torch.Generator`` objects are all
  converted to plain containers (:func:`to_plain`) and restored into a fresh ``algorithm.init``
  state of the same run (:func:`restore_into`, which checks every tensor's shape and dtype).
  Trackers, error-feedback memories, compressor generator states, block-momentum and
  accelerated-gossip buffers and the step counter (which is also the position in a time-varying
  schedule W(k)) all live there;
- the data order: every local worker's sampling generator, permutation and position
  (:meth:`ShardSampler.state_dict`);
- the model buffers of this process's workers (BatchNorm running statistics, ``[w, ...]``);
- the global torch RNG state (and the CUDA one on a GPU): random layers such as Dropout draw
  every worker's masks from it, so a resumed run draws the masks the uninterrupted one drew;
- the communicator's counters (``bytes_sent``, ``simulated_comm_time_s``, ``rounds``) and,
  with a system profile (``--system``), its clock's state
  (:meth:`peergrad.system.SystemClock.state_dict`: every worker's time and split, who is away
  and for how long, link occupancy and the clock's generator), so that a run resumed in the
  middle of a churn interval or a straggler's step continues the clock bit for bit;
- the loop's counters (step, training wall time, the running minibatch-loss sum) and the exact
  lines of ``metrics.jsonl`` so far, which a resume writes back (dropping records that a crashed
  run wrote after its last checkpoint), so the file continues seamlessly.

Layout of a run folder (``RUN_DIR``)::

    checkpoint.json                    the commit record: {"format", "step", "path", "engine",
                                       "workers", "shards"}
    checkpoints/step-00000200/
        shard-0.pt ... shard-<s-1>.pt  one per process (simulated engine: one, all workers)

Distributed engine: every rank writes its own shard (its worker's rows, state and sampler), so no
state crosses the network; ``RUN_DIR`` must therefore be a folder every rank can write (one node,
or a shared file system). Then all ranks meet at a barrier and rank 0 commits by replacing
``checkpoint.json``.

Atomicity: every file is written to a temporary file in the same folder, flushed and fsynced,
then ``os.replace``-d over its name (and the folder fsynced). ``checkpoint.json`` is replaced only
after every shard of the new step is complete, and older step folders are deleted only after that,
so a crash at any moment leaves ``checkpoint.json`` pointing at a complete checkpoint: the last
good one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "peergrad.checkpoint/1"
MANIFEST = "checkpoint.json"
FOLDER = "checkpoints"

__all__ = [
    "FORMAT",
    "MANIFEST",
    "atomic_write_bytes",
    "atomic_write_text",
    "commit",
    "drain_in_flight",
    "load_shard",
    "read_manifest",
    "restore_into",
    "save_shard",
    "step_dir",
    "to_plain",
]


# ------------------------------------------------------------------ atomic files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform can open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the system says
    it (Linux >= 4.7: ``Umask:`` in ``/proc/self/status``); elsewhere it is set and restored at
    once (``os.umask`` has no read-only form), which another thread creating a file in between
    could notice."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A temporary file in the same folder is written, fsynced and ``os.replace``-d over ``path``;
    the folder is fsynced so the rename survives a power cut. The file gets the permissions an
    ordinary ``open(path, "w")`` gives, ``0o666 & ~umask`` (0644 under the usual umask 022, so
    colleagues can read a run folder on a shared cluster); the temporary file of
    ``tempfile.mkstemp`` alone would be 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            mode = 0o666 & ~current_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            else:  # pragma: no cover - Windows: only the read-only bit exists
                os.chmod(tmp, mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------ state <-> plain containers
def drain_in_flight(comm: Any) -> None:
    """Wait for every average posted with ``comm.mean_start`` (``comm.synchronize()``): their
    results land in the algorithm's state (Streaming DiLoCo's in-flight fragments), which a
    checkpoint may then read. Call it before reading the state for a checkpoint or a
    ``state_dict``."""
    comm.synchronize()


def to_plain(obj: Any) -> Any:
    """A copy of ``obj`` made of tensors (cloned, on the CPU), numbers, strings, ``None``, lists,
    tuples and dicts only: loadable with ``torch.load(..., weights_only=True)``.

    Dataclasses become ``{"__dataclass__": type name, "fields": {...}}`` and a ``torch.Generator``
    becomes ``{"__generator__": its uint8 state}``. Anything else raises ``TypeError``.
    """
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, torch.Generator):
        return {"__generator__": obj.get_state()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__dataclass__": type(obj).__name__,
            "fields": {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, list | tuple):
        items = [to_plain(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def restore_into(template: Any, saved: Any, where: str = "state") -> Any:
    """Rebuild a live value from ``saved`` (:func:`to_plain` output), shaped like ``template``.

    ``template`` is a fresh value of the same slot (``algorithm.init(x, comm)`` of the same run):
    tensors are copied **into** the template's tensors (keeping their device and any aliasing
    between them) after checking shape and dtype; dataclasses are rebuilt field by field (the
    field names must match); a slot that is ``None`` in the template takes the saved value.

    Raises ``ValueError`` naming the first mismatching slot (``where``).
    """
    if isinstance(saved, dict) and "__generator__" in saved:
        gen = template if isinstance(template, torch.Generator) else torch.Generator()
        gen.set_state(saved["__generator__"])
        return gen
    if isinstance(saved, dict) and "__dataclass__" in saved:
        fields = saved["fields"]
        if not (dataclasses.is_dataclass(template) and not isinstance(template, type)):
            raise ValueError(
                f"{where}: the checkpoint holds a {saved['__dataclass__']} but this run's "
                f"state is a {type(template).__name__}"
            )
        names = [f.name for f in dataclasses.fields(template)]
        if sorted(names) != sorted(fields):
            raise ValueError(
                f"{where}: the checkpoint's {saved['__dataclass__']} has fields "
                f"{sorted(fields)}, this run's {type(template).__name__} has {sorted(names)}"
            )
        values = {n: restore_into(getattr(template, n), fields[n], f"{where}.{n}") for n in names}
        if dataclasses.fields(template) and all(f.init for f in dataclasses.fields(template)):
            return type(template)(**values)
        out = template
        for n, v in values.items():
            object.__setattr__(out, n, v)
        return out
    if isinstance(saved, Tensor):
        if not isinstance(template, Tensor):
            return saved.clone()
        if tuple(template.shape) != tuple(saved.shape) or template.dtype != saved.dtype:
            raise ValueError(
                f"{where}: the checkpoint holds a {saved.dtype} tensor of shape "
                f"{tuple(saved.shape)}, this run expects {template.dtype} {tuple(template.shape)}"
            )
        try:
            template.copy_(saved)
            return template
        except RuntimeError:  # e.g. an expanded (broadcast) view cannot be written
            return saved.to(template.device, copy=True)
    if isinstance(saved, list | tuple):
        same = isinstance(template, list | tuple) and len(template) == len(saved)
        items = [
            restore_into(template[i] if same else None, v, f"{where}[{i}]")
            for i, v in enumerate(saved)
        ]
        if isinstance(template, tuple) and hasattr(template, "_fields"):
            return type(template)(*items)
        return items if isinstance(saved, list) else tuple(items)
    if isinstance(saved, dict):
        cur = template if isinstance(template, dict) else {}
        return {k: restore_into(cur.get(k), v, f"{where}[{k!r}]") for k, v in saved.items()}
    return saved


# ------------------------------------------------------------------ files of a run folder
def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step-{step:08d}"


def save_shard(run_dir: str | Path, step: int, shard: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain containers) as shard ``shard`` of step ``step``, atomically."""
    folder = step_dir(run_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = folder / f"shard-{shard}.pt"
    atomic_write_bytes(path, buf.getvalue())
    return path


def commit(run_dir: str | Path, step: int, *, engine: str, workers: int, shards: int) -> None:
    """Make step ``step`` the run's checkpoint (replace ``checkpoint.json``), then delete the older
    step folders. Call once every shard of ``step`` is written."""
    run_dir = Path(run_dir)
    folder = step_dir(run_dir, step)
    record = {
        "format": FORMAT,
        "step": step,
        "path": str(folder.relative_to(run_dir)),
        "engine": engine,
        "workers": workers,
        "shards": shards,
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(record, indent=2) + "\n")
    for old in (run_dir / FOLDER).glob("step-*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The commit record of ``run_dir``; ``ValueError`` when there is none or it is unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--resume: run folder {str(run_dir)!r} does not exist")
    path = run_dir / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"--resume: {str(run_dir)!r} holds no checkpoint ({MANIFEST} is missing); the run "
            "saved none before it stopped (use --checkpoint-every N) - start it again without "
            "--resume"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"--resume: {path} is not a peergrad checkpoint record ({FORMAT})")
    return record


def load_shard(run_dir: str | Path, record: dict[str, Any], shard: int) -> dict[str, Any]:
    """Shard ``shard`` of the checkpoint that ``record`` (:func:`read_manifest`) names."""
    path = Path(run_dir) / record["path"] / f"shard-{shard}.pt"
    if not path.is_file():
        raise ValueError(f"--resume: checkpoint shard {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"--resume: cannot read checkpoint shard {path}: {exc}") from exc
