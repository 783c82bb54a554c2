#!/usr/bin/env bash
# DeTAG vs D-PSGD, D2 and gradient tracking on label-sorted ("unshuffled") and iid MNIST digits,
# ring of 16 workers, equal samples (one minibatch per worker per step for every method).
# Usage: bash experiments/detag_unshuffled/run.sh [OUT_DIR]   (about 5 minutes on 2 CPU cores)
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/detag_unshuffled}
common=(--topology ring --workers 16 --dataset mnist --model mlp --epochs 40 --batch-size 32
        --lr 0.1 --momentum 0.9 --seed 0 --target-accuracy 0.85 --no-progress
        --algorithms dpsgd,d2,gradient-tracking,detag,detag@R4
        --set-for detag:momentum=0
        --set-for detag@R4:momentum=0 --set-for detag@R4:rounds=4)
for partition in sorted iid; do
    "${PEERGRAD:-peergrad}" compare "${common[@]}" --partition "$partition" --out "$out/$partition"
done
