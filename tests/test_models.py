"""Tests of peergrad.models: shapes, no buffers, torch.func vectorisation parity, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from peergrad.models import MODELS, NORMS, LeNet5, build_model

# Input shapes of the built-in data sets: mnist/mnist-idx, digits, cifar, mnist1d, synthetic.
IMAGE_SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32)]
VECTOR_SHAPES = [(40,), (20,)]

# (name, kwargs) of every model variant.
VARIANTS = [
    ("logreg", {}),
    ("mlp", {}),
    ("mlp", {"hidden": (16, 8)}),
    ("lenet5", {}),
    *[("resnet20", {"norm": norm}) for norm in NORMS],
]


def variant_id(v: tuple[str, dict[str, object]]) -> str:
    return v[0] + "".join(f"-{k}={val}" for k, val in v[1].items())


def shapes_for(name: str) -> list[tuple[int, ...]]:
    return IMAGE_SHAPES + ([] if name in ("lenet5", "resnet20") else VECTOR_SHAPES)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_output_shapes_and_no_buffers(variant: tuple[str, dict[str, object]]) -> None:
    name, kwargs = variant
    for shape in shapes_for(name):
        torch.manual_seed(0)
        model = build_model(name, shape, 7, **kwargs)
        assert list(model.buffers()) == [], f"{name} {shape} has buffers"
        out = model(torch.randn(3, *shape))
        assert out.shape == (3, 7) and out.dtype == torch.float32


def test_all_models_covered() -> None:
    # the language model (token windows -> [B, L, V] logits) has its own tests in
    # tests/test_transformer.py
    assert {v[0] for v in VARIANTS} | {"transformer"} == set(MODELS)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_vmap_grad_matches_per_model_backward(variant: tuple[str, dict[str, object]]) -> None:
    """Stacked parameters of 3 workers + vmap(grad) == each model's own loss.backward()."""
    name, kwargs = variant
    shape = (40,) if name in ("logreg", "mlp") else (3, 8, 8)
    if name == "lenet5":
        shape = (1, 28, 28)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(name, shape, 5, **kwargs).double())
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(3, 4, *shape, dtype=torch.float64, generator=gen)
    ys = torch.randint(0, 5, (3, 4), generator=gen)
    names = [k for k, _ in models[0].named_parameters()]
    stacked = {
        k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k in names
    }
    base = models[0]

    def loss_fn(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, params, (x,)), y)

    grads = vmap(grad(loss_fn))(stacked, xs, ys)
    for i, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(xs[i]), ys[i]).backward()
        for k, p in model.named_parameters():
            assert p.grad is not None
            torch.testing.assert_close(grads[k][i], p.grad, rtol=0, atol=1e-10)


def test_seeded_init_is_reproducible() -> None:
    torch.manual_seed(3)
    a = build_model("lenet5", (1, 28, 28), 10)
    torch.manual_seed(3)
    b = build_model("lenet5", (1, 28, 28), 10)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lenet5_geometry() -> None:
    for shape, flat in (((1, 28, 28), 400), ((3, 32, 32), 400), ((1, 8, 8), 64)):
        model = build_model("lenet5", shape, 10)
        assert isinstance(model, LeNet5) and model.flat_features == flat
    assert build_model("lenet5", (1, 28, 28), 10).features[0].padding == (2, 2)
    assert build_model("lenet5", (3, 32, 32), 10).features[0].padding == (0, 0)


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_image_models_reject_vector_input(name: str) -> None:
    with pytest.raises(ValueError, match=r"image input \[C, H, W\]"):
        build_model(name, (40,), 10)


def test_resnet20_size_and_batchnorm_semantics() -> None:
    model = build_model("resnet20", (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == 269_722  # 0.27 M as in He et al.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    # norm="batch": each worker normalises with its own batch statistics, also in eval mode.
    bn = build_model("resnet20", (3, 8, 8), 10, norm="batch")
    x = torch.randn(6, 3, 8, 8)
    train_out = bn.train()(x)
    eval_out = bn.eval()(x)
    torch.testing.assert_close(train_out, eval_out)


def test_mlp_hidden_int_equals_tuple() -> None:
    torch.manual_seed(0)
    a = build_model("mlp", (20,), 2, hidden=32)
    torch.manual_seed(0)
    b = build_model("mlp", (20,), 2, hidden=(32,))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    default = build_model("mlp", (20,), 2)
    assert [tuple(p.shape) for p in default.parameters()] == [(128, 20), (128,), (2, 128), (2,)]


def test_build_model_errors() -> None:
    with pytest.raises(ValueError) as info:
        build_model("vgg16", (3, 32, 32), 10)
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="accepted: hidden"):
        build_model("mlp", (20,), 2, width=3)
    with pytest.raises(ValueError, match="accepted: none"):
        build_model("logreg", (20,), 2, hidden=3)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (20,), 2, hidden=(0,))
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet20", (3, 32, 32), 10, norm="layer")
    with pytest.raises(ValueError, match="groups"):
        build_model("resnet20", (3, 32, 32), 10, groups=3)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("logreg", (0, 3), 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("logreg", (3,), 0)
    with pytest.raises(ValueError, match="at least 4x4"):
        build_model("lenet5", (1, 3, 3), 2)
