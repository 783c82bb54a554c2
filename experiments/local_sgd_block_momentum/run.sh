#!/usr/bin/env bash
# K-step averaging (local SGD) with and without block momentum on MNIST digits, 8 workers,
# K in {1, 4, 16}: test accuracy against communication rounds and against samples.
# Usage: bash experiments/local_sgd_block_momentum/run.sh [OUT_DIR]   (40 s on 2 idle CPU
# cores) with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad). SEED, EPOCHS, LR and MOMENTUM
# (local heavy-ball momentum; 0 = plain local SGD, the paper's setting) override the defaults.
set -euo pipefail
out=${1:-runs/local_sgd_block_momentum}
labels=local-sgd@K1,local-sgd@K1-bm,local-sgd@K4,local-sgd@K4-bm,local-sgd@K16,local-sgd@K16-bm
args=(--algorithms "$labels" --workers 8 --dataset mnist --model mlp --partition iid
      --epochs "${EPOCHS:-30}" --batch-size 32 --lr "${LR:-0.1}" --momentum "${MOMENTUM:-0}"
      --seed "${SEED:-0}" --target-accuracy 0.93 --no-progress --set local_state=reset)
for k in 1 4 16; do
    # K-AVG: block_momentum=0; -bm: the defaults, block momentum 1 - 1/8 and block lr 1 (BMUF)
    args+=(--set-for "local-sgd@K$k:period=$k" --set-for "local-sgd@K$k:block_momentum=0"
           --set-for "local-sgd@K$k-bm:period=$k")
done
"${PEERGRAD:-peergrad}" compare "${args[@]}" --out "$out"
