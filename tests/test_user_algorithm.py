"""Bring your own algorithm (issue 27, items 1 and 2): a user's algorithm class, in a module
outside the package, runs from every entry point (``peergrad train --algorithm
module:Class``, ``peergrad compare``, ``peergrad algorithms module:Class``, ``train(config)``
with a class or an instance, both engines, ``--resume``), an installed package registers
algorithms through the entry-point group ``peergrad.algorithms``, and every bad input is
refused before any work with one line naming the class and the rule.
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from peergrad.algorithms import (
    DPSGD,
    ENTRY_POINT_GROUP,
    Algorithm,
    SGDAlgorithm,
    algorithm_spec,
    check_algorithm_class,
    make_algorithm,
    probe_algorithm,
    resolve_algorithm,
)
from peergrad.cli import main
from peergrad.study.entries import build_entries
from peergrad.train import TrainConfig, train

USER_MODULE = '''
"""A user's algorithms, outside the peergrad package."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from peergrad.algorithms import MomentumState, SGDAlgorithm


@dataclasses.dataclass(frozen=True)
class MomentumDSGD(SGDAlgorithm):
    """D-SGD with heavy-ball momentum, adapt then combine: x <- W (x - lr * m).

    Options:

    - ``damping`` in [0, 1]: fraction of the gradient added to the momentum; default 1.
    """

    name: ClassVar[str] = "momentum-dsgd"
    paper: ClassVar[str] = "a user's own method"
    summary: ClassVar[str] = "D-SGD with heavy-ball momentum (user algorithm)"

    momentum: float = 0.5
    damping: float = 1.0

    def step(self, x, g, state, comm, closure=None, pending=None):
        m = state.momentum_buffer
        m.mul_(self.momentum).add_(g, alpha=self.damping)
        local = x - self.lr * m
        comm.mix(local, comm.topology.at(state.step), out=x)
        return MomentumState(step=state.step + 1, momentum_buffer=m)


class NotAnAlgorithm:
    name = "not-an-algorithm"


@dataclasses.dataclass(frozen=True)
class NoName(SGDAlgorithm):
    def step(self, x, g, state, comm, closure=None, pending=None):
        return state


@dataclasses.dataclass(frozen=True)
class Unannotated(SGDAlgorithm):
    name: ClassVar[str] = "unannotated"
    beta = 0.3

    def step(self, x, g, state, comm, closure=None, pending=None):
        return state


@dataclasses.dataclass(frozen=True)
class Collides(SGDAlgorithm):
    name: ClassVar[str] = "dpsgd"

    def step(self, x, g, state, comm, closure=None, pending=None):
        return state


@dataclasses.dataclass(frozen=True)
class ChangesShape(SGDAlgorithm):
    name: ClassVar[str] = "changes-shape"

    def step(self, x, g, state, comm, closure=None, pending=None):
        x.data = torch.zeros(x.shape[0], x.shape[1] + 1, dtype=x.dtype)
        return state


@dataclasses.dataclass(frozen=True)
class ChangesDtype(SGDAlgorithm):
    name: ClassVar[str] = "changes-dtype"

    def step(self, x, g, state, comm, closure=None, pending=None):
        x.data = x.data.to(torch.float16)
        return state


@dataclasses.dataclass(frozen=True)
class WrongState(SGDAlgorithm):
    name: ClassVar[str] = "wrong-state"

    def step(self, x, g, state, comm, closure=None, pending=None):
        return {"step": state.step + 1}
'''

PLUGIN_MODULE = '''
import dataclasses
from typing import ClassVar

from peergrad.algorithms import MomentumState, SGDAlgorithm


@dataclasses.dataclass(frozen=True)
class PluginSGD(SGDAlgorithm):
    """Plain local SGD then gossip, from an installed plugin.

    Options:

    - ``scale`` > 0: multiplies the step; default 1.
    """

    name: ClassVar[str] = "plugin-sgd"
    summary: ClassVar[str] = "a plugin's D-SGD"
    scale: float = 1.0

    def step(self, x, g, state, comm, closure=None, pending=None):
        local = x - self.lr * self.scale * g
        comm.mix(local, comm.topology.at(state.step), out=x)
        return MomentumState(step=state.step + 1, momentum_buffer=state.momentum_buffer)


