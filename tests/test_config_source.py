"""Issue 25 item 1: the configuration has one source of truth.

``TrainConfig``'s fields carry their metadata, the ``peergrad train`` / ``compare`` flags are
generated from it (one-to-one), one ``validate`` holds every check and every entry point runs it
(the CLI, ``train()``, ``compare`` and both ``--resume``), and one function merges ``lr`` /
``momentum`` / ``weight_decay`` with ``--set``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import peergrad.train.validate as validate_module
from peergrad.cli import build_parser, main
from peergrad.cli.train import COMMAND_FLAGS, add_train_arguments
from peergrad.study.compare import CompareEntry, compare
from peergrad.train import TrainConfig, train
from peergrad.train.checks import check_fields
from peergrad.train.config import (
    GROUPS,
    PER_LABEL_FIELDS,
    PRESET_FIELDS,
    flag_of,
    merge_algorithm_options,
)
from peergrad.train.fields import Option, Range, option, option_of

TINY = {"dataset": "digits", "model": "logreg", "workers": 2, "steps": 2, "batch_size": 8}
CLI_TINY = ["--dataset", "digits", "--model", "logreg", "--workers", "2", "--steps", "2"]
CLI_TINY += ["--batch-size", "8", "--no-progress"]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def field_flags(p: argparse.ArgumentParser) -> dict[str, list[str]]:
    """``{dest: [flags]}`` of the parser's flags that are no command flag."""
    out: dict[str, list[str]] = {}
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            out.setdefault(a.dest, []).extend(a.option_strings)
    return out


# ------------------------------------------------------------------------- fields and flags
def test_every_field_carries_its_metadata() -> None:
    for field in dataclasses.fields(TrainConfig):
        opt = option_of(field)
        assert isinstance(opt, Option)
        assert opt.help and opt.group in GROUPS, field.name
        if opt.range is not None:
            assert opt.range.accepts(field.default) or field.default is None, field.name
    assert "workers" in PER_LABEL_FIELDS and "seed" not in PER_LABEL_FIELDS
    assert PRESET_FIELDS == (
        "dataset",
        "data_root",
        "download",
        "model",
        "model_options",
        "data_options",
        "loss",
    )


def test_train_flags_are_the_fields_one_to_one() -> None:
    """Every field has its flag (two for an on/auto/off field), every flag but ``--overwrite`` /
    ``--resume`` is a field's, with the field's default."""
    p = subparser("train")
    flags = field_flags(p)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    command = {"overwrite", "resume"}
    assert {f"--{d}" for d in command} == set(COMMAND_FLAGS)
    assert sorted(set(flags) - command) == sorted(names)
    for name in names:
        expected = option_of(TrainConfig.__dataclass_fields__[name]).flags_for(name)
        assert flags[name] == expected, name
    assert flags["progress"] == ["--progress", "--no-progress"]
    assert flags["download"] == ["--no-download"] and flags["options"] == ["--set"]
    defaults = vars(p.parse_args([]))
    for name in names:
        kind = option_of(TrainConfig.__dataclass_fields__[name]).kind
        expected = [] if kind == "key_value" else getattr(TrainConfig(), name)
        if name == "val_fraction":  # None: not given (compare picks 0.1 with a grid)
            expected = None
        assert defaults[name] == expected, name


def test_compare_shares_the_train_flags() -> None:
    train_flags = field_flags(subparser("train"))
    compare_flags = field_flags(subparser("compare"))
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        if name == "algorithm":  # compare takes --algorithms LABEL,... instead
            assert name not in compare_flags
        else:
            assert compare_flags[name] == train_flags[name], name


