"""Bad input is rejected before any work starts: ``peergrad train`` exits with code 2 and one
``error:`` line naming the argument and what it accepts, and creates no run folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from peergrad.cli import main

HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()

BASE = ["--dataset", "digits", "--model", "logreg", "--workers", "4", "--steps", "2"]
BASE += ["--batch-size", "8", "--no-progress"]

# (id, extra argv, substrings the error line must contain). "{tmp}" is the test's folder.
CASES: list[tuple[str, list[str], list[str]]] = [
    ("algorithm", ["--algorithm", "nope"], ["--algorithm", "'nope'", "allreduce, dpsgd, d2"]),
    ("topology", ["--topology", "hypercube"], ["--topology", "'hypercube'", "ring, torus"]),
    ("dataset", ["--dataset", "imagenet"], ["--dataset", "'imagenet'", "mnist, digits"]),
    ("model", ["--model", "vit"], ["--model", "'vit'", "logreg, mlp, lenet5"]),
    ("partition", ["--partition", "random"], ["--partition", "'random'", "iid"]),
    ("engine-choice", ["--engine", "tpu"], ["--engine", "invalid choice", "simulated"]),
    ("dtype-choice", ["--dtype", "float16"], ["--dtype", "invalid choice", "float64"]),
    ("workers-type", ["--workers", "four"], ["--workers", "invalid int value"]),
    ("workers-zero", ["--workers", "0"], ["--workers must be an integer >= 1"]),
    ("workers-too-many", ["--workers", "720", "--batch-size", "2"], ["must be in [1, 1]"]),
    ("batch-zero", ["--batch-size", "0"], ["--batch-size must be an integer >= 1"]),
    ("batch-gt-shard", ["--batch-size", "400"], ["--batch-size", "must be in [1, 359]"]),
    ("steps", ["--steps", "0"], ["--steps must be >= 1"]),
    ("eval-every", ["--eval-every", "0"], ["--eval-every must be >= 1"]),
    ("eval-workers", ["--eval-workers", "0"], ["--eval-workers must be >= 1"]),
    ("lr-negative", ["--lr", "-1"], ["lr must be a finite number > 0", "-1.0"]),
    ("lr-zero", ["--lr", "0"], ["lr must be a finite number > 0"]),
    ("lr-nan", ["--lr", "nan"], ["--lr must be a finite number"]),
    ("momentum", ["--momentum", "1.5"], ["momentum must be in [0, 1)", "1.5"]),
    ("weight-decay", ["--weight-decay", "-1"], ["weight_decay must be a finite number >= 0"]),
    ("timeout", ["--timeout-s", "0"], ["--timeout-s must be a number > 0"]),
    ("latency", ["--latency-ms", "-1"], ["--latency-ms must be >= 0"]),
    ("bandwidth", ["--bandwidth-gbps", "0"], ["--bandwidth-gbps must be > 0"]),
    ("device", ["--device", "tpu"], ["--device"]),
    ("device-xyz", ["--device", "xyz"], ["--device must be one of cpu, cuda, cuda:N", "'xyz'"]),
    ("device-meta", ["--device", "meta"], ["--device must be one of cpu, cuda, cuda:N", "'meta'"]),
    ("device-cuda-index", ["--device", "cuda:9"], ["--device cuda:9", "CUDA"]),
    (
        "device-mps",
        ["--device", "mps:9" if HAS_MPS else "mps"],
        ["--device mps", "there is one MPS device" if HAS_MPS else "MPS is not available"],
    ),
    (
        "set-and-flag",
        ["--set", "momentum=0.5", "--momentum", "0.2"],
        ["--set momentum=0.5 and --momentum 0.2 both set momentum", "give only one"],
    ),
    (
        "out-holds-a-run",
        ["--out", "{tmp}/done"],
        ["--out", "already holds a run (config.json)", "--resume", "--overwrite"],
    ),
    ("out-is-a-file", ["--out", "{tmp}/nockpt/config.json"], ["--out", "is a file"]),
    (
        "resume-and-overwrite",
        ["--resume", "{tmp}/done", "--overwrite"],
        ["--overwrite and --resume contradict each other"],
    ),
    ("set-syntax", ["--set", "noequals"], ["--set expects key=value", "'noequals'"]),
    ("set-unknown", ["--set", "gamma=2"], ["has no option(s) gamma", "its options are: lr"]),
    ("set-type", ["--set", "momentum=abc"], ["option momentum='abc' is not a valid float"]),
    (
        "ratio-zero",
        ["--algorithm", "ef-sgd", "--set", "ratio=0"],
        ["ratio must be in (0, 1]", "0.0"],
    ),
    (
        "ratio-above-one",
        ["--algorithm", "choco-sgd", "--set", "ratio=1.5"],
        ["ratio must be in (0, 1]", "1.5"],
    ),
    (
        "compressor",
        ["--algorithm", "ef-sgd", "--set", "compressor=zip"],
        ["compressor must be one of identity, topk, randomk", "'zip'"],
    ),
    ("val-fraction", ["--val-fraction", "0.7"], ["--val-fraction must be in [0, 0.5]", "0.7"]),
    (
        "powersgd-without-error-feedback",
        ["--algorithm", "ef-sgd", "--set", "compressor=powersgd", "--set", "memory=false"],
        ["compressor 'powersgd' is not available", "--algorithm powersgd", "compressor must be"],
    ),
    (
        "powersgd-on-choco",
        ["--algorithm", "choco-sgd", "--set", "compressor=powersgd"],
        ["compressor 'powersgd' is not available", "--algorithm powersgd"],
    ),
    (
        "qsgd-levels",
        ["--algorithm", "ef-sgd", "--set", "compressor=qsgd", "--set", "levels=0"],
        ["levels must be an integer >= 1"],
    ),
    (
        "detag-directed",
        ["--algorithm", "detag", "--topology", "exponential"],
        ["detag", "'exponential' is directed", "eta must be 0"],
    ),
    (
        "d2-time-varying",
        ["--algorithm", "d2", "--topology", "one-peer-exponential"],
        ["d2", "time-varying"],
    ),
    (
        "choco-time-varying",
        ["--algorithm", "choco-sgd", "--topology", "one-peer-exponential"],
        ["choco-sgd needs a static topology"],
    ),
    (
        "disconnected-graph",
        ["--topology", "erdos-renyi", "--erdos-renyi-p", "0.01"],
        ["no connected", "increase p"],
    ),
    (
        "erdos-renyi-p",
        ["--topology", "erdos-renyi", "--erdos-renyi-p", "1.5"],
        ["--erdos-renyi-p must be in (0, 1]"],
    ),
    (
        "dirichlet-alpha",
        ["--partition", "dirichlet", "--dirichlet-alpha", "0"],
        ["--dirichlet-alpha must be a number > 0"],
    ),
    ("data-root-missing", ["--dataset", "mnist-idx"], ["--dataset mnist-idx needs --data-root"]),
    (
        "data-root-not-a-folder",
        ["--dataset", "cifar10", "--data-root", "{tmp}/nockpt/config.json"],
        ["--data-root", "is not a folder", "cifar-10-batches-py/{data_batch_1..5, test_batch}"],
    ),
    (
        "data-root-missing-no-download",
        ["--dataset", "cifar100", "--data-root", "{tmp}/nowhere", "--no-download"],
        ["--data-root", "does not exist", "cifar-100-python/{train, test}"],
    ),
    (
        "data-root-empty-no-download",
        ["--dataset", "mnist-idx", "--data-root", "{tmp}/empty", "--no-download"],
        ["MNIST IDX files not found", "train-images-idx3-ubyte", "MNIST/raw"],
    ),
    (
        "outside-torchrun",
        ["--engine", "distributed"],
        ["--engine distributed must be started by torchrun", "RANK"],
    ),
    (
        "checkpoint-every",
        ["--checkpoint-every", "0"],
        ["--checkpoint-every must be an integer >= 1"],
    ),
    (
        "distributed-checkpoint-needs-out",
        ["--engine", "distributed", "--checkpoint-every", "5", "--out", None],
        ["--checkpoint-every with --engine distributed needs --out DIR"],
    ),
    ("resume-missing", ["--resume", "{tmp}/nowhere"], ["--resume: run folder", "does not exist"]),
    ("resume-not-a-run", ["--resume", "{tmp}/empty"], ["is not a run folder (no config.json)"]),
    (
        "resume-no-checkpoint",
        ["--resume", "{tmp}/nockpt"],
        ["holds no checkpoint", "--checkpoint-every N"],
    ),
    (
        "resume-changed-option",
        ["--resume", "{tmp}/done", "--lr", "0.5"],
        ["--lr 0.5 differs from the run's", "--steps, --epochs, --checkpoint-every"],
    ),
    (
        "resume-changed-set",
        ["--resume", "{tmp}/done", "--set", "form=atc"],
        ["--set {'form': 'atc'} differs from the run's {}"],
    ),
    # Issue 14: user model / data / loss, model options, learning-rate schedules.
    (
        "model-import-missing",
        ["--model", "no_such_pkg_xyz.models:make"],
        ["--model 'no_such_pkg_xyz.models:make'", "no module named 'no_such_pkg_xyz'"],
    ),
    (
        "model-attribute-missing",
        ["--model", "_user_task:no_such_fn"],
        ["--model '_user_task:no_such_fn'", "has no attribute 'no_such_fn'"],
    ),
    ("model-not-callable", ["--model", "_user_task:NOT_CALLABLE"], ["is a int, not a callable"]),
    ("model-path-syntax", ["--model", "_user_task:"], ["expected package.module:callable"]),
    (
        "dataset-import-missing",
        ["--dataset", "no_such_pkg_xyz:data"],
        ["--dataset 'no_such_pkg_xyz:data'", "no module named"],
    ),
    (
        "model-set-unknown",
        ["--model", "mlp", "--model-set", "width=3"],
        ["--model-set width", "model 'mlp' has no such option; accepted: hidden"],
    ),
    (
        "model-set-user-unknown",
        ["--model", "_user_task:make_model", "--model-set", "depth=3"],
        ["--model-set depth", "accepted: hidden, input_shape, num_classes"],
    ),
    ("model-set-syntax", ["--model-set", "hidden"], ["--model-set expects key=value"]),
    ("data-set-builtin", ["--data-set", "n=3"], ["--data-set n", "takes no options"]),
    ("loss-unknown", ["--loss", "hinge"], ["--loss 'hinge'", "cross-entropy, mse"]),
    ("loss-import", ["--loss", "no_such_pkg_xyz:f"], ["--loss 'no_such_pkg_xyz:f'"]),
    (
        "lr-schedule-unknown",
        ["--lr-schedule", "exponential"],
        ["--lr-schedule 'exponential'", "constant, step:EVERY,GAMMA", "cosine, linear"],
    ),
    ("lr-schedule-step-syntax", ["--lr-schedule", "step:10"], ["step needs EVERY,GAMMA"]),
    (
        "lr-schedule-gamma",
        ["--lr-schedule", "multistep:5,8,-0.1"],
        ["GAMMA must be a positive number"],
    ),
    (
        "warmup-whole-run",
        ["--warmup-steps", "2"],
        ["--warmup-steps 2 must be less than the run's 2 steps"],
    ),
    ("warmup-negative", ["--warmup-steps", "-1"], ["--warmup-steps must be an integer >= 0"]),
    ("buffers-choice", ["--buffers", "global"], ["--buffers", "invalid choice", "average"]),
    ("loader-workers", ["--loader-workers", "-1"], ["--loader-workers must be an integer >= 0"]),
    (
        "resume-changed-model-set",
        ["--resume", "{tmp}/done", "--model-set", "hidden=3"],
        ["--model-set {'hidden': '3'} differs from the run's {}"],
    ),
    (
        "resume-changed-schedule",
        ["--resume", "{tmp}/done", "--lr-schedule", "cosine"],
        ["--lr-schedule 'cosine' differs from the run's 'constant'"],
    ),
    (
        "resume-steps-below-checkpoint",
        ["--resume", "{tmp}/done", "--steps", "1"],
        ["the checkpoint is at step 2", "give at least --steps 2"],
    ),
]
# A model of a package that is not installed: one line naming the package.
CASES += [
    (
        f"model-needs-{package}",
        ["--model", f"{package}:resnet18"],
        [f"--model {package}:resnet18 needs the package {package} (pip install {package})"],
    )
    for package in ("torchvision", "timm")
    if importlib.util.find_spec(package) is None
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("validation")
    (tmp / "empty").mkdir()
    (tmp / "nockpt").mkdir()
    (tmp / "nockpt" / "config.json").write_text(json.dumps({"workers": 4}))
    done = tmp / "done"
    argv = ["train", *BASE, "--checkpoint-every", "2", "--out", str(done)]
    assert main(argv) == 0
    return tmp


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (type, choices) exit 2 as well
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(
    extra: list[str],
    expected: list[str],
    folders: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    out = folders / "never"
    argv = ["train", *BASE, "--out", str(out)]
    extra = [a.replace("{tmp}", str(folders)) if a else a for a in extra]
    if None in extra:  # ("--out", None): leave --out out
        extra = [a for a in extra if a not in ("--out", None)]
        argv = ["train", *BASE]
    elif "--resume" in extra:  # the run folder is the one resumed
        argv = ["train"]
    code, err = run([*argv, *extra], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "Traceback" not in err
    assert not out.exists()