@dataclasses.dataclass(frozen=True)
class Thief(SGDAlgorithm):
    name: ClassVar[str] = "dpsgd"

    def step(self, x, g, state, comm, closure=None, pending=None):
        return state
'''

TASK = [
    "--dataset",
    "synthetic-logistic",
    "--model",
    "logreg",
    "--workers",
    "4",
    "--batch-size",
    "16",
    "--no-progress",
    "--dtype",
    "float64",
]


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``user_algos`` in a folder outside the package, on ``sys.path`` and ``PYTHONPATH``."""
    folder = tmp_path / "userpkg"
    folder.mkdir()
    name = f"user_algos_{abs(hash(str(tmp_path))) % 10**8}"
    (folder / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{path}" if path else str(folder))
    return name


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An "installed" package: a module and a dist-info with entry_points.txt on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "peergrad_plugin_demo.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = site / "peergrad_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: peergrad-plugin-demo\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nplugin-sgd = peergrad_plugin_demo:PluginSGD\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return str(site)


def _cls(module: str, name: str = "MomentumDSGD") -> type[Algorithm]:
    return resolve_algorithm(f"{module}:{name}")


# ------------------------------------------------------------------ the resolver


def test_resolver_accepts_names_specs_classes_and_instances(user_module: str) -> None:
    cls = _cls(user_module)
    assert cls.name == "momentum-dsgd" and issubclass(cls, SGDAlgorithm)
    assert resolve_algorithm("dpsgd") is DPSGD
    assert resolve_algorithm(cls) is cls and resolve_algorithm(cls(lr=0.2)) is cls
    assert algorithm_spec(cls) == f"{user_module}:MomentumDSGD"
    assert algorithm_spec(DPSGD) == "dpsgd" and algorithm_spec(DPSGD()) == "dpsgd"
    alg = make_algorithm(f"{user_module}:MomentumDSGD", damping="0.25")
    assert alg.damping == 0.25  # type: ignore[attr-defined]
    inst = make_algorithm(cls(lr=0.3), momentum=0.1)  # an instance's fields are the defaults
    assert (inst.lr, inst.momentum) == (0.3, 0.1)  # type: ignore[attr-defined]
    probe_algorithm(alg)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("NotAnAlgorithm", "is not a subclass of peergrad.algorithms.Algorithm"),
        ("NoName", "has no name"),
        ("Unannotated", "attribute beta = 0.3 has no type annotation"),
        ("Collides", "name 'dpsgd' is the name of the registered algorithm"),
        ("ChangesShape", "changed x from torch.float32 [2, 3] to torch.float32 [2, 4]"),
        ("ChangesDtype", "changed x from torch.float32 [2, 3] to torch.float16"),
        ("WrongState", "returned a dict, not the MomentumState that init returned"),
    ],
)
def test_bad_algorithms_are_refused_in_one_line_before_any_work(
    user_module: str,
    name: str,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    code = main(
        ["train", "--algorithm", f"{user_module}:{name}", "--steps", "2", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("peergrad train: error: ")
    assert says in err and name in err
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module_xyz:Alg", "no module named 'no_such_module_xyz'"),
        ("{mod}:Missing", "has no attribute 'Missing'"),
        ("not-an-algorithm-name", "unknown algorithm 'not-an-algorithm-name'"),
    ],
)
def test_paths_that_do_not_import_are_refused(
    user_module: str,
    spec: str,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--algorithm", spec.format(mod=user_module), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err
    assert not out.exists()


def test_check_algorithm_class_needs_a_frozen_dataclass() -> None:
    class Plain(SGDAlgorithm):  # no decorator of its own: its own fields would be lost
        name = "plain-user"

    with pytest.raises(ValueError, match="not a dataclass"):
        check_algorithm_class(Plain)


# ------------------------------------------------------------------ the CLI, both engines


def test_cli_train_with_set_and_algorithms_page(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--algorithm", f"{user_module}:MomentumDSGD", "--set", "damping=0.5"]
    assert main([*argv, "--steps", "3", "--out", str(out), *TASK]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["algorithm"] == f"{user_module}:MomentumDSGD"
    assert recorded["hyperparameters"]["damping"] == 0.5
    capsys.readouterr()
    assert main(["algorithms", f"{user_module}:MomentumDSGD"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("momentum-dsgd: D-SGD with heavy-ball momentum")
    assert "damping" in page and "fraction of the gradient added to the momentum" in page


def test_train_accepts_a_class_or_an_instance(user_module: str, tmp_path: Path) -> None:
    cls = _cls(user_module)
    common = dict(dataset="synthetic-logistic", model="logreg", workers=4, steps=3, dtype="float64")
    by_spec = train(
        TrainConfig(algorithm=f"{user_module}:MomentumDSGD", options={"damping": 0.5}, **common),
        write=False,
    )
    by_class = train(TrainConfig(algorithm=cls, options={"damping": 0.5}, **common), write=False)
    out = tmp_path / "inst"
    by_instance = train(TrainConfig(algorithm=cls(damping=0.5), out=str(out), **common))
    assert torch.equal(by_spec.x, by_class.x) and torch.equal(by_spec.x, by_instance.x)
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["algorithm"] == f"{user_module}:MomentumDSGD"
    assert recorded["options"]["damping"] == 0.5  # an instance's fields are its options
    assert by_instance.hyperparameters["damping"] == 0.5
    # not the same as dpsgd: the class's step ran
    plain = train(TrainConfig(algorithm="dpsgd", options={"form": "atc"}, **common), write=False)
    assert not torch.equal(plain.x, by_spec.x)


def test_resume_equals_uninterrupted_and_needs_the_class(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{user_module}:MomentumDSGD"
    base = ["train", "--algorithm", spec, "--steps", "6", "--checkpoint-every", "2", *TASK]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*base, "--out", str(full)]) == 0
    cfg = TrainConfig.load(full / "config.json")
    train(dataclasses.replace(cfg, out=str(part)), stop_after=4)  # as a crash after step 4
    assert main(["train", "--resume", str(part)]) == 0
    resumed = json.loads((part / "config.json").read_text())
    assert resumed["algorithm"] == spec
    # the resumed run's last record equals the uninterrupted run's
    last = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()][-1]
    again = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == again["step"] == 6
    assert last["train_loss"] == again["train_loss"]
    assert last["consensus_distance"] == again["consensus_distance"]
    capsys.readouterr()
    # the class is gone: --resume refuses in one line
    data = json.loads((part / "config.json").read_text())
    data["algorithm"] = "gone_module_xyz:MomentumDSGD"
    (part / "config.json").write_text(json.dumps(data))
    assert main(["train", "--resume", str(part)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no module named 'gone_module_xyz'" in err
    # the class changed (other hyper-parameters): refused too
    data["algorithm"] = spec
    data["hyperparameters"]["old_option"] = 1
    (part / "config.json").write_text(json.dumps(data))
    assert main(["train", "--resume", str(part)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "differs from the class the run was made with" in err


def test_distributed_engine_runs_a_user_algorithm(user_module: str, tmp_path: Path) -> None:
    """Two gloo processes under torchrun give the simulated engine's final model."""
    pytest.importorskip("torch.distributed")
    spec = f"{user_module}:MomentumDSGD"
    out = tmp_path / "dist"
    args = ["--algorithm", spec, "--steps", "3", *TASK]
    args[args.index("--workers") + 1] = "2"
    argv = ["-m", "peergrad", "train", "--engine", "distributed", "--out", str(out), *args]
    logs = tmp_path / "logs"
    logs.mkdir()
    codes = wait_all(start_workers(argv, 2, cwd=tmp_path, log_dir=logs), timeout_s=240)
    assert codes == [0, 0], (logs / "rank0.err").read_text()[-3000:]
    sim = tmp_path / "sim"
    assert main(["train", "--out", str(sim), *args]) == 0
    records = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()][-1]
        for d in (out, sim)
    ]
    assert records[0]["step"] == records[1]["step"] == 3
    assert records[0]["train_loss"] == pytest.approx(records[1]["train_loss"], rel=1e-9)


# ------------------------------------------------------------------ compare


def test_compare_with_a_user_algorithm(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--algorithms",
        f"dpsgd,{user_module}:MomentumDSGD",
        "--set-for",
        "momentum-dsgd:damping=0.5",
        "--steps",
        "2",
        "--out",
        str(out),
        *TASK,
    ]
    assert main(argv) == 0
    data = json.loads((out / "compare.json").read_text())
    text = json.dumps(data)
    assert f'"{user_module}:MomentumDSGD"' in text
    assert (out / "momentum-dsgd" / "config.json").is_file() and (out / "dpsgd").is_dir()
    mine = json.loads((out / "momentum-dsgd" / "config.json").read_text())
    assert mine["hyperparameters"]["damping"] == 0.5
    entries = build_entries(["dpsgd", _cls(user_module), _cls(user_module)(lr=0.2)][:2])
    assert [e.label for e in entries] == ["dpsgd", "momentum-dsgd"]
    capsys.readouterr()
    bad = tmp_path / "bad"
    argv = ["compare", "--algorithms", f"dpsgd,{user_module}:NoName", "--out", str(bad), *TASK]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no name" in err and not bad.exists()


# ------------------------------------------------------------------ entry points


def test_entry_point_plugins_are_listed_and_run(
    plugin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cls = resolve_algorithm("plugin-sgd")
    assert cls.__module__ == "peergrad_plugin_demo"
    assert algorithm_spec(cls) == "peergrad_plugin_demo:PluginSGD"
    assert main(["algorithms"]) == 0
    assert "plugin-sgd" in capsys.readouterr().out
    assert main(["algorithms", "plugin-sgd"]) == 0
    assert "multiplies the step" in capsys.readouterr().out
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--algorithm",
                "plugin-sgd",
                "--set",
                "scale=0.5",
                "--steps",
                "2",
                "--out",
                str(out),
                *TASK,
            ]
        )
        == 0
    )


def test_entry_point_that_takes_a_builtin_name_is_refused(plugin: str) -> None:
    info = Path(plugin) / "peergrad_plugin_demo-0.1.dist-info" / "entry_points.txt"
    info.write_text(f"[{ENTRY_POINT_GROUP}]\ndpsgd-thief = peergrad_plugin_demo:Thief\n")
    with pytest.raises(ValueError, match="name 'dpsgd' is the name of the registered algorithm"):
        resolve_algorithm("dpsgd-thief")
    assert resolve_algorithm("dpsgd") is DPSGD  # a plugin never replaces a built-in


def test_distributed_optimizer_accepts_a_class_a_spec_or_an_instance(user_module: str) -> None:
    """``DistributedOptimizer(params, MyClass, comm, **options)`` equals the same run made from
    the ``module:Class`` spec and from an instance (1-worker simulated communicator)."""
    from peergrad.comm import SimulatedCommunicator
    from peergrad.optim import DistributedOptimizer
    from peergrad.topology import make_topology

    cls = _cls(user_module)

    def run(algorithm: object, **options: object) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2, dtype=torch.float64)
        comm = SimulatedCommunicator(make_topology("complete", 1))
        opt = DistributedOptimizer(model.parameters(), algorithm, comm, **options)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(5, 4, generator=gen, dtype=torch.float64)).pow(2).sum().backward()
            opt.step()
        assert type(opt.algorithm) is cls
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    by_class = run(cls, lr=0.05, damping=0.5)
    by_spec = run(f"{user_module}:MomentumDSGD", lr=0.05, damping=0.5)
    by_instance = run(cls(lr=0.05, damping=0.5))
    torch.testing.assert_close(by_class, by_spec, rtol=0, atol=0)
    torch.testing.assert_close(by_class, by_instance, rtol=0, atol=0)
    assert not torch.equal(by_class, run(cls, lr=0.05, damping=1.0))
