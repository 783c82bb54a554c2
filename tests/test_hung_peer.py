"""A hung peer is reported within the process group's timeout, and only that peer is named.

``init_process_group(timeout_s=T)`` sets the timeout; the communicator is built without one and
must use T (not a default of its own). One worker stops itself (SIGSTOP) after announcing a
step; the others, including those blocked only because they wait on it (transitively, or in the
same all-reduce), must name it alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _distributed import start_workers, wait_all

HERE = Path(__file__).parent
TIMEOUT_S = 4.0
VICTIM, STOP_AT = 2, 6


def named_peers(err: str) -> list[int]:
    """The workers a PeerFailure message names as missing or unresponsive."""
    match = re.search(r"missing or unresponsive peer\(s\): (.*?); ", err)
    assert match is not None, err[-2000:]
    return [int(j) for j in re.findall(r"(\d+) \((?:last seen at step \d+|never seen)\)", match[1])]


@pytest.mark.parametrize(("mode", "world"), [("gossip", 4), ("all-reduce", 3)])
def test_only_the_hung_peer_is_named_within_the_process_group_timeout(
    tmp_path: Path, mode: str, world: int
) -> None:
    argv = [str(HERE / "_hang_worker.py"), mode, str(TIMEOUT_S), str(VICTIM), str(STOP_AT)]
    procs = start_workers(argv, world, cwd=tmp_path, log_dir=tmp_path)
    victim = procs[VICTIM]
    survivors = [p for r, p in enumerate(procs) if r != VICTIM]
    try:
        # generous: process start-up on loaded cores, then T, then the report; the old
        # communicator default (60 s) cannot fit
        codes = wait_all(survivors, timeout_s=TIMEOUT_S + 40)
    finally:
        victim.kill()
        victim.wait()
    logs = {r: (tmp_path / f"rank{r}.err").read_text() for r in range(world)}
    assert all(c == 1 for c in codes), (codes, logs)
    out = (tmp_path / f"rank{VICTIM}.out").read_text()
    stopped = float(re.search(r"stopping at (\S+)", out)[1])  # type: ignore[index]
    for r in (r for r in range(world) if r != VICTIM):
        failed = re.search(r"failed at (\S+): (.*)", logs[r])
        assert failed is not None, logs[r][-2000:]
        elapsed = float(failed[1]) - stopped
        assert elapsed < TIMEOUT_S + 10, (r, elapsed)  # about T, far from 60 s
        assert named_peers(failed[2]) == [VICTIM], (r, failed[2])
        assert f"{VICTIM} (last seen at step {STOP_AT})" in failed[2]
