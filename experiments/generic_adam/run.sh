#!/usr/bin/env bash
# Generic Adam (Zou, Shen, Jie, Zhang, Liu, CVPR 2019, arXiv 1811.09358):
#  1. the Reddi et al. counterexample, online (T = 10^4) and stochastic (T = 10^6, 16 seeds):
#     Adam vs generic Adam, x_t and the average regret;
#  2. the sufficient condition for the §5.4 schedule family theta_t = zou:r;
#  3. the linear speed-up of distributed-adam on MNIST digits, n = 1, 2, 4, 8, 16 workers, 3 seeds,
#     the lr of every n chosen from {0.003, 0.01, 0.03, 0.1} on a 10% validation split (60 runs).
# Usage: bash experiments/generic_adam/run.sh [OUT_DIR]   (13 min 22 s measured on the 2-core
# machine while other experiments ran; 12 min 2 s of CPU time, one thread: about 12 min idle)
# with `peergrad` on PATH (or PEERGRAD=...) and python with peergrad importable (or PYTHON=...).
set -euo pipefail
out=${1:-runs/generic_adam}
here=$(cd "$(dirname "$0")" && pwd)
pg=${PEERGRAD:-peergrad}
py=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: one thread is fastest
mkdir -p "$out"
"$pg" counterexample --variant online --steps 10000 --out "$out"
"$pg" counterexample --variant stochastic --steps 1000000 --out "$out"
for r in 0 0.25 0.5 0.75 1; do
    "$pg" check-adam --alpha inv-sqrt --theta "zou:$r" --beta const:0.9 || true
done > "$out/check_adam.txt"
"$py" "$here/speedup.py" --out "$out"
