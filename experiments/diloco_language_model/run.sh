#!/usr/bin/env bash
# DiLoCo and Streaming DiLoCo against synchronous Adam on a byte-level language model (issue 28,
# item 6): 8 workers, the built-in `pydoc-topics` text (the standard library's documentation
# topics, 90/5/5 contiguous train/validation/test blocks, iid windows), the `transformer` preset
# (2 layers, d_model 64, 4 heads), 32-token windows, batch 8 windows per worker, 600 steps.
# Labels:
#   sync          distributed-adam with the adam preset: gradients all-reduced every step, Adam
#                 (the synchronous baseline; weight decay 0 everywhere, so AdamW = Adam)
#   diloco@H10, diloco@H50, diloco@H200     DiLoCo, H inner steps per outer Nesterov step
#   diloco@H50-int8   outer pseudo-gradient in int8 (per-chunk scales), reduce-scatter, error feedback
#   diloco@H50-topk   outer pseudo-gradient top-5%, reduce-scatter, error feedback
#   diloco@H50-stream Streaming DiLoCo: 4 fragments on staggered schedules, outer all-reduce
#                     overlapped with 5 inner steps
# Every label: 3 seeds, inner lr chosen from {1e-3, 3e-3} on the validation split (lowest
# validation perplexity), b2 = 0.95, simulated time under the `two-datacenters` system profile.
# Usage: bash experiments/diloco_language_model/run.sh [OUT_DIR] [extra compare flags]
#   with `peergrad` on PATH (or PEERGRAD=.venv/bin/peergrad); SEEDS, LR_GRID, STEPS override;
#   EDGE=1 runs only the grid-edge check below into OUT_DIR-edge.
set -euo pipefail
out=${1:-runs/diloco_language_model}
shift || true
pg=${PEERGRAD:-peergrad}
# The lr-grid edges: the first comparison chose the upper edge (3e-3) for sync and the lower
# edge (1e-3) for DiLoCo; EDGE=1 runs the grid one step beyond for sync and DiLoCo H = 50
# (runs are deterministic per label, lr and seed, so the two folders together are the grids
# {1e-3, 3e-3, 1e-2} and {3e-4, 1e-3, 3e-3}).
if [[ ${EDGE:-0} == 1 ]]; then
    "$pg" compare --algorithms distributed-adam@sync,diloco@H50 --workers 8 \
        --dataset pydoc-topics --model transformer --partition iid --data-set seq_len=32 \
        --batch-size 8 --steps "${STEPS:-600}" --eval-every 100 --eval-workers 1 \
        --weight-decay 0 --set b2=0.95 --system two-datacenters --seeds "${SEEDS:-0,1,2}" \
        --no-progress --set-for distributed-adam@sync:preset=adam \
        --set-for distributed-adam@sync:lr-grid=0.01 --set-for diloco@H50:period=50 \
        --set-for diloco@H50:lr-grid=0.0003 --out "$out-edge"
    exit 0
fi
if [[ -f $out/compare.json ]]; then
    exec "$pg" compare --resume "$out" --no-progress
fi
labels=distributed-adam@sync,diloco@H10,diloco@H50,diloco@H200,diloco@H50-int8,diloco@H50-topk,diloco@H50-stream
args=(--algorithms "$labels" --workers 8 --dataset pydoc-topics --model transformer
      --partition iid --data-set seq_len=32 --batch-size 8 --steps "${STEPS:-600}"
      --eval-every 100 --eval-workers 1 --weight-decay 0 --set b2=0.95 --system two-datacenters
      --seeds "${SEEDS:-0,1,2}" --lr-grid "${LR_GRID:-0.001,0.003}" --no-progress
      --set-for distributed-adam@sync:preset=adam
      --set-for diloco@H10:period=10 --set-for diloco@H50:period=50
      --set-for diloco@H200:period=200
      --set-for diloco@H50-int8:period=50 --set-for diloco@H50-int8:outer_compressor=int8
      --set-for diloco@H50-int8:outer_exchange=reduce-scatter
      --set-for diloco@H50-int8:outer_error_feedback=true
      --set-for diloco@H50-topk:period=50 --set-for diloco@H50-topk:outer_compressor=topk
      --set-for diloco@H50-topk:outer_ratio=0.05
      --set-for diloco@H50-topk:outer_exchange=reduce-scatter
      --set-for diloco@H50-topk:outer_error_feedback=true
      --set-for diloco@H50-stream:period=50 --set-for diloco@H50-stream:fragments=4
      --set-for diloco@H50-stream:overlap_steps=5)
"$pg" compare "${args[@]}" --out "$out" "$@"
