"""The task API: a user's nn.Module (BatchNorm + Dropout), Dataset or tensors, loss and metric
trained through ``peergrad.train.train(config, task)`` on the simulated engine.

Each test proves an equality or an invariant: accuracy reached, resume bit-exact, same seed ->
byte-identical metrics (with Dropout, buffers local and averaged), a Dataset read per step gives
exactly the tensors' run and reads exactly the sampled indices, the built-in names are presets
of the same path, bad tasks are refused with one line before the first step.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from _task_models import BNNet
from peergrad import Task
from peergrad.data import load_dataset, partition
from peergrad.train import TrainConfig, train
from peergrad.train.recorder import train_eval_indices
from peergrad.train.sampler import ShardSampler
from peergrad.train.schedules import LRSchedule
from peergrad.train.task import task_from_config


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits")


def digits_task(ds: Any, **kw: Any) -> Task:
    return Task(
        model=kw.pop("model", BNNet),
        train_data=kw.pop("train_data", (ds.x_train, ds.y_train)),
        test_data=kw.pop("test_data", (ds.x_test, ds.y_test)),
        name="digits-bn",
        **kw,
    )


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "workers": 8,
        "batch_size": 16,
        "steps": 12,
        "eval_every": 4,
        "progress": False,
        "seed": 1,
    }
    base.update(kw)
    return TrainConfig(**base)


def lines_without_wall_time(records: list[dict[str, Any]]) -> list[str]:
    return [json.dumps({k: v for k, v in r.items() if k != "wall_time_s"}) for r in records]


class CountingDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A map-style Dataset over tensors that counts every index read."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self.reads: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        self.reads[int(i)] += 1
        return self.x[i], self.y[i]


def test_a_user_module_with_batchnorm_and_dropout_reaches_90_percent(digits: Any) -> None:
    """8 simulated workers, D-PSGD on a ring: a user's BatchNorm + Dropout MLP learns digits."""
    result = train(config(steps=100, eval_every=100), digits_task(digits), write=False)
    assert result.summary["test_accuracy"] >= 0.90, result.summary
    # BatchNorm running statistics are per worker, updated by each worker's own batches
    mean = result.buffers["body.2.running_mean"]
    assert mean.shape == (8, 32)
    assert not torch.equal(mean[0], mean[1])
    assert torch.equal(result.buffers["body.2.num_batches_tracked"], torch.full((8,), 100))


