"""Start-up: ``peergrad --help``, ``--version`` and argparse's refusals import no torch.

``import torch`` is almost all of the command's start-up (3-5 s against ~0.1 s), so these
answers must not reach it (issue 25, item 8): ``peergrad.cli`` builds its parser from
``TrainConfig`` (a torch-free module) and from plain tuples of registry names, checked here
against the registries themselves; ``peergrad`` and ``peergrad.train`` export their heavy names
lazily. Nor may ``peergrad train``'s refusal of a bad range, name or schedule (issue 25, item 1:
the torch-free checks of ``validate`` run before the command imports torch). What is checked is
the set of imported modules, not a time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import peergrad
import peergrad.train
from peergrad import cli

#: Modules that no --help / --version / argparse refusal may import.
HEAVY = ("torch", "matplotlib", "numpy", "networkx")


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m peergrad ARGS``; its result and every module it imported
    (read from the ``-X importtime`` lines on stderr)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "peergrad", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        line.rpartition("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return proc, modules


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--help"], 0, "usage: peergrad"),
        (["--version"], 0, f"peergrad {peergrad.__version__}"),
        (["train", "--help"], 0, "--algorithm"),
        (["compare", "--help"], 0, "--algorithms"),
        (["train", "--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
        (["train", "--workers", "two"], 2, "argument --workers: invalid int value"),
        (["train", "--engine", "both"], 2, "argument --engine: invalid choice"),
        (["check-adam", "--preset", "adamw"], 2, "argument --preset: invalid choice"),
        (["train", "--workers", "0"], 2, "--workers must be an integer >= 1, got 0"),
        (["train", "--algorithm", "nope"], 2, "--algorithm: unknown algorithm 'nope'"),
        (["train", "--steps", "2", "--warmup-steps", "2"], 2, "--warmup-steps 2 must be less"),
    ],
    ids=[
        "help",
        "version",
        "train-help",
        "compare-help",
        "unknown",
        "bad-type",
        "bad-choice",
        "adam-preset",
        "bad-range",
        "bad-name",
        "bad-schedule",
    ],
)
def test_answers_without_importing_torch(args: list[str], code: int, says: str) -> None:
    proc, modules = imported_modules(*args)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    assert "peergrad.cli" in modules  # the import log was read (the test can fail)
    assert sorted(m for m in modules if m.partition(".")[0] in HEAVY) == []


def test_the_detector_sees_torch_where_a_command_needs_it() -> None:
    proc, modules = imported_modules("topology", "ring", "--workers", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch" in modules


def test_parser_names_match_the_registries() -> None:
    """The parser's plain tuples list each registry's names in the registry's order; when this
    fails, copy the registry's names into the tuple in ``peergrad/train/names.py``."""
    from peergrad.algorithms import REGISTRY
    from peergrad.data import DATASETS, PARTITIONS
    from peergrad.models import MODELS
    from peergrad.system import PRESETS
    from peergrad.topology import TOPOLOGIES
    from peergrad.train.plots import PLOT_AXES
    from peergrad.transforms.generic_adam import PRESETS as ADAM_PRESETS

    assert cli.ALGORITHM_NAMES == tuple(REGISTRY)
    assert cli.TOPOLOGY_NAMES == tuple(TOPOLOGIES)
    assert cli.DATASET_NAMES == tuple(DATASETS)
    assert cli.PARTITION_NAMES == tuple(PARTITIONS)
    assert cli.MODEL_NAMES == tuple(MODELS)
    assert cli.SYSTEM_PRESET_NAMES == tuple(PRESETS)
    assert cli.PLOT_AXIS_NAMES == tuple(PLOT_AXES)
    assert cli.ADAM_PRESET_NAMES == tuple(ADAM_PRESETS)


@pytest.mark.parametrize("module", [peergrad, peergrad.train], ids=lambda m: m.__name__)
def test_lazy_exports(module: object) -> None:
    """Every name of ``__all__`` resolves and is listed by ``dir()``; others raise."""
    names = module.__all__  # type: ignore[attr-defined]
    assert set(names) <= set(dir(module))
    for name in names:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_public_imports() -> None:
    from peergrad import Task
    from peergrad.study.compare import CompareEntry as CompareEntryItself
    from peergrad.train import CompareEntry, TrainConfig, format_summary, train
    from peergrad.train.config import TrainConfig as TrainConfigItself
    from peergrad.train.loop import format_summary as format_summary_itself
    from peergrad.train.loop import train as train_itself
    from peergrad.train.task import Task as TaskItself

    assert Task is TaskItself
    assert TrainConfig is TrainConfigItself
    assert CompareEntry is CompareEntryItself
    assert train is train_itself
    assert format_summary is format_summary_itself