def test_adding_a_field_adds_its_flag_and_its_check() -> None:
    """A new option is one field: its flag, type and range check come from its metadata."""
    extended = dataclasses.make_dataclass(
        "Extended",
        [
            (
                "max_grad_norm",
                float | None,
                option(
                    None,
                    group="steps",
                    unit="L2 norm",
                    range=Range(0, low_open=True),
                    help="clip every worker's gradient to this norm (default: none)",
                ),
            ),
            ("clip_every", int, option(1, group="steps", range=Range(1), help="steps")),
        ],
        bases=(TrainConfig,),
    )
    p = argparse.ArgumentParser()
    actions = add_train_arguments(p, config_class=extended)
    new = {a.option_strings[0]: a for a in actions if a.dest in ("max_grad_norm", "clip_every")}
    assert set(new) == {"--max-grad-norm", "--clip-every"}
    assert new["--max-grad-norm"].type is float and new["--clip-every"].type is int
    args = p.parse_args(["--max-grad-norm", "0.5", "--clip-every", "3"])
    assert (args.max_grad_norm, args.clip_every) == (0.5, 3)
    check_fields(extended(max_grad_norm=0.5))
    with pytest.raises(ValueError, match=r"^--max-grad-norm must be > 0, got -1.0$"):
        check_fields(extended(max_grad_norm=-1.0))
    with pytest.raises(ValueError, match=r"^--clip-every must be >= 1, got 1.5$"):
        check_fields(extended(clip_every=1.5))


def test_range_text_and_membership() -> None:
    assert Range(1, prefix="an integer").text == "an integer >= 1"
    assert Range(0, 1, low_open=True).text == "in (0, 1]"
    assert Range(prefix="a finite number").text == "a finite number"
    r = Range(0, 0.5, note=" (0: none)")
    assert r.text == "in [0, 0.5] (0: none)"
    assert r.accepts(0) and r.accepts(0.5) and not r.accepts(0.51)
    assert not r.accepts(True) and not r.accepts(float("nan")) and not r.accepts("0.1")
    assert not Range(1).accepts(2.0, int) and Range(1).accepts(2, int)


# ------------------------------------------------------------------------- the one merge
def test_one_merge_of_lr_momentum_and_weight_decay_with_set() -> None:
    assert merge_algorithm_options({"form": "atc"}, {"lr": 0.1, "momentum": None}) == {
        "form": "atc",
        "lr": 0.1,
    }
    message = "--set lr=0.5 and --lr 0.2 both set lr; give only one of them"
    with pytest.raises(ValueError, match=f"^{message}$"):
        TrainConfig(options={"lr": 0.5}, lr=0.2).algorithm_options()
    hint = " (--set-for LABEL:{key}=... changes it)"
    with pytest.raises(ValueError, match=r"weight_decay; give only one of them \(--set-for LABEL:"):
        merge_algorithm_options({"weight_decay": 1}, {"weight_decay": 2}, hint=hint)


