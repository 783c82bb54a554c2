"""``--model``, ``--dataset`` and ``--loss`` by name: built-ins with their options, user
callables ``package.module:callable``, torchvision/timm, and one clear line for bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from peergrad.data import load_dataset
from peergrad.train import TrainConfig
from peergrad.train.resolve import (
    check_config,
    import_callable,
    mse_loss,
    parse_option_value,
    resolve_dataset,
    resolve_loss,
    resolve_model,
)

USER = "_user_task"  # tests/ is on sys.path (as for _helpers)


def linears(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------------ import_callable
def test_import_callable_finds_a_function_and_a_dotted_attribute() -> None:
    assert import_callable("torch.nn.functional:cross_entropy", flag="--loss") is F.cross_entropy
    assert import_callable("torch:Tensor.add", flag="--loss") is torch.Tensor.add


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_colon_here", ["--model 'no_colon_here': expected package.module:callable"]),
        (":make", ["expected package.module:callable"]),
        ("torch.nn:", ["expected package.module:callable"]),
        ("no_such_pkg_xyz.mod:make", ["--model 'no_such_pkg_xyz.mod:make'", "no module named"]),
        ("torch.no_such_mod:make", ["no module named 'torch.no_such_mod'"]),
        (f"{USER}:no_such_fn", ["has no attribute 'no_such_fn'"]),
        (f"{USER}:NOT_CALLABLE", [f"--model '{USER}:NOT_CALLABLE'", "is a int, not a callable"]),
    ],
)
def test_import_callable_refuses_with_one_line(spec: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        import_callable(spec, flag="--model")
    assert "\n" not in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_a_module_that_fails_to_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_user_mod_a.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "broken_user_mod_b.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ValueError, match="importing 'broken_user_mod_a' failed: RuntimeError: boom"
    ):
        import_callable("broken_user_mod_a:f", flag="--dataset")
    # A missing dependency of an existing module is not "no module named <the module>".
    with pytest.raises(ValueError, match="importing 'broken_user_mod_b' failed: No module named"):
        import_callable("broken_user_mod_b:f", flag="--dataset")


# ------------------------------------------------------------------------------ option values
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128", 128),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("true", True),
        ("False", False),
        ("batch", "batch"),
        ("none", "none"),
        ("256,128", (256, 128)),
        ("64,", (64,)),
        ("a,2", ("a", 2)),
    ],
)
def test_parse_option_value(text: str, value: object) -> None:
    got = parse_option_value(text)
    assert got == value and type(got) is type(value)


# ------------------------------------------------------------------------------ models
def test_builtin_model_options() -> None:
    mlp = resolve_model("mlp", {"hidden": "32,16"}, (1, 8, 8), 10)()
    assert linears(mlp) == [(64, 32), (32, 16), (16, 10)]
    assert linears(resolve_model("mlp", {"hidden": 5}, (4,), 3)()) == [(4, 5), (5, 3)]
    resnet = resolve_model("resnet20", {"norm": "batch"}, (3, 8, 8), 10)()
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    grouped = resolve_model("resnet20", {"groups": "4"}, (3, 8, 8), 10)()
    assert {m.num_groups for m in grouped.modules() if isinstance(m, nn.GroupNorm)} == {4}


def test_builtin_model_factory_is_seeded_by_the_caller() -> None:
    """Resolving (a check build on the meta device) draws no random numbers."""
    torch.manual_seed(3)
    first = resolve_model("mlp", {}, (4,), 3)()
    torch.manual_seed(3)
    factory = resolve_model("mlp", {}, (4,), 3)
    second = factory()
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("spec", "options", "words"),
    [
        ("mlp", {"width": "3"}, ["--model-set width", "model 'mlp'", "accepted: hidden"]),
        ("logreg", {"hidden": "3"}, ["--model-set hidden", "accepted: none"]),
        ("resnet20", {"norm": "layer"}, ["--model resnet20", "norm must be one of"]),
        ("mlp", {"hidden": "0"}, ["--model mlp", "hidden must be a positive int"]),
        ("vit", {}, ["--model 'vit'", "logreg, mlp, lenet5, resnet20", "package.module:callable"]),
        (f"{USER}:make_model", {"depth": "2"}, ["--model-set depth", "accepted: hidden"]),
        (f"{USER}:NOT_CALLABLE", {}, ["not a callable"]),
    ],
)
def test_bad_models_are_refused(spec: str, options: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        resolve_model(spec, options, (3, 8, 8), 10)
    assert "\n" not in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_user_model_gets_options_and_the_data_shape() -> None:
    model = resolve_model(f"{USER}:make_model", {"hidden": "5"}, (2, 3), 4)()
    assert linears(model) == [(6, 5), (5, 4)]
    # An option given explicitly wins over the data's value.
    model = resolve_model(f"{USER}:make_model", {"num_classes": 7}, (2, 3), 4)()
    assert linears(model)[-1] == (16, 7)


def test_user_model_must_return_a_module() -> None:
    factory = resolve_model(f"{USER}:make_not_a_model", {}, (4,), 3)
    with pytest.raises(ValueError, match="returned a str, not a torch.nn.Module"):
        factory()


def test_builtin_model_needs_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match="--model mlp needs the data set's input shape"):
        resolve_model("mlp", {}, (4,), None)


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_missing_package_is_named(package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    spec = f"{package}:resnet18"
    with pytest.raises(ValueError) as info:
        resolve_model(spec, {}, (3, 32, 32), 10)
    assert str(info.value) == (
        f"--model {spec} needs the package {package} (pip install {package})"
    )


# ------------------------------------------------------------------------------ data
def test_builtin_dataset_is_the_in_memory_tensors() -> None:
    train, test, info = resolve_dataset("digits", {}, root=None, download=False, seed=0)
    ds = load_dataset("digits")
    assert torch.equal(train[0], ds.x_train) and torch.equal(train[1], ds.y_train)
    assert torch.equal(test[0], ds.x_test) and torch.equal(test[1], ds.y_test)
    assert info["input_shape"] == (1, 8, 8) and info["num_classes"] == 10


def test_builtin_dataset_takes_no_options() -> None:
    with pytest.raises(ValueError, match="--data-set n: the built-in data set 'digits' takes no"):
        resolve_dataset("digits", {"n": "3"})


def test_user_tensor_data() -> None:
    train, test, info = resolve_dataset(f"{USER}:make_data", {"n": "100", "dim": "5"})
    assert train[0].shape == (75, 5) and test[0].shape == (25, 5)
    assert info["input_shape"] == (5,) and info["num_classes"] == 3
    assert info["name"] == f"{USER}:make_data"


def test_user_map_style_datasets() -> None:
    train, test, info = resolve_dataset(f"{USER}:make_dataset", {"n": "64"})
    assert isinstance(train, torch.utils.data.TensorDataset) and len(train) == 48
    assert info["input_shape"] == (8,) and info["num_classes"] is None


def test_str_annotated_options_stay_text() -> None:
    seen: dict[str, object] = {}

    def make(name: str = "x", size: int = 1) -> tuple:
        seen.update(name=name, size=size)
        x = torch.zeros(4, 2)
        return (x, torch.zeros(4, dtype=torch.long)), None

    import types

    mod = types.ModuleType("user_str_mod_xyz")
    mod.make = make  # type: ignore[attr-defined]
    import sys

    sys.modules["user_str_mod_xyz"] = mod
    try:
        resolve_dataset("user_str_mod_xyz:make", {"name": "123", "size": "7"})
    finally:
        del sys.modules["user_str_mod_xyz"]
    assert seen == {"name": "123", "size": 7}


@pytest.mark.parametrize(
    ("spec", "options", "words"),
    [
        (
            f"{USER}:make_one_split",
            {},
            ["--dataset", "must return (train, test)", "got one pair of tensors"],
        ),
        (f"{USER}:make_not_a_model", {}, ["must return (train, test), got str"]),
        (f"{USER}:make_data", {"size": "3"}, ["--data-set size", "accepted: n, dim, classes"]),
        ("imagenet", {}, ["--dataset 'imagenet'", "mnist, digits", "package.module:callable"]),
        ("nope_pkg_xyz:data", {}, ["--dataset 'nope_pkg_xyz:data'", "no module named"]),
    ],
)
def test_bad_data_is_refused(spec: str, options: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        resolve_dataset(spec, options)
    assert "\n" not in str(info.value)
    for w in words:
        assert w in str(info.value)


# ------------------------------------------------------------------------------ losses
def test_losses() -> None:
    fn, metric = resolve_loss("cross-entropy")
    assert fn is F.cross_entropy and metric == "accuracy"
    fn, metric = resolve_loss("mse")
    out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])
    assert metric is None and fn is mse_loss
    assert fn(out, y).item() == pytest.approx((1 + 4) / 2, abs=0, rel=1e-12)
    fn, metric = resolve_loss(f"{USER}:smooth_loss")
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    want = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert metric is None and torch.equal(fn(logits, labels), want)
    fn, _ = resolve_loss("torch.nn:SmoothL1Loss")  # an nn.Module class is instantiated
    assert isinstance(fn, nn.SmoothL1Loss)


def test_mse_refuses_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="--loss mse: outputs"):
        mse_loss(torch.zeros(4, 3), torch.zeros(4))


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("hinge", ["--loss 'hinge'", "cross-entropy, mse, package.module:callable"]),
        ("torch.nn.functional:no_loss", ["--loss", "has no attribute 'no_loss'"]),
    ],
)
def test_bad_losses_are_refused(spec: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        resolve_loss(spec)
    for w in words:
        assert w in str(info.value)


# ------------------------------------------------------------------------------ check_config
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"buffers": "global"}, ["--buffers must be one of local, average", "'global'"]),
        ({"loader_workers": -1}, ["--loader-workers must be an integer >= 0"]),
        ({"warmup_steps": -2}, ["--warmup-steps must be an integer >= 0"]),
        ({"warmup_steps": 5, "steps": 5}, ["--warmup-steps 5 must be less than the run's 5"]),
        ({"lr_schedule": "cos"}, ["--lr-schedule 'cos'"]),
        ({"loss": "l1"}, ["--loss 'l1'"]),
        ({"model_options": ["hidden=3"]}, ["--model-set: model_options must be a dict"]),
        ({"data_options": {"n": "3"}}, ["--data-set n", "takes no options"]),
        ({"model": "mlp", "model_options": {"x": 1}}, ["--model-set x", "accepted: hidden"]),
        ({"model": f"{USER}:make_model", "model_options": {"x": 1}}, ["--model-set x"]),
        ({"dataset": f"{USER}:make_data", "data_options": {"x": 1}}, ["--data-set x"]),
        ({"dataset": "nope_pkg_xyz:f"}, ["--dataset 'nope_pkg_xyz:f'", "no module named"]),
    ],
)
def test_check_config_refuses_before_any_work(changes: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        check_config(TrainConfig(**changes))
    for w in words:
        assert w in str(info.value)


def test_check_config_accepts_the_new_fields() -> None:
    check_config(
        TrainConfig(
            model=f"{USER}:make_model",
            model_options={"hidden": "8"},
            dataset=f"{USER}:make_data",
            data_options={"n": "64"},
            loss="mse",
            lr_schedule="multistep:3,5,0.5",
            warmup_steps=2,
            steps=10,
            buffers="average",
            loader_workers=2,
        )
    )
