# Shared by the GPU scripts (sourced, not run; set $out first). It runs from the checkout itself,
# installed or not (llmprobe binds kernels/ as llmprobe.kernels either way), and defines one step:
# one command with its own timeout, its output in $out, its exit code and seconds in
# $out/steps.tsv, and the summary table ($out/summary.txt) rewritten after it, so a failed or
# timed-out step leaves the others summarized.
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
py=${PYTHON:-python3}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export LLMPROBE_CACHE_DIR="$out/cache"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
[ -n "${keep_steps:-}" ] || : >"$out/steps.tsv"   # a later call of one sequence appends to the earlier's steps

summarize() { "$py" "$here/experiments/acceptance_summary.py" "$out" >"$out/summary.txt" 2>>"$out/summary.log" || true; }

# step NAME TIMEOUT_S LOG -- COMMAND...
# With $deadline_s set (seconds from the script's start), a step's timeout is cut to what is left before it,
# and a step with less than $min_step_s (default 20) left is skipped: recorded as "skip", never started.
step() {
    local name=$1 limit=$2 log=$3; shift 4
    local s rc
    s=$(date +%s)
    if [ "${deadline_s:-0}" -gt 0 ]; then
        local left=$(( deadline_s - (s - t0) ))
        if [ "$left" -lt "${min_step_s:-20}" ]; then
            echo "[$(( s - t0 ))s] $name: skipped, ${left}s left before the ${deadline_s}s deadline" >&2
            printf '%s\tskip\t0\n' "$name" >>"$out/steps.tsv"
            summarize
            return 0
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "[$(( s - t0 ))s] $name (timeout ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@" >"$out/$log" 2>"$out/${log%.*}.err"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" >>"$out/steps.tsv"
    [ "$rc" = 0 ] || echo "    $name: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); see $out/${log%.*}.err" >&2
    summarize
    return 0
}

has_cuda() { "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

# explain every profile written so far, within TIMEOUT_S
explain_all() {
    if compgen -G "$out/profile-*.json" >/dev/null; then
        step "explain" "$1" explain.json -- "$py" -m llmprobe explain "$out"/profile-*.json --report "$out/report" --json
    fi
}

# bundle_pieces DIR...: sets $chunks (the vllm-bundle.tar.xz.NN pieces found, one per number) and $n, or
# exits 2 when a piece is missing (the pieces may sit in different folders, as separate transfers leave them)
bundle_pieces() {
    local dirs=("$@") last
    [ ${#dirs[@]} -gt 0 ] || dirs=("$here/.vb/chunks" /tmp/vllm-chunks)
    chunks=$(for d in "${dirs[@]}"; do ls "$d"/vllm-bundle.tar.xz.[0-9]* 2>/dev/null; done \
             | awk -F. '{print $NF "\t" $0}' | sort -u -k1,1 | cut -f2)
    n=$(echo "$chunks" | grep -c . || true)
    last=$(echo "$chunks" | tail -1 | awk -F. '{print $NF + 0}')
    if [ "$n" = 0 ] || [ "$n" != $(( last + 1 )) ]; then
        echo "the bundle is incomplete: $n piece(s) found in ${dirs[*]} (run experiments/vllm_bundle.sh)" >&2
        exit 2
    fi
}
