"""Output folders: never replace a user's files without an explicit ``--overwrite``.

``peergrad train --out DIR`` refuses a folder that already holds a run (any of
:data:`RUN_FILES`, e.g. ``config.json``), naming ``--resume`` and ``--overwrite``; ``peergrad
compare --out DIR`` refuses a folder that holds a comparison (any of
:data:`peergrad.study.compare.OUTPUT_FILES` or a run folder). With ``overwrite=True`` only what
peergrad wrote is removed (:func:`clear_run_files`, :func:`clear_compare_files`), and only once
every check of the new run has passed: other files in the folder are kept, and a rejected command
loses nothing. Names chosen by default (no ``--out``) take the next free suffix and never reuse a
folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

#: What a run writes into its folder (``checkpoints`` and ``tensorboard`` are folders; the
#: latter only with ``--tensorboard``).
RUN_FILES: tuple[str, ...] = (
    "config.json",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "loss_accuracy_vs_steps.png",
    "loss_accuracy_vs_bytes.png",
    "checkpoint.json",
    "checkpoints",
    "tensorboard",
)


def existing(folder: Path, names: Iterable[str]) -> list[str]:
    """The entries of ``names`` that exist in ``folder`` (files or folders)."""
    return [name for name in names if (folder / name).exists()]


def _check_is_folder(folder: Path, flag: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} is a file, not a folder; choose a folder")


def check_run_folder(folder: str | Path, *, overwrite: bool, flag: str = "--out") -> None:
    """``ValueError`` when ``folder`` holds an earlier run (any of :data:`RUN_FILES`) and not
    ``overwrite``; the message names ``--resume`` and ``--overwrite``. Changes nothing."""
    folder = Path(folder)
    _check_is_folder(folder, flag)
    if overwrite or not folder.is_dir():
        return
    found = existing(folder, RUN_FILES)
    if "config.json" in found:
        raise ValueError(
            f"{flag} {str(folder)!r} already holds a run (config.json): continue it with "
            f"--resume {folder}, replace it with --overwrite, or choose another {flag}"
        )
    if found:
        raise ValueError(
            f"{flag} {str(folder)!r} already holds {', '.join(found)} of an earlier run: "
            f"replace them with --overwrite or choose another {flag}"
        )


def clear_run_files(folder: str | Path) -> None:
    """Remove what a run wrote into ``folder`` (:data:`RUN_FILES` and leftover temporary files
    of interrupted atomic writes); other files stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    _remove_outputs(folder, RUN_FILES)


def run_subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that hold a run (any of :data:`RUN_FILES`), one or two
    levels down (``LABEL/`` of a plain comparison, ``LABEL/lr0.1-seed0/`` with seeds or a
    learning-rate grid)."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if not p.is_dir():
            continue
        if existing(p, RUN_FILES):
            found.append(p)
        else:
            found += [q for q in p.iterdir() if q.is_dir() and existing(q, RUN_FILES)]
    return sorted(found)


def check_compare_folder(
    folder: str | Path, output_files: Iterable[str], *, overwrite: bool, flag: str = "--out"
) -> None:
    """``ValueError`` when ``folder`` holds an earlier comparison (one of ``output_files`` or a
    run sub-folder) and not ``overwrite``. Changes nothing."""
    folder = Path(folder)
    _check_is_folder(folder, flag)
    if overwrite or not folder.is_dir():
        return
    found = existing(folder, output_files) + [p.name + "/" for p in run_subfolders(folder)]
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(
            f"{flag} {str(folder)!r} already holds a comparison ({shown}): replace it with "
            f"--overwrite (which first removes those runs) or choose another {flag}"
        )


def clear_compare_files(folder: str | Path, output_files: Iterable[str]) -> None:
    """Remove an earlier comparison from ``folder``: ``output_files`` and every run sub-folder
    (its :data:`RUN_FILES`; the sub-folder itself when nothing else is left in it)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    _remove_outputs(folder, output_files)
    for sub in run_subfolders(folder):
        clear_run_files(sub)
        if not any(sub.iterdir()):
            sub.rmdir()
            if sub.parent != folder and not any(sub.parent.iterdir()):
                sub.parent.rmdir()  # the label folder of LABEL/lr0.1-seed0/


def _remove_outputs(folder: Path, names: Iterable[str]) -> None:
    """Remove ``names`` from ``folder`` with the temporary files of their interrupted atomic
    writes (``.NAME.*.tmp``)."""
    for name in names:
        _remove(folder / name)
        for tmp in folder.glob(f".{name}.*.tmp"):
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
