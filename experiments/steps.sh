# Shared by the GPU scripts (sourced, not run): one step = one command with its own timeout, its
# output in OUTDIR, its exit code and seconds in OUTDIR/steps.tsv, and the summary table
# (OUTDIR/summary.txt) rewritten after it, so a failed or timed-out step leaves the others summarized.
# Needs: $out (the output folder), $here (the repository root), $py (python3), $t0 (start, epoch s).

summarize() { "$py" "$here/experiments/acceptance_summary.py" "$out" >"$out/summary.txt" 2>>"$out/summary.log" || true; }

# step NAME TIMEOUT_S LOG -- COMMAND...
step() {
    local name=$1 limit=$2 log=$3; shift 4
    local s rc
    s=$(date +%s)
    echo "[$(( s - t0 ))s] $name (timeout ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@" >"$out/$log" 2>"$out/${log%.*}.err"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" >>"$out/steps.tsv"
    [ "$rc" = 0 ] || echo "    $name: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); see $out/${log%.*}.err" >&2
    summarize
    return 0
}