def test_run_folder_checkpoint_and_resume_are_bit_exact(digits: Any, tmp_path: Path) -> None:
    """Crash after step 8, resume: the same parameters, buffers and metrics.jsonl as one run of
    16 steps; the lr schedule continues exactly (a warm-up and a cosine decay)."""
    schedule = {"lr_schedule": "cosine", "warmup_steps": 3}
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    cfg = config(steps=16, checkpoint_every=4, **schedule)
    full = train(
        config(out=str(full_dir), steps=16, checkpoint_every=4, **schedule), digits_task(digits)
    )
    assert (full_dir / "config.json").is_file() and (full_dir / "summary.json").is_file()
    assert (full_dir / "checkpoint.json").is_file()
    part_cfg = TrainConfig(**{**cfg.to_dict(), "out": str(part_dir)})
    train(part_cfg, digits_task(digits), stop_after=8)
    assert not (part_dir / "summary.json").exists()
    resumed = train(part_cfg, digits_task(digits), resume=True)
    assert torch.equal(resumed.x, full.x)
    assert resumed.buffers.keys() == full.buffers.keys()
    for name, b in full.buffers.items():
        assert torch.equal(resumed.buffers[name], b), name
    strip = lines_without_wall_time
    assert strip(resumed.records) == strip(full.records)
    on_disk = [json.loads(line) for line in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert strip(on_disk) == strip(full.records)
    sched = LRSchedule.parse("cosine", warmup_steps=3, total_steps=16)
    for rec in full.records:
        assert rec["lr"] == pytest.approx(0.1 * sched.factor(max(rec["step"], 1)), rel=1e-12)
    assert len({rec["lr"] for rec in full.records}) == len(full.records)  # it does change


@pytest.mark.parametrize("buffers", ["local", "average"])
def test_same_seed_gives_byte_identical_metrics_with_dropout(digits: Any, buffers: str) -> None:
    """Dropout draws from the run-seeded generator: two runs write the same bytes."""
    a = train(config(buffers=buffers), digits_task(digits), write=False)
    b = train(config(buffers=buffers), digits_task(digits), write=False)
    assert lines_without_wall_time(a.records) == lines_without_wall_time(b.records)
    assert torch.equal(a.x, b.x)
    c = train(config(buffers=buffers, seed=2), digits_task(digits), write=False)
    assert not torch.equal(a.x, c.x)


def test_averaged_buffers_are_equal_across_workers_and_differ_from_local(digits: Any) -> None:
    """buffers="average": after every communicating step the float buffers are the workers'
    mean (all rows equal, and equal to the mean of what the workers' forwards produced);
    "local" keeps them apart; the runs differ."""
    local = train(config(buffers="local"), digits_task(digits), write=False)
    avg = train(config(buffers="average"), digits_task(digits), write=False)
    rm = avg.buffers["body.2.running_mean"]
    assert torch.equal(rm, rm[:1].expand_as(rm))
    assert not torch.equal(
        local.buffers["body.2.running_mean"][0], local.buffers["body.2.running_mean"][1]
    )
    assert lines_without_wall_time(local.records) != lines_without_wall_time(avg.records)
    # one more all-reduce per step: the buffers' averaging is charged
    assert avg.records[-1]["comm_rounds"] == 2 * local.records[-1]["comm_rounds"]


def test_a_dataset_read_per_step_equals_the_tensors_and_reads_only_what_is_sampled(
    digits: Any,
) -> None:
    """The same data as a Dataset and as tensors give byte-identical metrics; every read of the
    Dataset is accounted for: item 0 (checked to be a pair), the first batch of worker 0's shard
    (the model check), the sampled minibatches, and the train-loss subset at every record."""
    cfg = config(steps=12, eval_every=6, partition="iid")
    tensors = train(cfg, digits_task(digits), write=False)
    train_ds = CountingDataset(digits.x_train, digits.y_train)
    test_ds = CountingDataset(digits.x_test, digits.y_test)
    mapped = train(cfg, digits_task(digits, train_data=train_ds, test_data=test_ds), write=False)
    assert lines_without_wall_time(mapped.records) == lines_without_wall_time(tensors.records)
    assert torch.equal(mapped.x, tensors.x)

    n_train = len(digits.y_train)
    shards = partition(torch.zeros(n_train, dtype=torch.int64), 8, "iid", seed=cfg.seed)
    sampler = ShardSampler(shards, cfg.batch_size, cfg.seed, list(range(8)))
    expected: Counter[int] = Counter([0])
    expected.update(shards[0][: cfg.batch_size].tolist())
    for _ in range(cfg.steps):  # type: ignore[arg-type]
        expected.update(sampler.next().reshape(-1).tolist())
    records = len(mapped.records)
    for _ in range(records):
        expected.update(train_eval_indices(n_train).tolist())
    assert train_ds.reads == expected
    assert test_ds.reads == Counter({0: 1 + records}) + Counter(
        {i: records for i in range(1, len(digits.y_test))}
    )


def test_a_dataset_read_per_step_stays_out_of_unsampled_indices() -> None:
    """A training set larger than the train-loss subset: no step reads an index that the
    samplers did not draw (only the train-loss subset is read besides)."""
    g = torch.Generator().manual_seed(0)
    n = 12_000
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    ds = CountingDataset(x, y)
    task = Task(model=BNNet, train_data=ds, test_data=None, name="big")
    cfg = config(steps=3, eval_every=3, workers=2)
    result = train(cfg, task, write=False)
    assert result.summary["test_accuracy"] is None and result.summary["best_test_accuracy"] is None
    shards = partition(torch.zeros(n, dtype=torch.int64), 2, "iid", seed=cfg.seed)
    sampler = ShardSampler(shards, cfg.batch_size, cfg.seed, [0, 1])
    sampled = {i for _ in range(3) for i in sampler.next().reshape(-1).tolist()}
    allowed = sampled | set(train_eval_indices(n).tolist()) | {0} | set(shards[0][:16].tolist())
    assert set(ds.reads) <= allowed
    assert len(ds.reads) < n  # never read whole


def test_loader_workers_read_the_same_batches(digits: Any) -> None:
    """loader_workers=2 (a DataLoader fed by a copy of the run's sampler) gives the run that
    in-process reading gives."""
    data = CountingDataset(digits.x_train, digits.y_train)
    task = digits_task(digits, train_data=data)
    cfg = config(steps=6, eval_every=6, workers=4)
    plain = train(cfg, task, write=False)
    loaded = train(TrainConfig(**{**cfg.to_dict(), "loader_workers": 2}), task, write=False)
    assert lines_without_wall_time(plain.records) == lines_without_wall_time(loaded.records)
    assert torch.equal(plain.x, loaded.x)


def test_builtin_names_are_presets_of_the_task_api() -> None:
    """``train(config)`` and ``train(config, task_from_config(config))`` are the same run."""
    cfg = TrainConfig(
        dataset="digits", model="mlp", workers=4, steps=6, eval_every=3, progress=False
    )
    a = train(cfg, write=False)
    b = train(cfg, task_from_config(cfg), write=False)
    assert lines_without_wall_time(a.records) == lines_without_wall_time(b.records)
    assert torch.equal(a.x, b.x)
    assert all(rec["lr"] == 0.1 for rec in a.records)  # dpsgd's default lr, constant schedule


def test_a_module_instance_is_copied_and_never_changed(digits: Any) -> None:
    torch.manual_seed(0)
    module = BNNet()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = train(config(steps=3, eval_every=3), digits_task(digits, model=module), write=False)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    start = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert not torch.equal(result.x[0], start)  # trained from it


def test_regression_with_mse_has_no_metric() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 5, generator=g)
    y = x @ torch.arange(1.0, 6.0) + 0.5
    task = Task(
        model=lambda: nn.Linear(5, 1),
        train_data=(x, y),
        test_data=(x[:64], y[:64]),
        loss_fn=lambda out, t: ((out.squeeze(-1) - t) ** 2).mean(),
        metric=None,
        name="linear",
    )
    result = train(config(workers=4, steps=40, eval_every=40, lr=0.05), task, write=False)
    first, last = result.records[0], result.records[-1]
    assert last["test_accuracy"] is None and last["worker_test_accuracy"] is None
    assert last["test_loss"] < 0.1 * first["test_loss"]


