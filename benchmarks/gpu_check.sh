#!/usr/bin/env bash
# One GPU check in one go (<= 8 minutes on one H100/H200).  Run from the repository root:
#
#     bash benchmarks/gpu_check.sh            # on the GPU machine
#     bash benchmarks/gpu_check.sh --dry-run  # everything on CPU at tiny sizes (a test runs it)
#
# Prints JSON lines (one per measurement, plus {"check": ..., "status": ...} per step) and
# writes them, and each step's log, under $OUT (default runs/gpu_check).  Installs nothing:
# it uses .venv/bin/python when present, else the system python3 (which must have torch), and
# imports the repository through a symlink tree when spikeline is not installed.  lava-dl is
# optional: without it the lava-dl row says why it was skipped.
#
# Steps and their time limits (seconds): CUDA-marked tests (90); bench_train conv stack, ours
# vs lava-dl's CUDA blocks on the same net (120, lava-dl JIT-compiles ~60 s on first use);
# Spiking ResNet-18 48x48 T=10 N=64 eager vs compile vs compile+bf16 with peak memory (360:
# on an H100 the two compiles took 132 s and 148 s); the neuron kernel's bandwidth next to a
# device copy (60, only when benchmarks/bench_neuron.py exists); integer synapses (torch._int_mm)
# vs the float product, bench_synapse.py's layer and crossover rows (90).  Typical total ~7
# minutes.
# A dry run compiles on the CPU, which takes minutes on a loaded machine: its limits are longer.
set -u
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

if ! "$PY" -c "import spikeline.pipeline" 2>/dev/null; then
    # pyproject maps spikeline.pipeline -> pipeline/ (and datasets/, deploy/); without an
    # install, the same layout as symlinks
    SHIM="$(mktemp -d)"
    mkdir "$SHIM/spikeline"
    for f in spikeline/*; do ln -s "$PWD/$f" "$SHIM/spikeline/"; done
    for d in pipeline datasets deploy; do ln -s "$PWD/$d" "$SHIM/spikeline/$d"; done
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi

emit() {  # one JSON line to stdout and to the results file
    echo "$1" | tee -a "$RESULTS"
}

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, keep its JSON lines, report its status
    local name="$1" limit="$2"
    shift 2
    local log="$OUT/$name.log" t0=$SECONDS rc
    timeout "$limit" "$@" > "$log" 2>&1
    rc=$?
    grep -E '^\{' "$log" | while read -r line; do emit "$line"; done
    local status=ok
    [ $rc -ne 0 ] && status=failed
    [ $rc -eq 124 ] && status=timeout
    [ $rc -eq 5 ] && [ "$name" = cuda_tests ] && status=no_tests  # pytest: nothing collected
    emit "{\"check\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"log\": \"$log\"}"
}

if [ $DRY -eq 1 ]; then
    DEVICE=cpu
    TESTS_LIMIT=300; STACK_LIMIT=300; RESNET_LIMIT=900
    RESNET=(--batch 2 --T 2 --size 16 --width 8 --seconds 0.5 --min-steps 1)
    STACK=(--stack-batch 2 --T 4 --size 16 --seconds 0.5 --min-steps 1)
    NEURON_ARGS=(--device cpu --sizes 4:4096 --repeat 1)
else
    DEVICE=cuda
    TESTS_LIMIT=90; STACK_LIMIT=120; RESNET_LIMIT=360
    RESNET=(--batch 64 --T 10 --size 48 --width 64 --seconds 8 --min-steps 3)
    STACK=(--stack-batch 32 --T 10 --size 48 --seconds 8 --min-steps 3)
    NEURON_ARGS=(--device cuda)
fi

emit "$("$PY" - "$DRY" <<'EOF'
import json, platform, sys
import torch
info = {"check": "env", "dry_run": sys.argv[1] == "1", "torch": torch.__version__,
        "python": platform.python_version(), "cuda": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["device_name"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
try:
    import lava.lib.dl.slayer  # noqa: F401
    info["lava_dl"] = True
except Exception as err:
    info["lava_dl"] = False
    info["lava_dl_reason"] = repr(err)[:200]
print(json.dumps(info))
EOF
)"

if [ $DRY -eq 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    emit '{"check": "gpu_check", "status": "failed", "reason": "torch sees no CUDA device (use --dry-run on a CPU)"}'
    exit 1
fi

# 1. CUDA-marked tests (on a dry run: that they collect)
if [ $DRY -eq 1 ]; then
    step cuda_tests "$TESTS_LIMIT" "$PY" -m pytest -q -m cuda --collect-only -p no:cacheprovider tests
else
    step cuda_tests "$TESTS_LIMIT" "$PY" -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors tests
fi

# 2. our blocks vs lava-dl's on the same conv stack (lava-dl's CUDA path on CUDA)
if "$PY" -c "import lava.lib.dl.slayer" 2>/dev/null; then
    step conv_stack "$STACK_LIMIT" "$PY" benchmarks/bench_train.py --device "$DEVICE" --skip-resnet "${STACK[@]}"
else
    emit '{"check": "conv_stack", "status": "skipped", "reason": "lava-dl is not importable here (pip install lava-dl needs the network); ours alone follows"}'
    step conv_stack_ours "$STACK_LIMIT" "$PY" benchmarks/bench_train.py --device "$DEVICE" --skip-resnet "${STACK[@]}"
fi

# 3. Spiking ResNet-18: eager vs torch.compile vs compile + bf16 autocast, peak memory
step resnet18_modes "$RESNET_LIMIT" "$PY" benchmarks/bench_train.py --device "$DEVICE" --modes eager,compile,compile_bf16 "${RESNET[@]}"

# 4. the neuron kernel's achieved bandwidth next to a device copy
if [ -f benchmarks/bench_neuron.py ]; then
    step neuron 60 "$PY" benchmarks/bench_neuron.py "${NEURON_ARGS[@]}" --json "$OUT/neuron.json"
else
    emit '{"check": "neuron", "status": "skipped", "reason": "benchmarks/bench_neuron.py is not in this tree"}'
fi

# 5. integer synapses (pipeline/kernels/int_synapse.py): torch._int_mm on the int8 tensor cores
#    against the float product, dense rows and the crossover, outputs compared bit for bit
if [ $DRY -eq 1 ]; then
    step int_synapse 300 "$PY" benchmarks/bench_synapse.py --device cpu --only crossover --repeat 1
else
    step int_synapse 90 "$PY" benchmarks/bench_synapse.py --device cuda --only layer,crossover --repeat 5
fi

FAILED=$(grep -c '"status": "\(failed\|timeout\)"' "$RESULTS")
emit "{\"check\": \"summary\", \"failed_steps\": $FAILED, \"results\": \"$RESULTS\"}"
[ "$FAILED" -eq 0 ]
