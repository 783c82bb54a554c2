"""The ``transformer`` preset (issue 28 item 5): a small decoder-only language model.

- shapes, no buffers, the parameter count of its documented layout;
- causal: changing a later token leaves every earlier position's logits bit for bit unchanged;
- ``scaled_dot_product_attention`` (torch's fused kernel, the default; its math backend) and
  the explicit masked softmax compute the same function (float64, forward and gradients), and
  all work under ``vmap(grad)`` with dropout, drawing every worker's own masks reproducibly;
  the math backend is batched by vmap, the fused kernel run per worker (torch's warning);
- the vmapped per-worker gradients of ``WorkerModel`` equal a loop over module copies (each
  worker its own parameters and batch: W = I, nothing mixes the workers), float64, rtol = 0;
- bad sizes are refused in one line naming the option and its range.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from peergrad.models import ATTENTIONS, MODELS, TransformerLM, build_model, token_cross_entropy
from peergrad.train.params import WorkerModel

V = 256
SMALL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "context": 16}


def small(attention: str = "sdpa", seed: int = 0, **kw: object) -> TransformerLM:
    torch.manual_seed(seed)
    model = build_model("transformer", (12,), V, **{**SMALL, "attention": attention, **kw})
    assert isinstance(model, TransformerLM)
    return model.double()


def tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def quiet(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` without torch's one-time "performance drop" note about SDPA under vmap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        return fn()


def test_registered_shapes_no_buffers_and_parameter_count() -> None:
    assert "transformer" in MODELS
    model = build_model("transformer", (64,), V)  # the defaults: d 64, 2 layers, 4 heads
    assert list(model.buffers()) == []
    out = model(tokens(3, 64))
    assert out.shape == (3, 64, V) and out.dtype == torch.float32
    d, layers, ctx, hidden = 64, 2, 64, 256
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    expected = V * d + ctx * d + layers * block + 2 * d + d * V
    assert sum(p.numel() for p in model.parameters()) == expected == 136_960
    tied = build_model("transformer", (64,), V, tie_weights=True)
    assert tied.head.weight is tied.tok.weight  # type: ignore[union-attr]
    assert sum(p.numel() for p in tied.parameters()) == expected - d * V


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_later_token_never_changes_earlier_logits(attention: str) -> None:
    model = small(attention).eval()
    x = tokens(2, 12)
    for t in (0, 5, 11):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        a, b = model(x), model(changed)
        assert torch.equal(a[:, :t], b[:, :t]), f"position < {t} saw token {t}"
        assert not torch.equal(a[:, t], b[:, t])  # the changed position itself does see it


@pytest.mark.parametrize("other", ["sdpa-math", "explicit"])
def test_the_attention_forms_compute_the_same_function(other: str) -> None:
    sdpa, explicit = small("sdpa"), small(other)
    explicit.load_state_dict(sdpa.state_dict())
    x, y = tokens(4, 12, seed=1), tokens(4, 12, seed=2)
    torch.testing.assert_close(explicit(x), sdpa(x), rtol=0, atol=1e-12)
    for m in (sdpa, explicit):
        token_cross_entropy(m(x), y).backward()
    for (name, p), q in zip(sdpa.named_parameters(), explicit.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-12, msg=name)


def test_sdpa_math_under_vmap_is_batched_without_the_per_worker_fallback() -> None:
    """SDPA's math backend is batched by vmap: no "performance drop" warning; torch's fused
    kernel (the default ``sdpa`` on the CPU) has no batching rule and is run per worker."""
    for attention, warns in (("sdpa-math", False), ("sdpa", True)):
        model = WorkerModel(small(attention), token_cross_entropy, "perplexity")
        x = model.x0().expand(2, -1).clone()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.grad(x, {}, tokens(2, 3, 12), tokens(2, 3, 12, seed=1))
        drop = [w for w in caught if "performance drop" in str(w.message)]
        assert bool(drop) is warns, attention


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_vmap_grad_with_dropout_draws_each_workers_own_masks(attention: str) -> None:
    model = small(attention, dropout=0.2).train()
    params = {k: p.detach().expand(3, *p.shape).clone() for k, p in model.named_parameters()}
    x, y = tokens(4, 12, seed=3), tokens(4, 12, seed=4)

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_cross_entropy(functional_call(model, p, (x,)), y)

    def grads() -> dict[str, torch.Tensor]:
        torch.manual_seed(7)
        return quiet(lambda: vmap(grad(loss), randomness="different")(params))

    a, b = grads(), grads()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # reproducible from the seed
    head = a["head.weight"]
    assert not torch.equal(head[0], head[1])  # same parameters, same data: other masks


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_vmapped_worker_grads_equal_a_loop_over_module_copies(attention: str) -> None:
    """n = 3 workers with their own parameters and batches (W = I: nothing mixes them)."""
    module = small(attention)
    model = WorkerModel(module, token_cross_entropy, "perplexity")
    copies = [small(attention, seed=s) for s in range(3)]
    x = torch.stack([model.layout.flatten(c) for c in copies])
    xb, yb = tokens(3, 5, 12, seed=5), tokens(3, 5, 12, seed=6)
    g, losses = quiet(lambda: model.grad(x, {}, xb, yb))
    for i, c in enumerate(copies):
        c.zero_grad()
        loss = token_cross_entropy(c(xb[i]), yb[i])
        loss.backward()
        expected = torch.cat([p.grad.reshape(-1) for p in c.parameters()])  # type: ignore[union-attr]
        torch.testing.assert_close(g[i], expected, rtol=0, atol=1e-13)
        torch.testing.assert_close(losses[i], loss.detach(), rtol=0, atol=1e-13)


def test_token_cross_entropy_is_the_mean_over_all_tokens() -> None:
    logits = torch.randn(3, 7, V, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = tokens(3, 7)
    expected = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    torch.testing.assert_close(token_cross_entropy(logits, y), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((12,), {"d_model": 30, "n_heads": 4}, "d_model 30 must be divisible by n_heads 4"),
        (
            (128,),
            {},
            "seq_len 128 is longer than the model's context 64: seq_len must be in [1, 64] "
            "(or raise --model-set context)",
        ),
        ((12,), {"n_layers": 0}, "n_layers must be an integer >= 1, got 0"),
        ((12,), {"n_heads": 2.5}, "n_heads must be an integer >= 1, got 2.5"),
        ((12,), {"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        (
            (12,),
            {"attention": "flash"},
            "attention must be one of sdpa, sdpa-math, explicit, got 'flash'",
        ),
        ((1, 8, 8), {}, "transformer needs token windows [L]"),
    ],
)
def test_bad_sizes_are_refused_in_one_line(
    shape: tuple[int, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        build_model("transformer", shape, V, **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
