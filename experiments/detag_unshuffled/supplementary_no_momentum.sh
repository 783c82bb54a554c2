#!/usr/bin/env bash
# supplementary: every method without momentum, grids moved up, and DeTAG not pipelined
# (MNIST-1D, ring of 16, sorted and iid). Usage: bash supplementary_no_momentum.sh [OUT_DIR]
# (about 12 minutes on one core)
set -euo pipefail
out=${1:-runs/detag_supplementary}
for partition in sorted iid; do
  "${PEERGRAD:-peergrad}" compare --topology ring --workers 16 --eval-every 16 --dataset mnist1d --model mlp --partition $partition \
    --epochs 40 --batch-size 32 --momentum 0 --target-accuracy 0.4 --no-progress --seeds 0,1,2 \
    --lr-grid 0.1,0.3,1 --algorithms dpsgd,d2,gradient-tracking,detag,detag@R4,detag@np \
    --set-for detag:lr-grid=0.3,1,3 --set-for detag@R4:lr-grid=0.3,1,3 --set-for detag@R4:rounds=4 \
    --set-for detag@np:lr-grid=0.3,1,3 --set-for detag@np:pipelined=false \
    --out $out/mnist1d-ring16-$partition-m0
done