class NotPairs(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, item: Any) -> None:
        self.item = item

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> Any:
        return self.item


@pytest.mark.parametrize(
    ("item", "said"),
    [
        (torch.zeros(1, 8, 8), "item 0 is a Tensor"),
        ({"x": torch.zeros(64), "y": 1}, "item 0 is a dict"),
        ((torch.zeros(64), 1, 2), "item 0 is a tuple of length 3"),
    ],
)
def test_a_dataset_whose_items_are_not_pairs_is_refused_with_one_line(
    item: Any, said: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    task = Task(model=BNNet, train_data=NotPairs(item), name="bad")
    with pytest.raises(ValueError, match="train_data: items must be .input, target. pairs") as e:
        train(config(out=str(out)), task)
    assert said in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"model": 3}, "model must be an nn.Module"),
        ({"train_data": [1, 2, 3]}, "train_data must be a map-style"),
        ({"train_data": (torch.zeros(3), [1, 2, 3])}, "train_data must be a map-style"),
        ({"test_data": 5}, "test_data must be"),
        ({"loss_fn": "mse"}, "loss_fn must be callable"),
        ({"metric": "f1"}, "metric must be 'accuracy'"),
    ],
)
def test_bad_task_attributes_are_refused_naming_them(kwargs: dict[str, Any], said: str) -> None:
    base: dict[str, Any] = {"model": BNNet, "train_data": (torch.zeros(4, 64), torch.zeros(4))}
    with pytest.raises(TypeError, match=said):
        Task(**{**base, **kwargs})


def test_mismatched_tensors_and_a_wrong_task_type_are_refused(digits: Any) -> None:
    task = digits_task(digits, train_data=(digits.x_train, digits.y_train[:-1]))
    with pytest.raises(ValueError, match="train_data: inputs and targets must have the same"):
        train(config(), task, write=False)
    with pytest.raises(TypeError, match="task must be a peergrad.Task"):
        train(config(), "digits", write=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model: the factory returned a int"):
        train(config(), digits_task(digits, model=lambda: 3), write=False)


def test_distributed_dropout_runs_are_reproducible(tmp_path: Path) -> None:
    """2 gloo processes, a user's BatchNorm + Dropout module given as an import path: the same
    seed gives the same parameters and records (each rank seeds its own generator), and Dropout
    is active (the run without it differs). Parity with the simulated engine is tested without
    Dropout (test_engine_parity.py): vmap draws all workers' masks from one generator."""
    from _distributed import start_workers, wait_all

    here = Path(__file__).parent
    out = tmp_path / "dropout.pt"
    procs = start_workers(
        [str(here / "_task_worker.py"), str(out), str(here)], 2, cwd=tmp_path, log_dir=tmp_path
    )
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp_path / f"rank{r}.err").read_text()[-2000:] for r in range(2))
    assert codes == [0, 0], f"worker exit codes {codes}\n{logs}"
    saved = torch.load(out)
    a, b = saved["runs"]
    assert a.shape[0] == 2 and torch.equal(a, b)
    assert saved["records"][0] == saved["records"][1]
    assert not torch.equal(a, saved["no_dropout"])
    assert not torch.equal(a[0], a[1])  # two workers, two models
