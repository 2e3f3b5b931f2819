"""Every operator/kernel name (with the scopes that decide its class) in traces of `profile
--trace-steps`, and the class the current table gives it: the reviewed list tests/test_traces.py pins.

    python -m experiments.trace_names --table vllm-cpu results/*.traces/*.json.gz [--table hf ...] > tests/data/trace_names.json

Review the classes before committing: the test then holds the table to them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

DECIDING = re.compile(r"^(gpu_model_runner: \w+|llmprobe::sample_tokens|llmprobe::module .*)$")


def main() -> None:
    from llmprobe.traces import classify, load, steps
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", action="append", nargs="+", metavar=("TABLE", "TRACE"), required=True,
                   help="a class table (vllm-gpu, vllm-cpu, hf) and the trace files to read with it")
    a = p.parse_args()
    out = {"about": "Operator names with the scopes that decide their class, seen in real traces "
                    "(experiments/trace_names.py), and the class each must get."}
    for table, *files in a.table:
        seen: dict[tuple[str, str], list[str]] = {}
        for f in files:
            for st in steps(load(f)):
                for name, scopes, _ in st.items:
                    deciding = [s for s in scopes if DECIDING.match(s)]
                    seen.setdefault((name, classify(table, name, scopes)), deciding)
        out[table] = [[n, sc, c] for (n, c), sc in sorted(seen.items())]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
