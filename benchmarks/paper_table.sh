#!/usr/bin/env bash
# The shortcut-heads paper's CIFAR10-DVS table ("Take A Shortcut Back", arXiv 2401.04486), one
# command away for a user with a GPU and the dataset:
#
#     bash benchmarks/paper_table.sh DATA_DIR            # DATA_DIR/CIFAR10DVS as tonic lays it
#     bash benchmarks/paper_table.sh DATA_DIR --dry-run  # every cell for 1 epoch at toy size on
#                                                        # the embedded ndigits set, on the CPU
#
# Cells: Spiking ResNet-18 and ResNet-34 (paper widths) x heads none / shortcut / evolutionary
# x seeds 0, 1, 2, each through recipes/cifar10dvs_resnet18.toml (T = 10, 48x48, the paper's
# augmentation, 200 epochs; --model swaps in ResNet-34).  A finished run (summary.json with
# "finished": true) is kept, so the script resumes.  Before training it prints an estimated
# duration from a measured GPU throughput: SAMPLES_PER_S (samples/s of ResNet-18 training;
# default 616, eager bf16 on one H200, docs/reference.md §8 — benchmarks/gpu_check.sh measures
# it on your card), with ResNet-34 at about twice ResNet-18's cost (3.6 vs 1.8 GFLOPs per frame
# at 224x224, He et al. 2016).  Ends with the table in the paper's layout (Table 1: method x
# network, test accuracy mean ± std over seeds), written to OUT/paper_table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bash benchmarks/paper_table.sh DATA_DIR [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DATA_DIR=$1; shift
DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        *) usage ;;
    esac
done
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT=${OUT:-runs/paper_table}
SEEDS=${SEEDS:-"0 1 2"}
MODELS="resnet18 resnet34"
HEADS="none shortcut evolutionary"
RECIPE=recipes/cifar10dvs_resnet18.toml

if [ "$DRY" = 1 ]; then
    # the same commands at toy size on data that ships with spikeline; DATA_DIR is not read
    DATA=(--dataset ndigits --T 2 --size 16 --width 4 --epochs 1 --limit-train 8 --limit-test 8
          --batch-size 4 --device cpu --no-progress)
    SAMPLES_PER_S=${SAMPLES_PER_S:-616}
else
    if [ ! -d "$DATA_DIR/CIFAR10DVS" ]; then
        echo "paper_table: $DATA_DIR/CIFAR10DVS: no such folder (expected tonic's layout: the" \
             "class folders of *.aedat4 files; see docs/datasets.md)" >&2
        exit 2
    fi
    DATA=(--data-dir "$DATA_DIR" --device cuda)
    SAMPLES_PER_S=${SAMPLES_PER_S:-616}
fi

# Estimated duration: 200 epochs x (8,100 training + 900 validation samples), plus one test
# pass, per run; 2x for ResNet-34.
n_seeds=$(echo $SEEDS | wc -w)
"$PY" - "$SAMPLES_PER_S" "$n_seeds" <<'EOF'
import sys
rate, seeds = float(sys.argv[1]), int(sys.argv[2])
per18 = (200 * (8100 + 900) + 1000) / rate
total = 3 * seeds * (per18 + 2 * per18)
print(f"paper_table: {6 * seeds} runs; estimated {per18 / 3600:.1f} h per ResNet-18 run and "
      f"{2 * per18 / 3600:.1f} h per ResNet-34 run at {rate:.0f} samples/s, "
      f"{total / 3600:.1f} h in all on one GPU")
EOF

for model in $MODELS; do
    for heads in $HEADS; do
        for seed in $SEEDS; do
            run="$OUT/$model-$heads-s$seed"
            if [ -f "$run/summary.json" ] && grep -q '"finished": true' "$run/summary.json"; then
                echo "paper_table: $run finished, kept"
                continue
            fi
            rm -rf "$run"
            echo "paper_table: training $run"
            "$PY" -m spikeline train --config "$RECIPE" --model "$model" --heads "$heads" \
                --seed "$seed" "${DATA[@]}" --out "$run"
        done
    done
done

TITLE="CIFAR10-DVS test accuracy (%), T = 10, 48x48 (the paper's Table 1 layout)"
[ "$DRY" = 1 ] && TITLE="DRY RUN: ndigits at toy size, 1 epoch (not the paper's setting)"
"$PY" - "$OUT" "$MODELS" "$HEADS" "$TITLE" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, models, heads, title = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
names = {"none": "vanilla", "shortcut": "shortcut back-propagation",
         "evolutionary": "evolutionary training"}
lines = ["| method | " + " | ".join(m.replace("resnet", "ResNet-") for m in models) + " |",
         "|---|" + "---:|" * len(models)]
for h in heads:
    row = []
    for m in models:
        accs = []
        for run in sorted(out.glob(f"{m}-{h}-s*")):
            acc = json.loads((run / "summary.json").read_text()).get("test_acc")
            if acc is not None:
                accs.append(100 * acc)
        if not accs:
            row.append("—")
            continue
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        row.append(f"{statistics.fmean(accs):.2f} ± {std:.2f} (n={len(accs)})")
    lines.append(f"| {names[h]} | " + " | ".join(row) + " |")
table = title + "\n\n" + "\n".join(lines) + "\n"
(out / "paper_table.md").write_text(table)
print(table)
EOF
