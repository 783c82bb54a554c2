"""The system model (issue 26, core): profiles, the per-worker max-plus clock, and the mixing
matrix of the graph that survives a round's failures."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import peergrad.system.profile as profile_module
from peergrad.comm import NetworkModel, SimulatedCommunicator
from peergrad.comm.simulated import apply_mixing
from peergrad.system import (
    PRESETS,
    ComputeProfile,
    FailureProfile,
    LinkOverride,
    LinkProfile,
    OfflineInterval,
    SystemClock,
    SystemProfile,
    count_step_flops,
    load_profile,
)
from peergrad.topology import (
    Topology,
    erdos_renyi,
    exponential,
    graph_edges,
    one_peer_exponential,
    ring,
    surviving_mixing_matrix,
    surviving_weights,
    torus,
)
from test_boundaries import peergrad_imports

ROOT = Path(__file__).resolve().parent.parent
MS = 1e-3
Tensor = torch.Tensor


def ms(values: list[float]) -> Tensor:
    """Milliseconds to a float64 tensor of seconds."""
    return torch.tensor(values, dtype=torch.float64) * MS


def run_steps(clock: SystemClock, topo: Topology, steps: int, nbytes: float) -> list[Tensor]:
    """``steps`` steps of begin/compute/gossip over the surviving edges (+ an all-reduce every
    4th step); returns the presence mask of every step."""
    seen = []
    for k in range(steps):
        seen.append(clock.begin_step())
        clock.compute()
        src, dst = graph_edges(topo.at(k))
        up = clock.surviving_edges(src, dst)
        clock.gossip(src[up], dst[up], nbytes, pre_gradient=k % 2 == 1)
        if k % 4 == 3:
            clock.all_reduce(nbytes)
    return seen


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "topo",
    [ring(8), one_peer_exponential(8), torus(3, 4), exponential(8)],
    ids=lambda t: t.name,
)
@pytest.mark.parametrize("network", [NetworkModel(), NetworkModel(0.37e-3, 3.3e9 / 8)])
def test_uniform_profile_reproduces_simulated_comm_time_exactly(
    topo: Topology, network: NetworkModel
) -> None:
    """Identical workers, no compute, uniform links: the slowest worker's time equals the
    alpha-beta ``simulated_comm_time_s`` bit for bit after every gossip round, all-reduce and
    all-gather."""
    comm = SimulatedCommunicator(topo, network=network)
    clock = SystemClock(SystemProfile.uniform(topo.n, network))
    sizes = (400_000, 3, 1_234_567, 318_040, 1)
    for k in range(15):
        clock.begin_step()
        clock.compute()
        nbytes = sizes[k % len(sizes)]
        W = topo.at(k)
        src, dst = graph_edges(W)
        comm.account_gossip(W, nbytes)
        clock.gossip(src, dst, nbytes)
        assert clock.simulated_time_s == comm.simulated_comm_time_s
        if k % 3 == 2:
            comm.account_mean(nbytes)
            clock.all_reduce(nbytes)
            assert clock.simulated_time_s == comm.simulated_comm_time_s
        if k % 5 == 4:
            comm.account_all_gather(nbytes // 7)
            clock.all_gather(nbytes // 7)
            assert clock.simulated_time_s == comm.simulated_comm_time_s
    assert comm.simulated_comm_time_s > 0
    assert clock.rounds == comm.rounds


# ---------------------------------------------------------------------------- hand examples
def test_hand_computed_max_plus_on_a_ring_with_a_straggler_and_a_slow_link() -> None:
    """4-worker ring, 10 ms steps, worker 2 at half speed (20 ms), links 1 ms / 1e9 B/s except
    the directed link 1 -> 2 at 1e8 B/s; 1e6-byte messages (1 ms on a fast link, 10 ms on the
    slow one). Senders send in destination order: 0 -> (1, 3), 1 -> (0, 2), 2 -> (1, 3),
    3 -> (0, 2). Three rounds, every number by hand (milliseconds)."""
    profile = SystemProfile(
        4,
        compute=ComputeProfile(step_ms=10.0, speed=(1.0, 1.0, 0.5, 1.0)),
        links=LinkProfile(1e-3, 1e9, overrides=(LinkOverride(1, 2, 1e-3, 1e8),)),
    )
    clock = SystemClock(profile)
    src, dst = graph_edges(ring(4).at(0))
    assert src.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert dst.tolist() == [1, 3, 0, 2, 1, 3, 0, 2]
    # Delay of each message: latency + serialisation behind the sender's earlier messages.
    d01, d03 = 1 + 1, 1 + (1 + 1)  # 0's second message waits for its first
    d10, d12 = 1 + 1, 1 + (1 + 10)  # 1 -> 2 is the slow link, after 1 -> 0
    d21, d23 = 1 + 1, 1 + (1 + 1)
    d30, d32 = 1 + 1, 1 + (1 + 1)
    longest = [max(d10, d30), max(d01, d21), max(d12, d32), max(d03, d23)]  # into each worker
    step = [10, 10, 20, 10]
    t = [0.0, 0.0, 0.0, 0.0]
    comm, idle = [0.0] * 4, [0.0] * 4
    expected = []
    for _ in range(3):
        c = [t[i] + step[i] for i in range(4)]  # after compute
        t = [
            max(c[0], c[1] + d10, c[3] + d30),
            max(c[1], c[0] + d01, c[2] + d21),
            max(c[2], c[1] + d12, c[3] + d32),
            max(c[3], c[0] + d03, c[2] + d23),
        ]
        for i in range(4):  # of each wait, the longest transfer is communication, the rest idle
            comm[i] += min(t[i] - c[i], longest[i])
            idle[i] += t[i] - c[i] - min(t[i] - c[i], longest[i])
        expected.append(t)
    assert expected == [[12, 22, 22, 23], [35, 44, 44, 45], [57, 66, 66, 67]]
    assert comm == [6, 6, 6, 9] and idle == [21, 30, 0, 28]
    for k in range(3):
        clock.begin_step()
        clock.compute()
        clock.gossip(src, dst, 1e6)
        torch.testing.assert_close(clock.t, ms(expected[k]), rtol=0, atol=1e-12)
    assert clock.simulated_time_s == pytest.approx(67 * MS, rel=0, abs=1e-12)
    torch.testing.assert_close(clock.compute_s, ms([30, 30, 60, 30]), rtol=0, atol=1e-12)
    torch.testing.assert_close(clock.comm_s, ms(comm), rtol=0, atol=1e-12)
    torch.testing.assert_close(clock.idle_s, ms(idle), rtol=0, atol=1e-12)
    total = clock.compute_s + clock.comm_s + clock.idle_s + clock.absent_s
    torch.testing.assert_close(total, clock.t, rtol=0, atol=1e-12)


def test_hand_computed_link_occupancy_and_pre_gradient_overlap() -> None:
    """Links 1 ms / 1e9 B/s. (a) A sender's link stays busy across rounds: worker 0 sends two
    1e7-byte messages (10 ms each) to 1 and 2, then one more to 1: it leaves at 20 ms, not 0.
    (b) Pre-gradient messages leave at the step start and overlap the 10 ms compute."""
    clock = SystemClock(SystemProfile(3, links=LinkProfile(1e-3, 1e9)))
    e = torch.tensor
    clock.gossip(e([0, 0]), e([1, 2]), 1e7)
    torch.testing.assert_close(clock.t, ms([0, 1 + 10, 1 + 20]), rtol=0, atol=1e-12)
    clock.gossip(e([0]), e([1]), 1e7)  # departs when 0's link is free: 20 ms
    torch.testing.assert_close(clock.t, ms([0, 20 + 1 + 10, 21]), rtol=0, atol=1e-12)

    profile = SystemProfile(4, compute=ComputeProfile(step_ms=10.0), links=LinkProfile(1e-3, 1e9))
    clock = SystemClock(profile)
    src, dst = graph_edges(ring(4).at(0))
    clock.begin_step()
    clock.compute()
    clock.gossip(src, dst, 1e6, pre_gradient=True)  # arrives at 2 and 3 ms: hidden by compute
    torch.testing.assert_close(clock.t, ms([10] * 4), rtol=0, atol=1e-12)
    assert float(clock.comm_s.sum()) == 0.0 and float(clock.idle_s.sum()) == 0.0
    # After the gradient: leaves at 10 ms (links free since 2 ms); receivers 0 and 1 get only
    # first messages (10 + 1 + 1), 2 and 3 a sender's second one (10 + 1 + 2).
    clock.gossip(src, dst, 1e6)
    torch.testing.assert_close(clock.t, ms([12, 12, 13, 13]), rtol=0, atol=1e-12)
    clock.begin_step()  # step start 12, 12, 13, 13; links free at 10 + 2 = 12
    clock.compute()  # 22, 22, 23, 23
    # 20 ms messages leave at the step start: first ones arrive 1 + 20 ms later, second ones
    # 1 + 40: receiver 0 gets max(12, 13) + 21 = 34, receiver 2 max(12, 13) + 41 = 54.
    clock.gossip(src, dst, 2e7, pre_gradient=True)
    torch.testing.assert_close(clock.t, ms([34, 34, 54, 54]), rtol=0, atol=1e-12)


def test_absent_workers_and_collectives_on_the_slowest_ring_link() -> None:
    """Worker 1 is away for steps 1..2: it neither computes nor exchanges; the all-reduce is a
    barrier over the three present workers costed on the slowest link of their ring."""
    inter = LinkProfile(
        1e-3, 1e9, groups=((0, 1), (2, 3)), inter_latency_s=5e-3, inter_bandwidth_bytes_per_s=1e8
    )
    profile = SystemProfile(
        4,
        compute=ComputeProfile(step_ms=10.0),
        links=inter,
        failures=FailureProfile(offline=(OfflineInterval(1, 1, 3),)),
    )
    clock = SystemClock(profile)
    present = [clock.begin_step().tolist()]
    clock.compute()
    clock.all_reduce(1e6)
    t_all = 10 * MS + NetworkModel(5e-3, 1e8).allreduce_time_s(1e6, 4)
    assert clock.t.tolist() == [t_all] * 4
    present.append(clock.begin_step().tolist())
    clock.compute()
    src, dst = graph_edges(ring(4).at(0))
    clock.gossip(src, dst, 1e6)  # edges touching worker 1 are ignored
    assert float(clock.t[1]) == t_all and float(clock.compute_s[1]) == 10 * MS  # step 0 only
    before = clock.t.clone()
    clock.all_reduce(1e6)
    barrier = float(before[[0, 2, 3]].max())
    t3 = barrier + NetworkModel(5e-3, 1e8).allreduce_time_s(1e6, 3)
    assert clock.t.tolist() == [t3, t_all, t3, t3]
    present.append(clock.begin_step().tolist())
    present.append(clock.begin_step().tolist())
    away = [True, False, True, True]
    assert present == [[True] * 4, away, away, [True] * 4]
    # Worker 1 was parked at t_all; when it returns its clock joins the earliest present one.
    assert float(clock.absent_s[1]) == pytest.approx(t3 - t_all, rel=0, abs=1e-15)


# ---------------------------------------------------------------------------- randomness
def faulty_profile(n: int, seed: int = 0) -> SystemProfile:
    return SystemProfile(
        n,
        compute=ComputeProfile(
            step_ms=5.0, jitter_sigma=0.3, straggler_prob=0.2, straggler_slowdown=4.0
        ),
        links=LinkProfile(random_latency_s=(1e-4, 1e-2), random_bandwidth_bytes_per_s=(1e7, 1e9)),
        failures=FailureProfile(
            link_drop_prob=0.2,
            leave_prob=0.15,
            mean_downtime_steps=4.0,
            offline=(OfflineInterval(2, 3, 9),),
        ),
        seed=seed,
    )


def test_same_seed_same_clock_and_another_seed_another() -> None:
    topo = torus(3, 4)
    runs = []
    for seed in (7, 7, 8):
        clock = SystemClock(faulty_profile(12, seed))
        presence = run_steps(clock, topo, 25, 2e5)
        runs.append((clock.state_dict(), torch.stack(presence)))
    (a, pa), (b, pb), (c, pc) = runs
    for name in ("t", "compute_s", "comm_s", "idle_s", "absent_s"):
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(pa, pb)
    assert not torch.equal(a["t"], c["t"])
    assert not pa.all()  # churn happened
    total = a["compute_s"] + a["comm_s"] + a["idle_s"] + a["absent_s"]
    torch.testing.assert_close(total, a["t"], rtol=1e-12, atol=0)


def test_resume_in_the_middle_of_a_churn_interval_is_bit_exact() -> None:
    topo = torus(3, 4)
    clock = SystemClock(faulty_profile(12))
    steps = 0
    while True:  # stop where a randomly churned worker has steps of absence left
        run_steps(clock, topo, 1, 2e5)
        steps += 1
        if bool((clock._down > 0).any()):
            break
        assert steps < 200
    buffer = io.BytesIO()
    torch.save(clock.state_dict(), buffer)
    rest = run_steps(clock, topo, 20, 2e5)
    buffer.seek(0)
    resumed = SystemClock(faulty_profile(12))
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    rest2 = run_steps(resumed, topo, 20, 2e5)
    assert torch.equal(torch.stack(rest), torch.stack(rest2))
    a, b = clock.state_dict(), resumed.state_dict()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    with pytest.raises(ValueError, match="another system profile"):
        SystemClock(faulty_profile(12, seed=1)).load_state_dict(a)
    with pytest.raises(ValueError, match="n_workers = 12"):
        SystemClock(faulty_profile(8)).load_state_dict(a)


# ---------------------------------------------------------------------------- failures -> W
@pytest.mark.parametrize(
    "topo", [ring(10), torus(4, 4), erdos_renyi(12, 0.4, seed=3)], ids=lambda t: t.name
)
def test_surviving_mixing_matrix_is_symmetric_doubly_stochastic_and_keeps_the_average(
    topo: Topology,
) -> None:
    n = topo.n
    src, dst = graph_edges(topo.at(0))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    lr = 0.1
    for trial in range(30):
        present = torch.rand(n, generator=gen) >= 0.2 * (trial % 3)
        link_up = torch.rand(src.numel(), generator=gen) >= 0.3
        Wm = surviving_mixing_matrix(n, src, dst, present=present, link_up=link_up)
        W = torch.tensor(Wm.dense)
        assert torch.equal(W, W.T)
        ones = torch.ones(n, dtype=torch.float64)
        torch.testing.assert_close(W.sum(0), ones, rtol=0, atol=1e-15)
        torch.testing.assert_close(W.sum(1), ones, rtol=0, atol=1e-15)
        assert (W >= 0).all()
        absent = (~present).nonzero()[:, 0]
        assert torch.equal(W[absent], torch.eye(n, dtype=torch.float64)[absent])
        # no weight on an edge whose link (either direction) is down
        down = ~link_up
        assert (W[dst[down], src[down]] == 0).all() and (W[src[down], dst[down]] == 0).all()
        # D-PSGD: x <- W x - lr g keeps the average's dynamics exact.
        g = torch.randn(n, 5, generator=gen, dtype=torch.float64)
        new = apply_mixing(Wm, x) - lr * g
        torch.testing.assert_close(new.mean(0), x.mean(0) - lr * g.mean(0), rtol=0, atol=1e-15)
        x = new
    # Nothing fails: the Metropolis–Hastings matrix of the base graph.
    full = surviving_mixing_matrix(n, src, dst)
    if topo.name.startswith(("ring", "torus")):
        base = torch.tensor(topo.at(0).dense)
        torch.testing.assert_close(torch.tensor(full.dense), base, rtol=0, atol=1e-15)


def test_clock_link_drops_feed_the_surviving_weights() -> None:
    """The clock's drops are per undirected pair, so its surviving edges are an undirected graph
    whose weights the topology layer can form; a directed base graph is refused."""
    clock = SystemClock(faulty_profile(16))
    src, dst = graph_edges(torus(4, 4).at(0))
    for _ in range(5):
        clock.begin_step()
        up = clock.surviving_edges(src, dst)
        s, d, w, diag = surviving_weights(16, src[up], dst[up], present=clock.present)
        assert torch.equal(torch.sort(s * 16 + d).values, torch.sort(d * 16 + s).values)
        assert not (~clock.present[s]).any()
    s, d = graph_edges(exponential(8).at(0))
    with pytest.raises(ValueError, match="undirected base graph"):
        surviving_weights(8, s, d)


# ---------------------------------------------------------------------------- bad input
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


BAD_TOML = {
    "unknown top key": ("colour = 'red'\n", r"unknown key 'colour'.*allowed keys: compute, "),
    "unknown nested key": (
        "[compute]\nstep_mss = 3\n",
        r"unknown key 'compute.step_mss'.*allowed keys in \[compute\]: .*step_ms",
    ),
    "zero speed": ("[compute]\nspeed = [1, 0, 1, 1]\n", r"compute.speed\[1\] must be .* > 0"),
    "negative speed": ("[compute]\nspeed = [1, 1, -2, 1]\n", r"compute.speed\[2\] must be"),
    "zero bandwidth": ("[links]\nbandwidth_gbps = 0\n", r"links.bandwidth_gbps must be .* > 0"),
    "negative link bandwidth": (
        "[[links.link]]\nsrc = 0\ndst = 1\nlatency_ms = 1\nbandwidth_gbps = -1\n",
        r"links.link\[0\].bandwidth_gbps must be .* > 0",
    ),
    "probability 1": ("[failures]\nlink_drop_prob = 1.0\n", r"link_drop_prob must be .*\[0, 1\)"),
    "negative probability": ("[failures]\nleave_prob = -0.1\n", r"leave_prob must be .*\[0, 1\)"),
    "straggler probability": (
        "[compute]\nstraggler_prob = 1.5\n",
        r"compute.straggler_prob must be a probability in \[0, 1\)",
    ),
    "other worker count": ("n_workers = 8\n", r"written for n_workers = 8 but the run has 4"),
    "speed for other count": ("[compute]\nspeed = [1, 1, 1]\n", r"another number of workers"),
    "group with unknown worker": (
        "[links]\ngroups = [[0, 1], [2, 9]]\n",
        r"links.groups\[1\] names worker 9, but the workers are 0..3",
    ),
    "overlapping groups": ("[links]\ngroups = [[0, 1, 2], [2, 3]]\n", r"must not overlap"),
    "straggler unknown worker": (
        "[compute]\npersistent_stragglers = [4]\n",
        r"names worker 4, but the workers are 0..3",
    ),
    "offline unknown worker": (
        "[[failures.offline]]\nworker = 7\nstart_step = 0\nstop_step = 3\n",
        r"failures.offline\[0\].worker names worker 7",
    ),
    "bad toml": ("[compute\n", r"cannot read system profile"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOML))
def test_bad_toml_raises_one_clear_line(tmp_path: Path, case: str) -> None:
    text, pattern = BAD_TOML[case]
    with pytest.raises(ValueError, match=pattern) as info:
        load_profile(write(tmp_path, text), 4)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: load_profile("no-such-preset", 4), r"unknown system profile 'no-such-preset'"),
        (lambda: SystemProfile.preset("cloud", 4), r"unknown system preset 'cloud'; presets: "),
        (lambda: load_profile("missing.toml", 4), r"does not exist"),
        (lambda: ComputeProfile(step_ms=-1.0), r"compute.step_ms must be .* >= 0"),
        (lambda: ComputeProfile(speed=(1.0, 0.0)), r"compute.speed\[1\] must be .* > 0"),
        (lambda: LinkProfile(bandwidth_bytes_per_s=0.0), r"links.bandwidth_bytes_per_s .* > 0"),
        (lambda: LinkProfile(latency_s=-1.0), r"links.latency_s must be .* >= 0"),
        (lambda: FailureProfile(link_drop_prob=1.0), r"link_drop_prob must be .*\[0, 1\)"),
        (lambda: FailureProfile(mean_downtime_steps=0.5), r"mean_downtime_steps must be .* >= 1"),
        (
            lambda: SystemProfile(3, links=LinkProfile(groups=((0, 1), (2, 5)))),
            r"names worker 5",
        ),
        (lambda: SystemProfile(3, links=LinkProfile(groups=((0, 1),))), r"leave out worker"),
        (lambda: SystemProfile.preset("two-datacenters", 1), r"needs n_workers >= 2"),
        (
            lambda: SystemClock(SystemProfile.preset("datacenter", 4)),
            r"device_flops but no flops_per_step",
        ),
    ],
)
def test_bad_values_raise_one_clear_line(build, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=pattern) as info:
        build()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- presets, files
@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("n", [2, 16])
def test_presets_load_and_run(name: str, n: int) -> None:
    profile = load_profile(name, n).with_flops_per_step(2e9)
    assert profile.n_workers == n and profile.step_s is not None
    clock = SystemClock(profile)
    run_steps(clock, ring(n), 6, 4e5)
    assert math.isfinite(clock.simulated_time_s) and clock.simulated_time_s > 0
    if name == "uniform":
        assert profile.links.latency_s == NetworkModel().latency_s
        assert profile.links.bandwidth_bytes_per_s == NetworkModel().bandwidth_bytes_per_s
    if name == "two-datacenters":
        _, bw = profile.links.matrices(n)
        assert float(bw[0, n - 1]) == 1e9 / 8  # across the WAN
        assert n == 2 or float(bw[0, 1]) == 100e9 / 8  # inside a rack


def test_example_toml_and_every_link_shorthand(tmp_path: Path) -> None:
    p = load_profile(ROOT / "examples" / "system_two_racks.toml", 8)
    assert p.name == "two-racks" and p.compute.speed[3] == 0.25
    lat, bw = p.links.matrices(8)
    assert float(bw[0, 1]) == 100e9 / 8 and float(bw[0, 4]) == 1e9 / 8
    assert float(lat[3, 4]) == 20 * 1e-3 and float(lat[4, 3]) == 5 * 1e-3
    assert p.failures.offline == (OfflineInterval(5, 100, 150),)

    (tmp_path / "links.csv").write_text("src,dst,latency_ms,bandwidth_gbps\n0,1,7.5,2\n")
    path = write(
        tmp_path,
        "seed = 3\n[links]\nlatency_ms = 2\nbandwidth_gbps = 8\nfile = 'links.csv'\n"
        "random_latency_ms = [1, 4]\n",
    )
    p = load_profile(path, 4)
    lat, bw = p.links.matrices(4)
    assert float(lat[0, 1]) == 7.5 * 1e-3 and float(bw[0, 1]) == 2e9 / 8
    off = ~torch.eye(4, dtype=torch.bool)
    off[0, 1] = False
    assert ((lat[off] >= 1e-3) & (lat[off] <= 4e-3)).all() and (bw[off] == 1e9).all()
    assert torch.equal(p.links.matrices(4)[0], lat)  # seeded: the same links every time
    assert p.seed == 3


def test_the_documented_toml_example_parses(tmp_path: Path) -> None:
    """The schema example in ``peergrad.system.profile``'s docstring is a valid profile."""
    doc = profile_module.__doc__
    assert doc is not None
    block = doc.split("allowed ones; a file written for another number of workers is an error)::")[
        1
    ]
    text = textwrap.dedent(block.split("See ``examples/")[0])
    p = SystemProfile.from_toml(write(tmp_path, text), 8)
    assert p.compute.speed == (1, 1, 1, 0.25, 1, 1, 1, 1) and p.links.groups is not None
    assert p.failures.offline == (OfflineInterval(5, 100, 150),)
    assert p.links.overrides == (LinkOverride(3, 4, 20e-3, 0.1e9 / 8),)


