#!/usr/bin/env bash
# GPU acceptance run: ceilings (Triton, CuPy, torch), hf-backend profiles of Llama-2-70B and
# Mixtral-8x7B at full width (first N layers), and their explanation: at most 5 minutes on an
# H100/H200 that has torch, triton, cupy, transformers, nvidia-ml-py, click and rich (no vLLM, no
# network, no install: it runs from the checkout).
#
#   bash experiments/gpu_acceptance.sh OUTDIR
#
# Every step has its own timeout and prints the seconds it took; the summary table
# (OUTDIR/summary.txt) is rewritten after every step, so a step that fails or runs out of time
# still leaves the ones before it summarized. Without a CUDA GPU it runs the same pipeline on the
# CPU with tiny models and says so. The budget, step by step: docs/methodology.md.
set -uo pipefail
out=${1:?usage: gpu_acceptance.sh OUTDIR}
. "$(dirname "$0")/steps.sh"

if has_cuda; then
    device=cuda
    # Full width, as many layers as fit the time: ~34 GB of Llama-2-70B, ~35 GB of Mixtral-8x7B.
    # Mixtral at batch 1 only: transformers' batched_mm decode copies each selected expert per token
    # (~70 ms a step at batch 8, 6-7x its floor), which would not fit the 5 minutes.
    models=("llama-2-70b:20:1,8" "mixtral-8x7b:12:1")
    # one traced prefill and decode step per scenario: exercises the hf class table on CUDA kernels
    args=(--prompt-len 256 --gen-len 256 --runs 3 --warmup 1 --trace-steps 1)
    limits=(180 120 90 40 60)
else
    device=cpu
    echo "no CUDA GPU: CPU fallback with tiny models and short runs (these are not GPU figures)" >&2
    models=("tiny-llama:2:1,8" "tiny-mixtral:2:1,8")
    args=(--prompt-len 32 --gen-len 16 --runs 2 --warmup 1 --trace-steps 1)
    limits=(120 60 60 30 0)
fi

step "ceilings: roofline --full" "${limits[0]}" roofline.json -- \
    "$py" -m llmprobe roofline --full --remeasure --json
i=1
for mlb in "${models[@]}"; do
    IFS=: read -r m layers batches <<<"$mlb"
    step "profile --backend hf --model $m --layers $layers --batch $batches" "${limits[$i]}" "profile-$m.log" -- \
        "$py" -m llmprobe profile --backend hf --model "$m" --layers "$layers" --batch "$batches" "${args[@]}" \
        --out "$out/profile-$m.json"
    i=$(( i + 1 ))
done
explain_all "${limits[3]}"
if [ "$device" = cuda ]; then   # the GPU-marked tests, which skip everywhere else
    step "pytest -m gpu" "${limits[4]}" pytest-gpu.log -- "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
fi
echo "[$(( $(date +%s) - t0 ))s] done ($device)" >&2
cat "$out/summary.txt"
