"""Per-algorithm defaults and their documentation (issue 13, item 3): ``--lr``, ``--momentum`` and
``--weight-decay`` default to the algorithm's own values (no global momentum 0.9); every option
of every algorithm is documented with its range and meaning (``peergrad algorithms NAME``);
``--help`` shows every default; ``--set k=v`` beside ``--k`` is an error; ``--version``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from _helpers import SMALL
from peergrad.algorithms import ALGORITHMS, REGISTRY
from peergrad.algorithms.docs import describe_options, option_docs, parse_options_section
from peergrad.cli import HelpFormatter, build_parser, main
from peergrad.train import TrainConfig


@pytest.mark.parametrize("cls", ALGORITHMS, ids=lambda c: c.name)
def test_every_option_is_documented_with_a_range_and_a_meaning(cls: type) -> None:
    docs = option_docs(cls)
    for f in dataclasses.fields(cls):
        assert f.name in docs, f"{cls.name}: option {f.name} has no entry in an Options: section"
        rng, meaning = docs[f.name]
        assert rng and len(meaning) > 10, (cls.name, f.name, rng, meaning)
    own = parse_options_section(cls.__dict__.get("__doc__"))
    assert set(own) <= {f.name for f in dataclasses.fields(cls)}, "entries for no option"


def test_the_options_section_parser() -> None:
    doc = """Title.

    Options:

    - ``lr`` > 0: the step
      size, continued.
    - ``form`` one of cta, atc: which form.

    Not an option: ``x``.
    """
    assert parse_options_section(doc) == {
        "lr": ("> 0", "the step size, continued."),
        "form": ("one of cta, atc", "which form."),
    }
    assert parse_options_section("no section") == {}


def test_cli_defaults_are_each_algorithms_own(tmp_path: Path) -> None:
    """No flag: dpsgd runs with its own momentum 0 (the paper's plain SGD) and
    decentralized-amsgrad with its β₁ = 0.9; the trajectory equals the explicit flag's."""

    def metrics(name: str, *extra: str) -> list[dict]:
        out = tmp_path / name
        assert main(["train", *SMALL, *extra, "--out", str(out)]) == 0
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]

    assert REGISTRY["dpsgd"]().momentum == 0.0
    default = metrics("default")
    assert default == metrics("zero", "--momentum", "0")
    assert default != metrics("heavy", "--momentum", "0.9")  # the old global default
    hyper = json.loads((tmp_path / "default" / "config.json").read_text())["hyperparameters"]
    assert hyper["momentum"] == 0.0 and hyper["lr"] == 0.1
    assert metrics("ams", "--algorithm", "decentralized-amsgrad") == metrics(
        "ams9", "--algorithm", "decentralized-amsgrad", "--momentum", "0.9"
    )
    assert TrainConfig().momentum is None and TrainConfig().lr is None


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_algorithms_name_prints_every_option(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms", name]) == 0
    text = capsys.readouterr().out
    cls = REGISTRY[name]
    docs = option_docs(cls)
    for f in dataclasses.fields(cls):
        line = next(line for line in text.splitlines() if line.startswith(f.name + " "))
        assert repr(f.default) in line and docs[f.name][0] in line, line
    assert main(["algorithms", name, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in record["options"]] == [f.name for f in dataclasses.fields(cls)]
    assert record["options"] == json.loads(json.dumps(describe_options(cls), default=str))


def test_algorithms_dpsgd_says_what_its_defaults_are(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms", "dpsgd"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^momentum\s+0\.0\s+in \[0, 1\)\s+local heavy-ball momentum", text, re.M)
    assert re.search(r"^form\s+'cta'\s+one of cta, atc\s+cta \(the paper's\)", text, re.M)
    assert "gossips over --topology" in text


def test_algorithms_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms", "sgdd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown algorithm 'sgdd'; choose one of: allreduce" in err[0]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(subparsers(build_parser())))
def test_help_shows_every_default(command: str) -> None:
    sub = subparsers(build_parser())[command]
    assert sub.formatter_class is HelpFormatter
    formatter = sub._get_formatter()
    assert isinstance(formatter, HelpFormatter)
    for action in sub._actions:
        if not action.option_strings or action.required or action.dest == "help":
            continue
        assert action.help, f"peergrad {command} {action.option_strings[0]} has no help"
        text = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in text, f"peergrad {command} {action.option_strings[0]}: {text!r}"
    text = sub.format_help()
    if command == "train":
        assert "(default: 32)" in text  # --batch-size
        assert "the algorithm's own" in text  # --lr, --momentum, --weight-decay


def test_set_and_flag_for_the_same_option_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    argv = ["train", *SMALL, "--set", "momentum=0.5", "--momentum", "0.2", "--out", str(out)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "--set momentum=0.5 and --momentum 0.2 both set momentum" in lines[0]
    assert not out.exists()
    argv = ["compare", *SMALL, "--algorithms", "dpsgd", "--set", "lr=0.5", "--lr", "0.2"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "--set lr=0.5 and --lr 0.2 both set lr" in capsys.readouterr().err
    assert not out.exists()


def test_compare_set_for_overrides_a_shared_flag(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", *SMALL, "--steps", "2", "--eval-every", "2", "--momentum", "0.9"]
    argv += ["--algorithms", "dpsgd,dpsgd@plain", "--set-for", "dpsgd@plain:momentum=0"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["hyperparameters"]["momentum"] for r in rows] == [0.9, 0.0]


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == (f"peergrad {importlib.metadata.version('peergrad')}")
