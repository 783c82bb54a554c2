"""A system profile imposed on real gloo processes (issue 26 item 5, peergrad.system.impose).

Four processes on loopback (``_system_worker.py``): a straggler's ``compute()`` sleeps the
profile's compute time (loose bounds, no tight timing); link delays change when messages leave,
never the iterates (bit-identical); link drops give the simulated engine's iterates and bytes
under the same profile and seed (float64).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from _system_worker import gossip, profiles, start
from peergrad.comm import SimulatedCommunicator
from peergrad.system import SystemClock, SystemProfile
from peergrad.system.impose import ImposedSystem
from peergrad.topology import make_topology

HERE = Path(__file__).parent
N = 4


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("system")
    out = tmp / "results.pt"
    procs = start_workers([str(HERE / "_system_worker.py"), str(out)], N, cwd=HERE, log_dir=tmp)
    codes = wait_all(procs, timeout_s=120)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(N))
    assert codes == [0] * N, f"worker exit codes {codes}\n{logs}"
    return torch.load(out)


def test_straggler_compute_sleeps_the_modelled_time(results: dict) -> None:
    took = results["compute_s"][:, 0]
    # modelled: 40 ms for speed 1, 160 ms for worker 1 (speed 0.25); loose upper bounds
    assert 0.040 <= float(took[0]) < 0.140
    assert 0.160 <= float(took[1]) < 0.400
    assert float(took[1]) > float(took[0]) + 0.08


def test_link_delays_do_not_change_the_iterates(results: dict) -> None:
    assert torch.equal(results["plain"], results["delayed"])


def test_link_drops_match_the_simulated_engine(results: dict) -> None:
    profile = profiles(N)["drops"]
    comm = SimulatedCommunicator(make_topology("ring", N), clock=SystemClock(profile))
    x = gossip(comm, start(N, 1), 8)
    torch.testing.assert_close(results["dropped"], x, rtol=1e-12, atol=1e-12)
    assert torch.equal(results["dropped_bytes"][:, 0], comm.bytes_sent)
    plain = SimulatedCommunicator(make_topology("ring", N))
    assert not torch.allclose(gossip(plain, start(N, 1), 8), x)  # some links did drop


def test_imposed_send_times_follow_the_clock() -> None:
    """Worker 0's messages on a ring: serialised on its link in destination order."""
    base = SystemProfile(N)
    imposed = ImposedSystem(profiles(N)["slow"], 0)
    offsets, busy = imposed.send_offsets([3, 1], 1000.0)
    assert offsets[1] == pytest.approx(2e-3 + 1000 / 1e6)  # to 1 first: the slow link
    assert offsets[0] == pytest.approx(3e-3 + 1000 / 1e6 + 1000 / 1e9)
    assert busy == pytest.approx(1000 / 1e6 + 1000 / 1e9)
    assert ImposedSystem(base, 2).all_reduce_s(0.0) == 0.0


def test_churn_is_refused_on_the_distributed_engine() -> None:
    from peergrad.system import FailureProfile

    profile = SystemProfile(N, failures=FailureProfile(leave_prob=0.1))
    with pytest.raises(ValueError, match="failures.leave_prob .*does not impose churn"):
        ImposedSystem(profile, 0)
