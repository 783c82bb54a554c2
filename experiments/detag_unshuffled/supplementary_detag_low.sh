#!/usr/bin/env bash
# supplementary: DeTAG with its grid moved down (the main study chose its lower edge 0.1 on MNIST),
# pipelined (auto R, R=4) and not pipelined, same settings as run.sh otherwise.
# Usage: bash supplementary_detag_low.sh OUT_DIR SETTING   (SETTING: ring16-sorted, ring32-sorted,
# ring16-iid; about 6, 12 and 6 minutes on one core)
set -euo pipefail
out=$1; setting=$2
case $setting in
  ring16-sorted) args=(--topology ring --workers 16 --eval-every 16 --partition sorted) ;;
  ring16-iid) args=(--topology ring --workers 16 --eval-every 16 --partition iid) ;;
  ring32-sorted) args=(--topology ring --workers 32 --eval-every 8 --partition sorted) ;;
esac
"${PEERGRAD:-peergrad}" compare "${args[@]}" --dataset mnist --model mlp --epochs 40 --batch-size 32 --momentum 0 \
  --target-accuracy 0.85 --no-progress --seeds 0,1,2 --lr-grid 0.01,0.03,0.1 \
  --algorithms detag,detag@R4,detag@np --set-for detag@R4:rounds=4 --set-for detag@np:pipelined=false \
  --out $out/mnist-$setting-detag-low
