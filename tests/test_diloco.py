"""DiLoCo / Streaming DiLoCo (issue 28), float64: the outer step is torch's Nesterov SGD bit for
bit, the reductions to local-sgd and to K-step averaging, streaming fragments with overlap and
blending against a literal reference, compressed outer steps with error feedback, bytes, resume
with a fragment in flight, the fragment rule and bad input.

Problem: the heterogeneous quadratics of ``tests/test_local_sgd.py`` (4 workers, D = 6), every
worker starting from the same x (as the engines start them); the 6 coordinates stand for three
parameter tensors of 2, 1 and 3 entries (``SEGMENTS``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from peergrad.algorithms import DiLoCo, LocalSGD, bind_run, make_algorithm
from peergrad.algorithms.diloco import DiLoCoState, fragment_groups
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.base import allgather_bytes, allreduce_bytes
from peergrad.comm.compressed import shard_width
from peergrad.train.checkpoint import restore_into, to_plain
from test_local_sgd import comm_for, grad, x0

N, D = 4, 6
SEGMENTS = (2, 1, 3)
ATOL = 1e-12


def diloco(**options: Any) -> DiLoCo:
    """DiLoCo bound to the test's three tensors, with a short period and a larger inner lr."""
    return bind_run(DiLoCo(**{"period": 4, "lr": 0.05, **options}), segments=SEGMENTS)  # type: ignore[return-value]


def run(
    alg: Any,
    steps: int,
    *,
    comm: SimulatedCommunicator | None = None,
    x: Tensor | None = None,
    state: Any = None,
    first: int = 1,
    after: Callable[[int, Tensor, Any], None] | None = None,
) -> tuple[Tensor, Any, SimulatedCommunicator]:
    """Iterations ``first .. first + steps - 1``; ``after(t, x, state)`` after each."""
    comm = comm or comm_for()
    x = x0() if x is None else x
    state = alg.init(x, comm) if state is None else state
    for t in range(first, first + steps):
        state = alg.step(x, grad(x), state, comm)
        if after is not None:
            after(t, x, state)
    return x, state, comm


