"""``examples/own_algorithm.py`` (issue 27, item 4): the tutorial's QG-DSGDm, a user algorithm
outside the package, passes the conformance kit, and reduces to the centralized methods that its
update rule implies.

Reductions, with μ = 0 (then ``m_hat`` is the last model difference d):

- W = I (n independent workers): x_new = x − η m, so d = m exactly in real arithmetic and
  ``m_hat_t = m_t = β m_hat_{t−1} + g_t`` is the heavy-ball buffer:
  every worker runs ``torch.optim.SGD(lr=η, momentum=β)`` (dampening 0) on its own gradients.
- W = J/n (complete graph, exact averaging) from equal x_i: after the gossip every row is
  x̄ − η m̄, so d_i = m̄ for every i and the rows stay equal; then m̄_t = ḡ_t + β m̄_{t−1}: the
  workers run ``torch.optim.SGD(lr=η, momentum=β)`` on the *averaged* gradient (centralized
  minibatch SGD with heavy-ball momentum).

Both hold up to the rounding of d = (x − x_new)/η, hence ``atol`` small and ``rtol = 0``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from peergrad.comm import SimulatedCommunicator
from peergrad.testing import check_algorithm
from peergrad.topology import make_topology

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_algorithm.py"


def _load():
    name = "_peergrad_example_own_algorithm"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve ClassVar annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


QGDSGDm = _load().QGDSGDm


def test_kit_passes_on_the_example():
    report = check_algorithm(QGDSGDm)  # float64 and float32; raises ConformanceError on failure
    assert report.ok
    declared = [r for r in report if r.check in ("centralized", "mean_preservation")]
    assert len(declared) == 8  # 2 reductions and 2 topologies, in float64 and float32
    assert all(r.status == "passed" for r in declared)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [{"mu": 0.5, "momentum": 0.8}, {"nesterov": True, "weight_decay": 1e-3}, {"momentum": 0.0}],
)
def test_kit_passes_with_other_options(options):
    check_algorithm(QGDSGDm, **options)


def _quadratics(n: int, dim: int):
    gen = torch.Generator().manual_seed(7)
    a = 0.5 + 1.5 * torch.rand(n, dim, generator=gen, dtype=torch.float64)
    b = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    x0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    return a, b, x0


@pytest.mark.parametrize("n", [1, 5])
def test_mu_zero_without_gossip_is_heavy_ball_sgd(n):
    """W = I, μ = 0: each worker is torch.optim.SGD(lr, momentum=β) on its own quadratic."""
    a, b, x0 = _quadratics(n, 7)
    algo = QGDSGDm(lr=0.1, momentum=0.9, mu=0.0)
    comm = SimulatedCommunicator(make_topology("identity", n))
    x = x0.expand(n, -1).clone()
    state = algo.init(x, comm)
    ref = torch.nn.Parameter(x0.expand(n, -1).clone())  # SGD is element-wise: n runs at once
    opt = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    for _ in range(60):
        state = algo.step(x, a * (x - b), state, comm)
        ref.grad = a * (ref.detach() - b)
        opt.step()
        torch.testing.assert_close(x, ref.detach(), rtol=0, atol=1e-12)
    assert state.step == 60


def test_mu_zero_on_the_complete_graph_is_centralized_heavy_ball_sgd():
    """W = J/n, μ = 0, equal starts: every row is torch.optim.SGD(lr, momentum=β) on the mean
    gradient."""
    n = 6
    a, b, x0 = _quadratics(n, 7)
    algo = QGDSGDm(lr=0.05, momentum=0.8, mu=0.0)
    comm = SimulatedCommunicator(make_topology("complete", n))
    x = x0.expand(n, -1).clone()
    state = algo.init(x, comm)
    ref = torch.nn.Parameter(x0.clone())
    opt = torch.optim.SGD([ref], lr=0.05, momentum=0.8)
    for _ in range(60):
        state = algo.step(x, a * (x - b), state, comm)
        ref.grad = (a * (ref.detach() - b)).mean(0)
        opt.step()
        torch.testing.assert_close(x, ref.detach().expand(n, -1), rtol=0, atol=1e-12)


def test_quasi_global_momentum_is_not_local_momentum():
    """With μ = β (the default) on one worker the method is *not* heavy-ball SGD: the momentum
    is an average of model differences, m_hat <- (μ + (1−μ)β) m_hat + (1−μ) g."""
    a, b, x0 = _quadratics(1, 7)
    algo = QGDSGDm(lr=0.1, momentum=0.9)
    comm = SimulatedCommunicator(make_topology("identity", 1))
    x, m_hat_ref = x0[None].clone(), torch.zeros(1, 7, dtype=torch.float64)
    state = algo.init(x, comm)
    for _ in range(30):
        g = a * (x - b)
        x_ref = x - 0.1 * (g + 0.9 * m_hat_ref)
        m_hat_ref = (0.9 + 0.1 * 0.9) * m_hat_ref + 0.1 * g
        state = algo.step(x, g, state, comm)
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(state.momentum_buffer, m_hat_ref, rtol=0, atol=1e-12)


def test_the_tutorial_shows_the_file_as_it_is():
    """docs/tutorials/own-algorithm.md quotes the class of examples/own_algorithm.py verbatim."""
    source = EXAMPLE.read_text()
    start = source.index("@dataclasses.dataclass(frozen=True)\nclass QGDSGDm")
    end = source.index("\n", source.index("return MomentumState", start))
    page = (EXAMPLE.parents[1] / "docs" / "tutorials" / "own-algorithm.md").read_text()
    assert f"```python\n{source[start:end]}\n```" in page
