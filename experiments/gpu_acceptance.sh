#!/usr/bin/env bash
# GPU acceptance run: ceilings, hf-backend profiles of a Llama-2 and a Mixtral architecture at full
# width (first N layers), and their explanation, in under 8 minutes on an H100/H200 with torch,
# triton, cupy, transformers and nvidia-ml-py (no vLLM, no network).
#
#   bash experiments/gpu_acceptance.sh OUTDIR
#
# Writes OUTDIR/{roofline.json, profile-*.json, explain.json, report/, *.log} and prints a short
# summary table last. Without a CUDA GPU it runs the same pipeline on the CPU with tiny models and
# says so. Where click/rich/matplotlib are missing and there is no network, first run
# experiments/gpu_bundle.sh on a connected machine and set LLMPROBE_WHEELS to the folder it made.
set -euo pipefail
out=${1:?usage: gpu_acceptance.sh OUTDIR}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
if [ -n "${LLMPROBE_WHEELS:-}" ]; then
    pip install -q --no-index --find-links "$LLMPROBE_WHEELS" click rich matplotlib >"$out/install.log" 2>&1
fi
if ! python -c "import llmprobe" 2>/dev/null; then
    pip install -q --no-deps --no-build-isolation -e "$here" >>"$out/install.log" 2>&1 || export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
fi
export LLMPROBE_CACHE_DIR="$out/cache"

step() { echo "[$(( $(date +%s) - t0 ))s] $*" >&2; }

step "ceilings: llmprobe roofline --full"
python -m llmprobe roofline --full --remeasure --json >"$out/roofline.json" 2>"$out/roofline.log"
device=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['measured']['device'])" "$out/roofline.json")

if [ "$device" = "cuda" ]; then
    # Full width, as many layers as fit the time: ~34 GB of Llama-2-70B, ~35 GB of Mixtral-8x7B.
    models=("llama-2-70b:20" "mixtral-8x7b:12")
    args=(--batch 1,8 --prompt-len 256 --gen-len 256 --runs 3 --warmup 1)
else
    step "no CUDA GPU: CPU fallback with tiny models and short runs (these are not GPU figures)"
    models=("tiny-llama:2" "tiny-mixtral:2")
    args=(--batch 1,8 --prompt-len 32 --gen-len 16 --runs 2 --warmup 1)
fi

for ml in "${models[@]}"; do
    m=${ml%%:*}; layers=${ml##*:}
    step "profile --backend hf --model $m --layers $layers"
    python -m llmprobe profile --backend hf --model "$m" --layers "$layers" "${args[@]}" \
        --out "$out/profile-$m.json" >"$out/profile-$m.log" 2>&1
done

step "explain"
python -m llmprobe explain "$out"/profile-*.json --report "$out/report" --json >"$out/explain.json" 2>"$out/explain.log"
python "$here/experiments/acceptance_summary.py" "$out"
step "done"
