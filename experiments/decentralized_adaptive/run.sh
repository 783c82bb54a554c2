#!/usr/bin/env bash
# Decentralized AMSGrad (Chen, Karimi, Zhao, Li; arXiv 2109.03194) vs DADAM, its naive beta3 = 0
# form (local AMSGrad + gossip) and D-PSGD on MNIST digits split so that each of 8 workers on a
# ring holds about two classes (label-sorted blocks), equal samples, learning rates searched over
# powers of ten as in the paper. Usage: bash experiments/decentralized_adaptive/run.sh [OUT_DIR]
# (about 3 minutes on 2 CPU cores) with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/decentralized_adaptive}
labels=() sets=()
for alg in decentralized-amsgrad dadam dadam-naive; do
    for lr in 1e-4 1e-3 1e-2; do
        labels+=("$alg@lr$lr"); sets+=(--set-for "$alg@lr$lr:lr=$lr")
    done
done
for lr in 1e-2 1e-1 1e0; do
    labels+=("dpsgd@lr$lr"); sets+=(--set-for "dpsgd@lr$lr:lr=$lr")
done
list=$(IFS=,; echo "${labels[*]}")
for partition in sorted iid; do
    "${PEERGRAD:-peergrad}" compare --algorithms "$list" "${sets[@]}" \
        --topology ring --workers 8 --dataset mnist --model mlp --epochs 20 --batch-size 32 \
        --momentum 0.9 --seed 0 --target-accuracy 0.85 --no-progress \
        --partition "$partition" --out "$out/$partition"
done
