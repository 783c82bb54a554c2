"""The ``pydoc-topics`` text data set and the language-model task (issue 28 item 5).

- the stream is the standard library's topics in sorted-key order, byte-level;
- train / validation / test are the contiguous 90 / 5 / 5 % blocks, cut into non-overlapping
  windows whose targets are the inputs shifted by exactly one byte;
- partitions: ``iid`` shards are disjoint equal random sets, ``contiguous`` shards are
  consecutive ranges of windows (contiguous text);
- bad input (``seq_len`` too long, bad options, a classifier on text, ``--loss mse``) is
  refused in one line naming the option and its range, before any work;
- perplexity is ``exp`` of the mean token cross-entropy, recorded as ``*_perplexity`` (never
  ``accuracy``), and the learning-rate grid keeps the lowest validation perplexity;
- the simulated engine and 2 gloo processes train the same trajectory (float64);
- ``peergrad train --dataset pydoc-topics --model transformer`` runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from _text_cases import CASES, TINY, text_config
from peergrad.cli import main
from peergrad.data import DATASETS, TEXT_DATASETS, load_dataset, partition, text_windows
from peergrad.data.text import pydoc_topics_bytes, split_bounds
from peergrad.models import token_cross_entropy
from peergrad.study.results import select_lr
from peergrad.train import TrainConfig, train
from peergrad.train.names import DATASET_NAMES, PARTITION_NAMES, TEXT_DATASET_NAMES
from peergrad.train.task import build_task, task_from_config
from peergrad.train.validate import validate

HERE = Path(__file__).parent
# torch's one-time note that vmap runs the fused SDPA kernel once per worker (models/transformer)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


@pytest.fixture(scope="module")
def text() -> Any:
    return load_dataset("pydoc-topics", seq_len=64)


# ------------------------------------------------------------------ the data set
def test_the_stream_is_the_sorted_topics_in_utf8_and_names_agree() -> None:
    from pydoc_data.topics import topics

    stream = pydoc_topics_bytes()
    assert stream == "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    assert TEXT_DATASET_NAMES == TEXT_DATASETS and "pydoc-topics" in DATASETS
    assert tuple(DATASETS) == DATASET_NAMES and "contiguous" in PARTITION_NAMES


def test_splits_are_contiguous_blocks_and_windows_shift_by_one(text: Any) -> None:
    total = len(pydoc_topics_bytes())
    a, b = split_bounds(total)
    assert (a, b) == (total * 90 // 100, total * 95 // 100) == text.bounds
    tokens = text.tokens
    assert tokens.dtype == torch.int64 and tokens.shape == (total,)
    assert bytes(tokens.to(torch.uint8).tolist()) == pydoc_topics_bytes()
    L = text.seq_len
    for x, y, block in (
        (text.x_train, text.y_train, tokens[:a]),
        (text.x_val, text.y_val, tokens[a:b]),
        (text.x_test, text.y_test, tokens[b:]),
    ):
        n = (block.numel() - 1) // L
        assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x.reshape(-1), block[: n * L])  # consecutive, non-overlapping
        assert torch.equal(y.reshape(-1), block[1 : n * L + 1])  # shifted by exactly one
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(x[1:, 0], y[:-1, -1])  # a window starts where the last targets end
    assert (text.num_train, text.num_val, text.num_test) == (
        (a - 1) // L,
        (b - a - 1) // L,
        (total - b - 1) // L,
    )


def test_text_windows_of_a_short_sequence() -> None:
    x, y = text_windows(torch.arange(10), 3)
    assert torch.equal(x, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]))
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match=r"^seq_len must be in \[1, 9\] for 10 tokens, got 10$"):
        text_windows(torch.arange(10), 10)


def test_iid_shards_are_disjoint_random_windows_and_contiguous_ones_ranges(text: Any) -> None:
    n, N = 8, text.num_train
    labels = torch.zeros(N, dtype=torch.int64)
    iid = partition(labels, n, "iid", seed=3)
    allidx = torch.cat(iid)
    assert all(s.numel() == N // n for s in iid) and allidx.unique().numel() == n * (N // n)
    assert not torch.equal(allidx.sort().values, allidx)  # random, not in order
    shards = partition(labels, n, "contiguous", seed=3)
    for i, s in enumerate(shards):
        assert torch.equal(s, torch.arange(i * (N // n), (i + 1) * (N // n)))
    # so worker i reads one contiguous stretch of the training text
    part = text.x_train[shards[2]].reshape(-1)
    start = 2 * (N // n) * text.seq_len
    assert torch.equal(part, text.tokens[start : start + part.numel()])


# ------------------------------------------------------------------ bad input
def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"dataset": "pydoc-topics", "model": "transformer", "steps": 2}
    return TrainConfig(**{**base, **kw})


SHORTEST = (len(pydoc_topics_bytes()) * 95 // 100) - (len(pydoc_topics_bytes()) * 90 // 100)


@pytest.mark.parametrize("value", ["99999", "0", "-3", "2.5", str(SHORTEST)])
def test_a_seq_len_longer_than_a_split_is_refused_in_one_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got = float(value) if "." in value else int(value)
    expected = (
        f"peergrad train: error: --data-set seq_len={value}: seq_len must be an integer in "
        f"[1, {SHORTEST - 1}] for pydoc-topics (its shortest split, validation, holds "
        f"{SHORTEST} bytes and a window needs seq_len + 1), got {got}\n"
    )
    code = main(["train", "--dataset", "pydoc-topics", "--model", "transformer", "--data-set",
                 f"seq_len={value}", "--steps", "1", "--out", "never-made"])  # fmt: skip
    assert code == 2 and capsys.readouterr().err == expected
    assert not Path("never-made").exists()


@pytest.mark.parametrize("value", [SHORTEST, 0, 2.5, True])
def test_load_dataset_refuses_a_seq_len_out_of_range(value: Any) -> None:
    message = f"seq_len must be an integer in [1, {SHORTEST - 1}] for pydoc-topics"
    with pytest.raises(ValueError, match=r"^" + message.replace("[", r"\[")):
        load_dataset("pydoc-topics", seq_len=value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data_options": {"window": "8"}}, "--data-set window: the built-in data set "
         "'pydoc-topics' has no such option; accepted: seq_len"),
        ({"model": "mlp"}, "--model mlp: --dataset pydoc-topics is text (int64 windows of token "
         "ids -> next-token logits); use --model transformer or package.module:callable"),
        ({"loss": "mse"}, "--loss mse: a text data set's targets are token ids"),
        ({"model_options": {"d_model": "30"}}, "--model transformer: d_model 30 must be "
         "divisible by n_heads 4"),
        ({"data_options": {"seq_len": "65"}}, "--model transformer: seq_len 65 is longer than "
         "the model's context 64: seq_len must be in [1, 64] (or raise --model-set context)"),
    ],
)  # fmt: skip
def test_bad_text_settings_are_refused_before_any_work(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        from peergrad.train.spelling import cli_spelling

        with cli_spelling():
            validate(_config(**changes))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_label_partition_of_text_names_the_ones_that_work() -> None:
    with pytest.raises(ValueError, match=r"use partition iid or contiguous\)$"):
        train(text_config("allreduce", "simulated", partition="sorted"), write=False)


# ------------------------------------------------------------------ the task
def test_the_preset_is_a_language_model_task_with_its_validation_block(text: Any) -> None:
    config = _config(val_fraction=0.2, workers=2, batch_size=4)
    task = task_from_config(config)
    assert task.metric == "perplexity" and task.metric_mode == "min"
    assert task.metric_name == "perplexity" and task.loss_fn is token_cross_entropy
    built = build_task(task, config, torch.device("cpu"), torch.float32)
    assert built.val is not None and torch.equal(built.val.x, text.x_val)  # type: ignore[union-attr]
    # val_fraction cuts nothing: the task brings its own validation split
    assert torch.equal(built.train.x, text.x_train)  # type: ignore[union-attr]


def test_perplexity_is_exp_of_the_mean_token_cross_entropy(text: Any) -> None:
    result = train(text_config("allreduce", "simulated", steps=2, eval_every=2), write=False)
    first = result.records[0]  # step 0: every worker holds x0, so x̄ = x0
    assert not any("accuracy" in k or k.endswith("_metric") for k in first)
    for split in ("val", "test"):
        assert first[f"{split}_perplexity"] == math.exp(first[f"{split}_loss"])
    torch.manual_seed(1)  # the factory's model at the run's seed: x0
    model = task_from_config(text_config("allreduce", "simulated")).make_module(1).double()
    windows = load_dataset("pydoc-topics", seq_len=16)
    with torch.no_grad():
        ce = token_cross_entropy(model(windows.x_val), windows.y_val)
    assert first["val_loss"] == pytest.approx(float(ce), rel=1e-12, abs=0)
    assert result.summary["best_test_perplexity"] == min(
        r["test_perplexity"] for r in result.records
    )
    assert result.summary["metric_mode"] == "min" and result.summary["metric_name"] == "perplexity"


def test_the_lr_grid_keeps_the_lowest_validation_perplexity() -> None:
    def row(lr: float, ppl: float) -> dict[str, Any]:
        return {"lr": lr, "status": "finished", "final": {"val_perplexity": ppl, "val_loss": 0.0}}

    rows = [row(0.1, 9.0), row(0.01, 4.0), row(0.001, 6.0)]
    chosen, results, field = select_lr([0.1, 0.01, 0.001], rows, "min", "perplexity")
    assert (chosen, field) == (0.01, "val_perplexity")
    assert [r["val_perplexity"]["mean"] for r in results] == [9.0, 4.0, 6.0]


def test_peergrad_compare_selects_on_and_reports_perplexity(tmp_path: Path) -> None:
    """The preset's comparison: a grid of a tiny and a useful lr keeps the one with the lowest
    validation perplexity; tables and compare.json name perplexity, not accuracy."""
    from peergrad.study.compare import CompareEntry, compare

    base = text_config("allreduce", "simulated", val_fraction=0.1, steps=6, eval_every=3)
    with pytest.warns(UserWarning, match="chosen lr 0.5 is the largest value of its grid"):
        result = compare(
            base, [CompareEntry("sgd", "allreduce")], tmp_path / "cmp", 20.0, lr_grid=[1e-4, 0.5]
        )
    [label] = result.labels  # type: ignore[misc]
    assert label["selection_metric"] == "val_perplexity"
    means = {res["lr"]: res["val_perplexity"]["mean"] for res in label["grid"]}
    assert label["chosen_lr"] == min(means, key=means.__getitem__) == 0.5
    assert means[1e-4] > means[0.5]
    assert result.metric_mode == "min" and result.metric_name == "perplexity"
    assert "best_test_perplexity" in label and "test_perplexity" in label["final"]
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "test perplexity (lower is better)" in table and "accuracy" not in table
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["metric_name"] == "perplexity" and saved["metric_mode"] == "min"


# ------------------------------------------------------------------ both engines
@pytest.fixture(scope="module")
def distributed_text(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from _distributed import start_workers, wait_all

    tmp = tmp_path_factory.mktemp("text_parity")
    out = tmp / "results.pt"
    procs = start_workers(
        [str(HERE / "_text_worker.py"), str(out), str(HERE)], 2, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(2))
    assert codes == [0, 0], f"worker exit codes {codes}\n{logs}"
    return torch.load(out)


@pytest.mark.parametrize("case", list(CASES))
def test_simulated_and_two_gloo_processes_train_the_same_trajectory(
    case: str, distributed_text: dict[str, Any]
) -> None:
    sim = train(text_config(case, "simulated"), write=False)
    dist = distributed_text[case]
    assert dist["x"].shape == sim.x.shape and dist["x"].dtype == torch.float64
    rel = float((dist["x"] - sim.x).abs().max() / sim.x.abs().max())
    assert rel <= 1e-10, f"max relative difference {rel:.3g}"
    assert torch.equal(dist["bytes"], sim.comm.bytes_sent)
    for r_sim, r_dist in zip(sim.records, dist["records"], strict=True):
        for key in ("val_perplexity", "test_perplexity", "train_loss"):
            assert r_dist[key] == pytest.approx(r_sim[key], rel=1e-10), key


# ------------------------------------------------------------------ the command
def test_peergrad_train_runs_a_tiny_language_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    sizes = [f"--model-set={k}={v}" for k, v in TINY.items()]
    code = main(
        ["train", "--dataset", "pydoc-topics", "--model", "transformer", "--data-set",
         "seq_len=16", *sizes, "--algorithm", "local-sgd", "--set", "local_update=adam",
         "--momentum", "0.9", "--lr", "3e-3", "--workers", "2", "--batch-size", "8",
         "--steps", "6", "--eval-every", "3", "--partition", "contiguous", "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3, 6]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert all(r["val_perplexity"] == math.exp(r["val_loss"]) for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert "best_test_perplexity" in summary and "best_test_accuracy" not in summary
    assert (out / "loss_accuracy_vs_steps.png").is_file()