def test_the_system_package_sits_below_algorithms_and_train() -> None:
    """``peergrad.system`` imports only itself, ``peergrad.topology`` and ``peergrad.comm.base``."""
    allowed = ("peergrad.system", "peergrad.topology", "peergrad.comm.base")
    src = Path(profile_module.__file__).parent
    imported = {m for p in src.rglob("*.py") for m in peergrad_imports(p)}
    assert imported and all(m.startswith(allowed) for m in imported), imported


def test_count_step_flops_counts_forward_and_backward() -> None:
    model = nn.Linear(10, 5, bias=False)
    batch = (torch.randn(4, 10), torch.randint(0, 5, (4,)))
    flops = count_step_flops(model, batch, nn.functional.cross_entropy)
    assert flops == 2 * (2 * 4 * 10 * 5)  # forward x W^T, backward grad of W
    assert model.weight.grad is None
    profile = load_profile("datacenter", 4).with_flops_per_step(flops)
    assert profile.step_s == flops / 10e12


def test_a_gossip_round_at_1024_workers_is_vectorised() -> None:
    """One-peer exponential graph at n = 1024, uniform and per-link random profiles with
    failures: just runs (no Python loop over edges or workers)."""
    topo = one_peer_exponential(1024)
    for profile in (SystemProfile.uniform(1024), faulty_profile(1024)):
        clock = SystemClock(profile)
        for k in range(topo.period):
            clock.begin_step()
            clock.compute()
            src, dst = graph_edges(topo.at(k))
            up = clock.surviving_edges(src, dst)
            clock.gossip(src[up], dst[up], 4e5, pre_gradient=k % 2 == 0)
        clock.all_reduce(4e5)
        assert math.isfinite(clock.simulated_time_s) and clock.simulated_time_s > 0
