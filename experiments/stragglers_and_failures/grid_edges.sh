#!/usr/bin/env bash
# Grid edges of the stragglers-and-failures study (as experiments/compression's
# supplementary_grid_edges.sh): for every method and tuned scenario (s1, s5, s6) whose
# validation choice fell on an edge of LR_GRID in run.sh's OUT_DIR, run the same seeds at the
# next value past that edge (0.01 below 0.03, 1 above 0.3) and print both validation means.
# Usage: bash experiments/stragglers_and_failures/grid_edges.sh OUT_DIR   (after run.sh; writes
# OUT_DIR/edges/<scenario>/<method>; WORKERS, EPOCHS, SEEDS as for run.sh; prints one line per
# edge, kept in results/grid_edges.txt)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
n=${WORKERS:-16}
prof=$here; [[ $n == 16 ]] || prof=$here/n$n
pg=${PEERGRAD:-peergrad}
for cj in "$out"/s1_no_faults/*/compare.json "$out"/s5_link_drops/*/compare.json "$out"/s6_churn/*/compare.json; do
    [[ -f $cj ]] || continue
    read -r algo chosen extra < <(python3 - "$cj" <<'PY'
import json, sys
lab = json.load(open(sys.argv[1]))["labels"][0]
if lab.get("chosen_at_edge"):
    lr = lab["chosen_lr"]
    extra = 0.01 if lr == min(lab["lr_grid"]) else 1.0
    print(lab["algorithm"], lr, extra)
else:
    print("- - -")
PY
)
    [[ $algo == - ]] && continue
    scen=$(basename "$(dirname "$(dirname "$cj")")")
    dir=$out/edges/$scen/$algo
    case $algo in
        local-sgd) own=(--momentum 0 --set period=8) ;;
        choco-sgd) own=(--momentum 0.9 --set ratio=0.01) ;;
        powersgd) own=(--momentum 0.9 --set rank=2) ;;
        *) own=(--momentum 0.9) ;;
    esac
    if [[ ! -f $dir/compare.json ]] || ! python3 -c "import json, sys
sys.exit(bool(json.load(open(sys.argv[1]))['pending']))" "$dir/compare.json"; then
        rm -rf "$dir"
        "$pg" compare --algorithms "$algo" --topology ring --workers "$n" --dataset mnist \
            --model mlp --partition iid --epochs "${EPOCHS:-10}" --batch-size 32 \
            --val-fraction 0.1 --eval-workers 4 --seeds "${SEEDS:-0,1,2}" \
            --target-accuracy 0.9 --no-progress "${own[@]}" --system "$prof/$scen.toml" \
            --lr "$extra" --out "$dir" > /dev/null 2>&1
    fi
    python3 - "$cj" "$dir/compare.json" "$scen" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["labels"][0]
b = json.load(open(sys.argv[2]))
chosen = next(g for g in a["grid"] if g["lr"] == a["chosen_lr"])["val_accuracy"]["mean"]
runs = b["runs"]
extra = sum(r["final"]["val_accuracy"] for r in runs) / len(runs)
lr = runs[0]["hyperparameters"]["lr"]
verdict = "the edge value stays chosen" if chosen >= extra else "the extended grid prefers the new value"
print(f"{sys.argv[3]} {a['algorithm']}: chosen lr {a['chosen_lr']:g} (edge): validation "
      f"{100 * chosen:.2f}%; lr {lr:g}: {100 * extra:.2f}% -> {verdict}")
PY
done