# ------------------------------------------------------------------ a literal reference
def reference(
    alg: DiLoCo, steps: int, *, foreach: bool, compress: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """Streaming DiLoCo written out from the docstring: the same inner steps (the algorithm's
    own local update on a state of its own), one ``torch.nn.Parameter`` per fragment holding
    the outer parameters and ONE ``torch.optim.SGD`` over them, stepped with only the applied
    fragment's ``.grad`` set; fragment p posts at t with (t - o_p) % H == 0, o_p = ((p + 1) H
    // P) % H, its mean pseudo-gradient is applied tau steps later, then blended.
    ``compress``: top-k with error feedback, written out (c = C(delta + e), e = delta + e - c)."""
    comm = comm_for()
    y = x0()
    inner = alg.init(y, comm)
    bounds = alg.fragment_bounds(D)
    H, P, tau, alpha = alg.period, alg.fragments, alg.overlap_steps, alg.blend
    outer = [torch.nn.Parameter(y[0, a:b].clone()) for a, b in bounds]
    opt = torch.optim.SGD(
        outer,
        lr=alg.block_lr,
        momentum=alg.resolved_block_momentum(N),
        nesterov=alg.block_nesterov,
        foreach=foreach,
    )
    error = torch.zeros_like(y)
    due: dict[int, list[tuple[int, Tensor]]] = {}

    def apply(t: int) -> None:
        for p, mean in due.pop(t, []):
            for q in outer:
                q.grad = None
            outer[p].grad = mean
            opt.step()
            a, b = bounds[p]
            y[:, a:b].mul_(alpha).add_(outer[p].detach(), alpha=1.0 - alpha)

    for t in range(1, steps + 1):
        inner.moment_steps = alg._local_step(y, grad(y), inner, comm)
        apply(t)
        for p in range(P):
            if (t - ((p + 1) * H // P) % H) % H == 0:
                a, b = bounds[p]
                delta = outer[p].detach() - y[:, a:b]
                if compress is not None:
                    delta = delta + error[:, a:b]
                    sent = compress(delta)
                    error[:, a:b] = delta - sent
                    delta = sent
                due.setdefault(t + tau, []).append((p, delta.mean(0, keepdim=True)[0].clone()))
        apply(t)  # tau = 0: applied right after the post
    return y


STREAMING = [
    {},
    {"block_nesterov": False},
    {"fragments": 2, "overlap_steps": 2, "blend": 0.5},
    {"fragments": 3, "overlap_steps": 1},
    {"fragments": 3, "period": 2, "blend": 0.25},
]


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    "options", STREAMING, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults"
)
def test_outer_step_is_torch_nesterov_sgd_bit_for_bit(options: dict, foreach: bool) -> None:
    """DiLoCo's defaults (inner AdamW, outer lr 0.7, Nesterov momentum 0.9) and the streaming
    forms: every outer step is ``torch.optim.SGD(lr=0.7, momentum=0.9, nesterov=True)`` applied
    to the averaged pseudo-gradient as its gradient, bit for bit (``torch.equal``) over 6
    periods, foreach on and off; the fragments follow the documented schedule."""
    alg = diloco(**options)
    assert (alg.block_lr, alg.block_momentum, alg.nesterov_style) == (0.7, 0.9, "torch")
    x, _, _ = run(alg, 6 * alg.period)
    want = reference(alg, 6 * alg.period, foreach=foreach)
    assert torch.equal(x, want), (x - want).abs().max()
    assert not torch.equal(x, x0())


def test_defaults_are_dilocos() -> None:
    alg = make_algorithm("diloco")
    assert isinstance(alg, DiLoCo) and alg.name == "diloco"
    assert (alg.local_update, alg.momentum, alg.b2, alg.weight_decay, alg.lr) == (
        "adamw",
        0.9,
        0.95,
        0.1,
        1e-3,
    )
    assert (alg.period, alg.block_lr, alg.block_momentum, alg.block_nesterov) == (
        50,
        0.7,
        0.9,
        True,
    )
    assert (alg.fragments, alg.overlap_steps, alg.blend, alg.outer_compressor) == (
        1,
        0,
        0.0,
        "none",
    )
    assert (alg.local_state, alg.warmup_steps, alg.gossip) == ("keep", 0, False)
    assert alg.coordinatewise and not alg.uses_topology()
    assert not diloco(fragments=2).coordinatewise and not diloco(overlap_steps=1).coordinatewise


# ------------------------------------------------------------------ reductions
def test_one_fragment_no_overlap_is_local_sgd_with_torch_block_nesterov() -> None:
    """P = 1, tau = 0, alpha = 0, no compression is local-sgd with the same local update and
    torch-style block Nesterov, local_state keep: equal to 1e-12 (not bit for bit: local-sgd
    forms anchor - mean_i x_i, DiLoCo mean_i (anchor - x_i)), with the same bytes."""
    K = 4
    alg = diloco(period=K)
    local = LocalSGD(
        lr=0.05,
        momentum=0.9,
        b2=0.95,
        weight_decay=0.1,
        period=K,
        local_update="adamw",
        block_momentum=0.9,
        block_lr=0.7,
        block_nesterov=True,
        nesterov_style="torch",
        local_state="keep",
    )
    x, _, comm = run(alg, 8 * K)
    y, _, comm_l = run(local, 8 * K)
    torch.testing.assert_close(x, y, rtol=0, atol=ATOL)
    assert torch.equal(comm.bytes_sent, comm_l.bytes_sent) and comm.rounds == comm_l.rounds


def test_no_outer_momentum_and_unit_outer_lr_is_k_step_averaging() -> None:
    """block_momentum = 0, block_lr = 1: x <- anchor - mean_i (anchor - x_i) = mean_i x_i, plain
    K-step averaging of the inner AdamW models (1e-12, rounding)."""
    K = 3
    alg = diloco(period=K, block_momentum=0.0, block_lr=1.0, block_nesterov=False)
    inner = LocalSGD(
        lr=0.05, momentum=0.9, b2=0.95, weight_decay=0.1, local_update="adamw", local_state="keep"
    )
    x, _, _ = run(alg, 6 * K)
    y = x0()
    state = inner.init(y, comm_for())
    for t in range(1, 6 * K + 1):
        state.moment_steps = inner._local_step(y, grad(y), state, comm_for())
        if t % K == 0:
            y.copy_(y.mean(0, keepdim=True).expand_as(y))
    torch.testing.assert_close(x, y, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "options",
    [{}, {"fragments": 2, "overlap_steps": 3, "blend": 0.5}, {"outer_exchange": "allgather"}],
    ids=["plain", "streaming", "allgather"],
)
def test_identity_outer_compressor_equals_none_bit_for_bit(options: dict) -> None:
    """The identity compressor carries the pseudo-gradient exactly: the same iterates as
    outer_compressor none bit for bit; with the all-reduce exchange also the same bytes."""
    x, _, comm = run(diloco(outer_compressor="identity", **options), 20)
    plain = {k: v for k, v in options.items() if k != "outer_exchange"}
    y, _, comm_n = run(diloco(**plain), 20)
    assert torch.equal(x, y)
    if "outer_exchange" not in options:
        assert torch.equal(comm.bytes_sent, comm_n.bytes_sent)


# ------------------------------------------------------------------ compression
def topk_rows(v: Tensor, k: int) -> Tensor:
    """Top-k by magnitude in every row, written out."""
    idx = v.abs().topk(k, dim=1).indices
    return torch.zeros_like(v).scatter_(1, idx, v.gather(1, idx))


@pytest.mark.parametrize("fragments", [1, 3])
def test_topk_with_error_feedback_matches_the_written_out_recipe(fragments: int) -> None:
    """SparseLoCo-style top-k + error feedback on the pseudo-gradient (c = topk(delta + e),
    e <- delta + e - c, all-gather of the packed messages), tau = 1: the reference written out
    with torch.topk (1e-12: the all-gather decodes and averages the n dense messages)."""
    ratio = 0.5
    alg = diloco(
        outer_compressor="topk",
        outer_ratio=ratio,
        outer_error_feedback=True,
        fragments=fragments,
        overlap_steps=1,
    )
    x, state, _ = run(alg, 20)
    want = reference(
        alg,
        20,
        foreach=False,
        compress=lambda v: topk_rows(v, math.ceil(ratio * v.shape[1])),
    )
    torch.testing.assert_close(x, want, rtol=0, atol=ATOL)
    assert state.error is not None and float(state.error.abs().max()) > 0


def sync_bytes(alg: DiLoCo, steps: int, per_fragment: Callable[[int], float]) -> float:
    """Bytes per worker in ``steps`` iterations: ``per_fragment(D_p)`` per post of fragment p."""
    bounds = alg.fragment_bounds(D)
    return sum(
        per_fragment(bounds[p][1] - bounds[p][0])
        for t in range(1, steps + 1)
        for p in alg.posting(t)
    )


@pytest.mark.parametrize(
    ("options", "per_fragment"),
    [
        ({}, lambda d: allreduce_bytes(d * 8, N)),
        ({"fragments": 3, "overlap_steps": 2}, lambda d: allreduce_bytes(d * 8, N)),
        (
            {"fragments": 2, "outer_compressor": "topk", "outer_ratio": 0.5},
            lambda d: allgather_bytes(math.ceil(0.5 * d) * (8 + 4), N),
        ),
        (
            {"outer_compressor": "randomk", "outer_ratio": 0.5},
            lambda d: allreduce_bytes(math.ceil(0.5 * d) * 8, N),
        ),
        (
            {"outer_compressor": "randomk", "outer_ratio": 0.5, "outer_exchange": "allgather"},
            lambda d: allgather_bytes(math.ceil(0.5 * d) * 8 + 8, N),
        ),
        (
            {"fragments": 3, "outer_compressor": "qsgd", "outer_levels": 3},
            lambda d: allgather_bytes(8 + math.ceil(d * 3 / 8), N),
        ),
        # int8 / int4: one byte (a nibble) per value and a float32 scale per chunk of 64
        (
            {"fragments": 2, "outer_compressor": "int8", "overlap_steps": 1},
            lambda d: allgather_bytes(d + 4 * math.ceil(d / 64), N),
        ),
        # reduce-scatter: all-to-all of n shards, then all-gather of the n averaged shards, each
        # shard S = 64 values wide here (chunk-aligned), 2 (n - 1) nbytes(S)
        (
            {"outer_compressor": "int4", "outer_exchange": "reduce-scatter"},
            lambda d: 2 * (N - 1) * (math.ceil(64 / 2) + 4),
        ),
        (
            {"outer_compressor": "randomk", "outer_ratio": 0.5, "outer_exchange": "reduce-scatter"},
            lambda d: 2 * (N - 1) * (math.ceil(0.5 * shard_width(d, N)) * 8 + 8),
        ),
    ],
    ids=[
        "allreduce",
        "streaming",
        "topk",
        "randomk",
        "randomk-allgather",
        "qsgd",
        "int8",
        "int4-reduce-scatter",
        "randomk-reduce-scatter",
    ],
)
def test_bytes_per_sync_follow_the_formulas(options: dict, per_fragment: Any) -> None:
    """bytes_sent after every iteration equals the sum over the posts so far of the exchange's
    formula on the fragment's numel: nothing on inner steps."""
    alg = diloco(**options)
    comm = comm_for()
    seen: list[float] = []
    run(alg, 13, comm=comm, after=lambda t, x, s: seen.append(float(comm.bytes_sent[0])))
    want = [sync_bytes(alg, t, per_fragment) for t in range(1, 14)]
    assert seen == pytest.approx(want, rel=0, abs=1e-9)
    assert torch.equal(comm.bytes_sent, torch.full((N,), want[-1], dtype=torch.float64))


# ------------------------------------------------------------------ posted means and resume
class PostedComm(SimulatedCommunicator):
    """A simulated communicator whose ``mean_start`` really defers: the average lands in
    ``out`` only at ``wait_for``/``synchronize`` (``out`` holds NaN until then), as an
    all-reduce still on the wire would leave it; it records the posts and waits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.posted: dict[tuple[int, tuple[int, ...]], tuple[Tensor, Tensor]] = {}
        self.log: list[str] = []

    def mean_start(self, x: Tensor, *, out: Tensor, **kw: Any) -> None:
        value = self.mean(x, **kw).clone()  # charged at the post
        out.fill_(float("nan"))
        self.posted[(out.data_ptr(), tuple(out.shape))] = (out, value)
        self.log.append("post")

    def wait_for(self, out: Tensor) -> Tensor:
        self.log.append("wait")
        key = (out.data_ptr(), tuple(out.shape))
        if key in self.posted:  # nothing in flight (a resumed run): out holds the result
            target, value = self.posted.pop(key)
            target.copy_(value)
        return out

    def synchronize(self) -> None:
        for key in list(self.posted):
            target, value = self.posted.pop(key)
            target.copy_(value)


def posted_comm() -> PostedComm:
    from peergrad.topology import make_topology

    return PostedComm(make_topology("ring", N))


def test_posted_means_are_waited_for_before_they_are_applied() -> None:
    """With a communicator that really defers (NaN until waited for), tau > 0 posts with
    mean_start and waits with wait_for exactly tau steps later: same iterates and bytes as a
    communicator that averages at the post."""
    alg = diloco(fragments=2, overlap_steps=2, blend=0.5)
    comm = posted_comm()
    x, _, comm = run(alg, 16, comm=comm)
    y, _, plain = run(alg, 16)
    assert torch.equal(x, y) and torch.equal(comm.bytes_sent, plain.bytes_sent)
    assert comm.log.count("post") == sum(len(alg.posting(t)) for t in range(1, 17))
    assert comm.log.count("wait") == sum(len(alg.posting(t - 2)) for t in range(1, 17))


@pytest.mark.parametrize(
    "options",
    [
        {"fragments": 2, "overlap_steps": 2, "blend": 0.5},
        {"fragments": 3, "overlap_steps": 3, "outer_compressor": "randomk", "outer_ratio": 0.5},
        {"overlap_steps": 1, "outer_compressor": "topk", "outer_error_feedback": True},
    ],
    ids=["streaming", "randomk", "topk-ef"],
)
def test_resume_with_a_fragment_in_flight_is_exact(options: dict) -> None:
    """A checkpoint taken between a post and its application (``comm.synchronize()``, then the
    state through to_plain/torch.save/restore_into a fresh init state, a fresh communicator):
    the resumed run equals the uninterrupted one bit for bit."""
    alg = diloco(**options)
    full, full_state, full_comm = run(alg, 20, comm=posted_comm())
    full_comm.synchronize()
    k = next(t for t in range(2, 20) if alg.posting(t) and alg.overlap_steps > 0)
    comm = posted_comm()
    x, state, _ = run(alg, k, comm=comm)
    # posted at k, applied at k + tau: in flight (a compressed exchange ran at the post)
    assert bool(comm.posted) == (alg.outer_compressor == "none")
    comm.synchronize()
    saved = torch.load(_roundtrip({"x": x, "state": to_plain(state)}), weights_only=True)
    comm2 = posted_comm()
    x2 = saved["x"]
    state2 = restore_into(alg.init(x2, comm2), saved["state"])
    x2, state2, _ = run(alg, 20 - k, comm=comm2, x=x2, state=state2, first=k + 1)
    comm2.synchronize()
    assert torch.equal(x2, full)
    for f in dataclasses.fields(DiLoCoState):
        a, b = getattr(state2, f.name), getattr(full_state, f.name)
        assert torch.equal(a, b) if isinstance(a, Tensor) else a == b, f.name


def _roundtrip(payload: Any) -> Any:
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    return buf


# ------------------------------------------------------------------ fragments
def test_fragment_groups_minimise_the_largest_fragment() -> None:
    """Against brute force on every contiguous split: the chosen groups are contiguous,
    non-empty, cover every tensor, and their largest numel is the smallest possible."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        S = int(torch.randint(1, 8, (1,), generator=gen))
        sizes = [int(v) for v in torch.randint(1, 50, (S,), generator=gen)]
        for P in range(1, S + 1):
            groups = fragment_groups(sizes, P)
            assert [a for a, _ in groups] == [0, *[b for _, b in groups[:-1]]]
            assert groups[-1][1] == S and all(b > a for a, b in groups)
            best = min(
                max(sum(sizes[a:b]) for a, b in zip((0, *cuts), (*cuts, S), strict=True))
                for cuts in itertools.combinations(range(1, S), P - 1)
            )
            assert max(sum(sizes[a:b]) for a, b in groups) == best


def test_the_rule_on_a_model_and_the_stagger() -> None:
    # the kit's model (120, 12, 72, 6): two fragments are [120] and [12, 72, 6]
    assert fragment_groups((120, 12, 72, 6), 2) == ((0, 1), (1, 4))
    assert fragment_groups((5,) * 6, 4) == ((0, 2), (2, 4), (4, 5), (5, 6))
    alg = diloco(fragments=2)
    assert alg.fragment_bounds(D) == ((0, 3), (3, 6))
    # period 4, two fragments: fragment 0 at 2, 6, 10, ..., fragment 1 at 4, 8, ...
    assert [alg.posting(t) for t in range(1, 9)] == [[], [0], [], [1], [], [0], [], [1]]
    three = diloco(fragments=3, period=6)
    assert [three.fragment_offset(p) for p in range(3)] == [2, 4, 0]


def test_bind_run_fills_segments_for_fragments_only() -> None:
    assert bind_run(DiLoCo(), segments=[3, 4]).segments is None  # type: ignore[attr-defined]
    bound = bind_run(DiLoCo(fragments=2), segments=[3, 4])
    assert bound.segments == (3, 4)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"^fragments must be an integer in \[1, 2\]"):
        bind_run(DiLoCo(fragments=3), segments=[3, 4])
    with pytest.raises(ValueError, match="fragments=2 needs segments"):
        DiLoCo(fragments=2).init(x0(), comm_for())


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": 0}, "period must be an integer >= 1, got 0"),
        ({"fragments": 0}, "fragments must be an integer >= 1, got 0"),
        (
            {"fragments": 4, "segments": (2, 1, 3)},
            r"fragments must be an integer in \[1, 3\] \(the model's parameter tensors\), got 4",
        ),
        (
            {"period": 4, "overlap_steps": 4},
            r"overlap_steps must be an integer in \[0, period - 1\] = \[0, 3\], got 4",
        ),
        ({"overlap_steps": -1}, r"overlap_steps must be an integer in \[0, period - 1\]"),
        ({"blend": 1.5}, r"blend must be in \[0, 1\], got 1.5"),
        ({"blend": -0.1}, r"blend must be in \[0, 1\], got -0.1"),
        ({"outer_compressor": "zip"}, "outer_compressor must be none or one of identity, topk"),
        ({"outer_compressor": "sign"}, "outer_compressor='sign' cannot carry the pseudo-gradient"),
        ({"outer_compressor": "topk", "outer_ratio": 0.0}, r"outer_ratio must be in \(0, 1\]"),
        ({"outer_compressor": "qsgd", "outer_levels": 0}, "outer_levels must be an integer >= 1"),
        (
            {"outer_compressor": "topk", "outer_exchange": "allreduce"},
            "outer_exchange='allreduce' needs a linear compressor",
        ),
        ({"outer_compressor": "topk", "outer_exchange": "tree"}, "outer_exchange must be one of"),
        (
            {
                "outer_compressor": "randomk",
                "outer_error_feedback": True,
                "outer_exchange": "reduce-scatter",
            },
            "outer_exchange='reduce-scatter' cuts D into n shards itself",
        ),
        ({"outer_error_feedback": True}, "outer_error_feedback=True need an outer_compressor"),
        ({"outer_exchange": "allgather"}, "outer_exchange='allgather' and outer_error_feedback"),
        ({"local_state": "reset"}, "local_state must be 'keep' for diloco"),
        ({"nesterov_style": "bmuf"}, "nesterov_style must be 'torch' for diloco"),
        ({"warmup_steps": 3}, "warmup_steps must be 0 for diloco"),
        ({"gossip": True}, "gossip must be False for diloco"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DiLoCo(**options)
    assert "\n" not in str(info.value)


def test_failures_are_refused_in_one_line() -> None:
    from peergrad.algorithms import check_failures
    from peergrad.system import FailureProfile, OfflineInterval, SystemProfile
    from peergrad.topology import make_topology

    profile = SystemProfile(
        4, failures=FailureProfile(offline=(OfflineInterval(worker=1, start_step=2, stop_step=4),))
    )
    with pytest.raises(ValueError, match="diloco cannot run under failures: the outer param"):
        check_failures(DiLoCo(), make_topology("ring", 4), profile)
