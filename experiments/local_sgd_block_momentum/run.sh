#!/usr/bin/env bash
# K-step averaging (local SGD) with and without block momentum on MNIST digits, 8 workers,
# K in {1, 4, 16}: test accuracy against communication rounds and against samples.
# Every label runs with 3 seeds and its own local lr, chosen from {0.03, 0.1, 0.3} on a 10%
# validation split (issue 17): 54 runs.
# Usage: bash experiments/local_sgd_block_momentum/run.sh [OUT_DIR]   (about 6 minutes on 2 idle
# CPU cores) with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad). SEEDS, EPOCHS, LR_GRID and
# MOMENTUM (local heavy-ball momentum; 0 = plain local SGD, the paper's setting) override the
# defaults.
set -euo pipefail
out=${1:-runs/local_sgd_block_momentum}
labels=local-sgd@K1,local-sgd@K1-bm,local-sgd@K4,local-sgd@K4-bm,local-sgd@K16,local-sgd@K16-bm
args=(--algorithms "$labels" --workers 8 --dataset mnist --model mlp --partition iid
      --epochs "${EPOCHS:-30}" --batch-size 32 --lr-grid "${LR_GRID:-0.03,0.1,0.3}"
      --momentum "${MOMENTUM:-0}" --seeds "${SEEDS:-0,1,2}" --target-accuracy 0.93 --no-progress
      --set local_state=reset)
for k in 1 4 16; do
    # K-AVG: block_momentum=0; -bm: the defaults, block momentum 1 - 1/8 and block lr 1 (BMUF)
    args+=(--set-for "local-sgd@K$k:period=$k" --set-for "local-sgd@K$k:block_momentum=0"
           --set-for "local-sgd@K$k-bm:period=$k")
done
"${PEERGRAD:-peergrad}" compare "${args[@]}" --out "$out"