# ------------------------------------------------------------------------- the one validate
@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run with a checkpoint and a finished comparison, to resume."""
    tmp = tmp_path_factory.mktemp("one-validate")
    run, cmp = tmp / "run", tmp / "cmp"
    assert main(["train", *CLI_TINY, "--checkpoint-every", "2", "--out", str(run)]) == 0
    assert main(["compare", "--algorithms", "dpsgd", *CLI_TINY, "--out", str(cmp)]) == 0
    return {"run": run, "cmp": cmp}


ENTRY_POINTS = ["cli-train", "train", "compare", "cli-compare", "cli-resume", "cli-compare-resume"]


def call(entry: str, folders: dict[str, Path], tmp: Path, **changes: Any) -> tuple[int, str]:
    """Run one entry point with ``changes`` to the tiny config; ``(exit status, error)`` (the
    Python ones: ``(2, message)`` when they raise ``ValueError``)."""
    config = TrainConfig(**{**TINY, "progress": False, **changes})
    cli = [
        f"{flag_of(k)}={v}" if not isinstance(v, bool) else flag_of(k) for k, v in changes.items()
    ]
    try:
        if entry == "train":
            train(config, write=False)
        elif entry == "compare":
            compare(config, [CompareEntry.from_label("dpsgd")], write=False)
        elif entry == "cli-train":
            return main(["train", *CLI_TINY, *cli, "--out", str(tmp / "never")]), ""
        elif entry == "cli-compare":
            argv = ["compare", "--algorithms", "dpsgd", *CLI_TINY, *cli]
            return main([*argv, "--out", str(tmp / "never")]), ""
        elif entry == "cli-resume":
            return main(["train", "--resume", str(folders["run"])]), ""
        else:
            return main(["compare", "--resume", str(folders["cmp"])]), ""
    except ValueError as exc:
        return 2, str(exc)
    return 0, ""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_runs_the_one_validate(
    entry: str,
    folders: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``validate``'s first step is looked up in its module at each call: replaced there, it
    refuses the config of every entry point, before any run starts."""
    seen: list[TrainConfig] = []

    def refuse(config: TrainConfig, *, custom_task: bool = False) -> None:
        seen.append(config)
        raise ValueError("--workers refused by the one validate")

    monkeypatch.setattr(validate_module, "check_fields", refuse)
    capsys.readouterr()
    code, message = call(entry, folders, tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert "refused by the one validate" in message + err
    assert seen and all(isinstance(c, TrainConfig) for c in seen)
    if entry == "cli-resume":
        assert seen[0].out == str(folders["run"]) and seen[0].checkpoint_every == 2
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_bad_value_is_refused_alike_everywhere(
    entry: str,
    folders: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``eval_workers=0``: one message, naming the flag on the command line and the field from
    Python (``compare`` prefixes the run's label); in a resumed run's saved config too."""
    if "resume" in entry:  # a saved config.json / compare.json plan holding the bad value
        copy = tmp_path / "copy"
        source = folders["run" if entry == "cli-resume" else "cmp"]
        shutil.copytree(source, copy)
        folders = {**folders, "run": copy, "cmp": copy}
        path = copy / "compare.json" if entry != "cli-resume" else copy / "config.json"
        data = json.loads(path.read_text())
        (data["plan"]["config"] if entry != "cli-resume" else data)["eval_workers"] = 0
        path.write_text(json.dumps(data))
    capsys.readouterr()
    code, message = call(entry, folders, tmp_path, eval_workers=0)
    err = capsys.readouterr().err.strip()
    assert code == 2
    label = "dpsgd: " if "compare" in entry else ""
    if entry.startswith("cli"):
        command = "compare" if "compare" in entry else "train"
        assert err == f"peergrad {command}: error: {label}--eval-workers must be >= 1, got 0"
    else:
        assert message == f"{label}eval_workers must be >= 1, got 0"


def test_validate_names_fields_from_python_and_flags_from_the_cli() -> None:
    from peergrad.train.spelling import cli_spelling
    from peergrad.train.validate import validate

    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1, got 0$"):
        validate(TrainConfig(batch_size=0))
    with cli_spelling(), pytest.raises(ValueError, match=r"^--batch-size must be an integer"):
        validate(TrainConfig(batch_size=0))
    validate(TrainConfig(**TINY))


# ------------------------------------------------------------------------- old names
def test_old_names_still_work_and_warn() -> None:
    import peergrad.study.compare as study_compare
    import peergrad.train.loop as loop
    from peergrad import cli
    from peergrad.train import build, resolve

    bad = TrainConfig(workers=0)
    for old in (loop.validate_config, cli.check_config, resolve.check_config):
        with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="workers"):
            old(bad)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="workers"):
        study_compare.check_config_fields(bad)
    with pytest.warns(DeprecationWarning, match="loop.check_names"):
        loop.check_names(TrainConfig())
    for name in ("resolve_device", "system_profile", "build_algorithm", "DTYPES"):
        with pytest.warns(DeprecationWarning, match=f"moved to peergrad.train.build.{name}"):
            assert getattr(loop, name) is getattr(build, name)
    with pytest.raises(AttributeError):
        loop.no_such_name  # type: ignore[attr-defined]  # noqa: B018
