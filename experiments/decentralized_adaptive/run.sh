#!/usr/bin/env bash
# Decentralized AMSGrad (Chen, Karimi, Zhao, Li; arXiv 2109.03194) vs DADAM, its naive beta3 = 0
# form (local AMSGrad + gossip) and D-PSGD on MNIST digits split so that each of 8 workers on a
# ring holds about two classes (label-sorted blocks), and on an iid split; equal samples.
# Learning rates searched over powers of ten as in the paper, now per label on a 10% validation
# split (never the test set) with 3 seeds (issue 17): adaptive methods {1e-4, 1e-3, 1e-2},
# D-PSGD {1e-2, 1e-1, 1}; 72 runs.
# Usage: bash experiments/decentralized_adaptive/run.sh [OUT_DIR]
# (about 8 minutes on 2 idle CPU cores) with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/decentralized_adaptive}
sets=()
for alg in decentralized-amsgrad dadam dadam-naive; do
    sets+=(--set-for "$alg:lr-grid=1e-4,1e-3,1e-2")
done
sets+=(--set-for "dpsgd:lr-grid=1e-2,1e-1,1")
for partition in sorted iid; do
    "${PEERGRAD:-peergrad}" compare --algorithms decentralized-amsgrad,dadam,dadam-naive,dpsgd \
        "${sets[@]}" --topology ring --workers 8 --dataset mnist --model mlp --epochs 20 \
        --batch-size 32 --momentum 0.9 --seeds 0,1,2 --val-fraction 0.1 --target-accuracy 0.85 \
        --no-progress --partition "$partition" --out "$out/$partition"
done
