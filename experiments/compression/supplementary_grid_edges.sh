#!/usr/bin/env bash
# The labels of run.sh whose chosen lr sat at an edge of {0.03, 0.1, 0.3}, rerun with the grid
# extended one step past that edge (3 seeds, selection on the same validation split):
#   n = 8:  powersgd@r1 (0.03 chosen)                                   -> {0.01, 0.03}
#   n = 32: powersgd@r1, powersgd@r2 (0.03 chosen)                      -> {0.01, 0.03}
#           ef-sgd@top1, ef-sgd@top10 (0.3 chosen)                      -> {0.3, 1}
# The runs at the edge value repeat run.sh's (same seeds, same results); the new value wins only
# if its seed-mean validation accuracy is higher.
# Usage: bash experiments/compression/supplementary_grid_edges.sh [OUT_DIR]
#   (7 min 20 s on the 2-core machine while other jobs ran) with `peergrad` on PATH (or PEERGRAD=...).
set -euo pipefail
out=${1:-runs/compression-edges}
pg=${PEERGRAD:-peergrad}
common=(--topology ring --dataset mnist --model mlp --partition iid --epochs 20 --batch-size 32
        --momentum 0.9 --seeds "${SEEDS:-0,1,2}" --val-fraction 0.1 --target-accuracy 0.9
        --no-progress)
"$pg" compare "${common[@]}" --workers 8 --algorithms powersgd@r1 \
    --set-for powersgd@r1:rank=1 --set-for powersgd@r1:lr-grid=0.01,0.03 --out "$out/n8"
"$pg" compare "${common[@]}" --workers 32 \
    --algorithms powersgd@r1,powersgd@r2,ef-sgd@top1,ef-sgd@top10 \
    --set-for powersgd@r1:rank=1 --set-for powersgd@r1:lr-grid=0.01,0.03 \
    --set-for powersgd@r2:rank=2 --set-for powersgd@r2:lr-grid=0.01,0.03 \
    --set-for ef-sgd@top1:ratio=0.01 --set-for ef-sgd@top1:lr-grid=0.3,1 \
    --set-for ef-sgd@top10:ratio=0.1 --set-for ef-sgd@top10:lr-grid=0.3,1 --out "$out/n32"
