"""Clean exits and one-line warnings (issue 13, item 4): Ctrl-C during ``train`` / ``compare``
prints one line (step, last checkpoint, the ``--resume`` command) and exits 130, leaving the run
resumable; a closed stdout (``| head -3``) ends quietly; degenerate settings warn once each, and
``uses_topology()``, on which the topology warning and folder names rest, tells the truth."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import SMALL
from peergrad.cli import main
from peergrad.train import checkpoint as ckpt
from peergrad.train.loop import TrainingInterrupted

PEERGRAD = [sys.executable, "-m", "peergrad"]
LONG_RUN = ["--dataset", "digits", "--model", "logreg", "--workers", "4", "--batch-size", "8"]
LONG_RUN += ["--steps", "1000000", "--eval-every", "1000", "--checkpoint-every", "10"]
LONG_RUN += ["--no-progress"]


def test_ctrl_c_during_train_exits_130_with_one_line_and_stays_resumable(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*PEERGRAD, "train", *LONG_RUN, "--out", str(run)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal even when pytest runs as a background job (SIGINT ignored,
        # which a child would inherit)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / ckpt.MANIFEST).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    saved = json.loads((run / ckpt.MANIFEST).read_text())["step"]
    line = lines[0]
    assert line.startswith("peergrad train: interrupted at step ")
    step = int(line.split("interrupted at step ")[1].split()[0])
    assert step >= saved >= 10
    assert f"last checkpoint: step {saved} in {run}" in line
    assert line.endswith(f"continue with: peergrad train --resume {run}")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # The folder is still resumable: a few more steps from the checkpoint.
    resumed = subprocess.run(
        [*PEERGRAD, "train", "--resume", str(run), "--steps", str(saved + 4)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / ckpt.MANIFEST).read_text())["step"] == saved + 4


def test_ctrl_c_without_a_checkpoint_says_it_cannot_be_resumed() -> None:
    exc = TrainingInterrupted(7, 12, None, Path("runs/x"))
    assert isinstance(exc, KeyboardInterrupt)
    assert exc.describe() == (
        "interrupted at step 7 of 12; no checkpoint was saved, so it cannot be resumed "
        "(use --checkpoint-every N)"
    )
    early = TrainingInterrupted(7, 12, None, Path("runs/x"), 10)
    assert early.describe() == (
        "interrupted at step 7 of 12; no checkpoint was saved yet (--checkpoint-every 10), so it "
        "cannot be resumed"
    )


def test_ctrl_c_during_compare_names_the_run_and_the_finished_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of two runs is interrupted at step 6 (after its checkpoint at step 4)."""
    import peergrad.study.compare as compare_module

    real_train = compare_module.train

    def train(config, **kwargs):  # type: ignore[no-untyped-def]
        if config.out.endswith("allreduce"):
            kwargs["stop_after"] = 6
            real_train(config, **kwargs)  # writes the checkpoint of step 4, stops after 6
            raise TrainingInterrupted(6, 12, 4, Path(config.out))
        return real_train(config, **kwargs)

    monkeypatch.setattr(compare_module, "train", train)
    out = tmp_path / "cmp"
    argv = ["compare", *SMALL, "--algorithms", "dpsgd,allreduce", "--checkpoint-every", "4"]
    assert main([*argv, "--out", str(out)]) == 130
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if not re.match(r"peergrad compare: run \d/\d: ", line)]
    assert lines == [
        f"peergrad compare: run 2/2 (allreduce) interrupted at step 6 of 12; last checkpoint: "
        f"step 4 in {out / 'allreduce'}; continue with: peergrad train --resume "
        f"{out / 'allreduce'}; the 1 finished run(s) are in {out / 'compare.json'}; continue "
        f"the comparison with: peergrad compare --resume {out}"
    ]
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["label"] for r in rows] == ["dpsgd"]


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """``peergrad topology ... | head -3``: the reader goes away; no traceback, status 141."""
    proc = subprocess.Popen(
        [*PEERGRAD, "topology", "ring", "--workers", "8"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before peergrad writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


# ---------------------------------------------------------------- one warning line each
def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning:" in line]


def test_torus_with_a_prime_worker_count_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", *SMALL, "--workers", "5", "--topology", "torus", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    lines = warnings_of(capsys.readouterr().err)
    assert lines == [
        "peergrad train: warning: --topology torus with --workers 5: 5 is prime, so the torus "
        "is 1x5, which is a ring; choose a worker count with two factors for a 2-D torus"
    ]
    assert main(["topology", "torus", "--workers", "7"]) == 0
    assert len(warnings_of(capsys.readouterr().err)) == 1
    assert main(["topology", "torus", "--workers", "6"]) == 0
    assert warnings_of(capsys.readouterr().err) == []


def test_a_gossip_algorithm_on_one_worker_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", *SMALL, "--workers", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    lines = warnings_of(capsys.readouterr().err)
    assert len(lines) == 1 and "--workers 1: dpsgd gossips over --topology ring" in lines[0]
    argv = ["train", *SMALL, "--workers", "1", "--algorithm", "allreduce"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert warnings_of(capsys.readouterr().err) == []  # all-reduce of one worker: no warning


def test_a_topology_given_to_an_algorithm_that_ignores_it_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SMALL, "--algorithm", "ef-sgd", "--topology", "torus"]) == 0
    lines = warnings_of(capsys.readouterr().err)
    assert lines == [
        "peergrad train: warning: --topology torus is ignored: ef-sgd averages exactly and uses "
        "no topology"
    ]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ef-sgd-n4-digits-iid-seed0"]
    # the default topology, not given: no warning; a gossip algorithm: no warning
    assert main(["train", *SMALL, "--algorithm", "ef-sgd"]) == 0
    assert main(["train", *SMALL, "--topology", "torus"]) == 0
    assert warnings_of(capsys.readouterr().err) == []
    # compare warns for the runs that ignore it
    out = tmp_path / "cmp"
    argv = ["compare", *SMALL, "--algorithms", "dpsgd,allreduce", "--topology", "complete"]
    assert main([*argv, "--out", str(out)]) == 0
    lines = warnings_of(capsys.readouterr().err)
    assert lines == [
        "peergrad compare: warning: --topology complete is ignored: allreduce averages exactly "
        "and uses no topology"
    ]


# ``uses_topology()`` tells the truth (the warning above and the run folder's name rest on it):
# checked over the whole registry, and local SGD with gossip, by the conformance kit
# (``uses_topology`` in tests/test_conformance.py).


def test_the_first_ctrl_c_is_taken_between_steps_and_a_second_at_once() -> None:
    """A KeyboardInterrupt raised wherever SIGINT lands can fall into a finalizer run by the
    garbage collector, where Python ignores it; so during the steps the first Ctrl-C only sets
    the flag the loop reads between steps, a second one interrupts at once, and the handler is
    restored afterwards."""
    from peergrad.train.guard import sigint_between_steps

    sig = signal
    # as in a terminal, even when pytest runs as a background job (SIGINT ignored)
    outer = sig.signal(sig.SIGINT, sig.default_int_handler)
    before = sig.getsignal(sig.SIGINT)
    with sigint_between_steps() as stop_requested:
        assert not stop_requested()
        os.kill(os.getpid(), sig.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread at the next bytecode
        assert stop_requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig.SIGINT)
            time.sleep(0.05)
    assert sig.getsignal(sig.SIGINT) is before
    sig.signal(sig.SIGINT, outer)
