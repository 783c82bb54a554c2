"""Start-up time of the ``peergrad`` command (issue 25: under 1 s).

Runs each command ``--repeats`` times as a fresh process (``python -m peergrad ...`` through the
console script) and prints the median, the minimum and the maximum wall time, next to
``python -c "import torch"`` measured the same way (what every command paid before the parser
became torch-free). Usage: ``python benchmarks/startup.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS: list[tuple[str, list[str]]] = [
    ("peergrad --help", ["--help"]),
    ("peergrad --version", ["--version"]),
    ("peergrad train --help", ["train", "--help"]),
    ("peergrad train --workers 0 (refused)", ["train", "--workers", "0"]),
    ("peergrad train --bogus (refused)", ["train", "--bogus"]),
]


def wall_s(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (>= 1)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    exe = shutil.which("peergrad")
    base = [exe] if exe else [sys.executable, "-m", "peergrad"]
    rows = [("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"])]
    rows += [(label, [*base, *argv]) for label, argv in COMMANDS]
    print(f"{'command':<40} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, argv in rows:
        times = [wall_s(argv) for _ in range(args.repeats)]
        print(f"{label:<40} {statistics.median(times):9.3f} {min(times):7.3f} {max(times):7.3f}")


if __name__ == "__main__":
    main()
