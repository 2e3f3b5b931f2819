"""Pinned CLI outputs: the same inputs must give byte-identical output until a change means to alter it.

`python -m tests.golden.cases --regen` rewrites the files; review the diff before committing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CPU_RECORD = "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json"
CPU_CEIL = "docs/measurements/cpu-xeon-2026-11-26/roofline.json"
H100 = "docs/measurements/h100-sxm-2026-11-27/vllm"

CASES: dict[str, list[str]] = {
    "models.json": ["models", "--json"],
    "gpus.json": ["gpus", "--json"],
    "prices.json": ["prices", "--json"],
    "roofline-mixtral-h100.json": ["roofline", "--gpu", "h100-sxm", "--model", "mixtral", "--json"],
    "roofline-mixtral-h100.txt": ["roofline", "--gpu", "h100-sxm", "--model", "mixtral"],
    "roofline-70b-a100-grid.json": ["roofline", "--gpu", "a100-sxm-80gb", "--model", "llama-2-70b", "--batch", "1,8,64",
                                    "--prompt-len", "256,4096", "--dtype", "bf16,fp8", "--tp", "1,2,4", "--json"],
    "roofline-mistral-window-l4.json": ["roofline", "--gpu", "l4", "--model", "mistral-7b", "--prompt-len", "2048,8192",
                                        "--gen-len", "1024", "--kv-dtype", "fp8", "--json"],
    "explain-cpu.json": ["explain", CPU_RECORD, "--ceilings", CPU_CEIL, "--json"],
    "explain-cpu.txt": ["explain", CPU_RECORD, "--ceilings", CPU_CEIL],
    "explain-h100-vllm.json": ["explain", f"{H100}/profile-mixtral-8x7b.json", f"{H100}/profile-llama-2-70b.json",
                               "--ceilings", f"{H100}/roofline.json", "--json"],
    "explain-h100-datasheet.txt": ["explain", f"{H100}/profile-mixtral-8x7b.json", "--gpu", "h100-sxm"],
    "compare-h100.json": ["compare", f"{H100}/profile-mixtral-8x7b.json", f"{H100}/profile-llama-2-70b.json",
                          "--tokens", "1e6", "--json"],
    "compare-h100.txt": ["compare", f"{H100}/profile-mixtral-8x7b.json", "--provider", "lambda"],
    "compare-predict.json": ["compare", f"{H100}/profile-mixtral-8x7b.json", "--predict", "--model", "mixtral",
                             "--gpus", "h100-sxm,a100-sxm-80gb", "--tp", "1,2", "--json"],
    "report-h100.md": ["explain", f"{H100}/profile-mixtral-8x7b.json", "--ceilings", f"{H100}/roofline.json",
                       "--report", "{tmp}"],
    "audit.json": ["audit", "experiments/data/article_claims.csv", "--json"],
    "audit.txt": ["audit", "experiments/data/article_claims.csv"],
}


def run(args: list[str]) -> str:
    """The exit code and stdout; a case writing a report ("{tmp}") yields the report's markdown and HTML."""
    env = dict(os.environ, COLUMNS="160", NO_COLOR="1", TERM="dumb")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "llmprobe", *(a.replace("{tmp}", tmp) for a in args)],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        out = f"exit {r.returncode}\n{r.stdout.replace(tmp, '{tmp}')}"
        for name in ("report.md", "report.html"):
            if os.path.exists(os.path.join(tmp, name)):
                out += f"\n==> {name}\n" + Path(tmp, name).read_text()
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python -m tests.golden.cases --regen")
    for name, args in CASES.items():
        (HERE / name).write_text(run(args))
        print("wrote", HERE / name)
