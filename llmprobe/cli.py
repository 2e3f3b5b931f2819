"""The llmprobe command line: options, help and error handling; commands.py does the work."""

from __future__ import annotations

import sys

import click

from .errors import UserError


class _Failure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"llmprobe: error: {self.format_message()}", err=True)


class _Group(click.Group):
    """Turns UserError from any command into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise _Failure(str(e)) from None
        except OSError as e:  # a path the user gave that cannot be read or written
            where = f"{e.filename}: " if e.filename else ""
            raise _Failure(f"{where}{e.strerror or e}") from None
        except click.UsageError as e:  # click's own four-line usage block, as one line
            name = e.ctx.command_path if e.ctx else "llmprobe"
            raise _Failure(f"{name}: {e.format_message()}") from None
        except KeyboardInterrupt:
            click.echo("llmprobe: interrupted", err=True)
            sys.exit(130)


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or any(v <= 0 for v in out):
        raise click.BadParameter(f"must be positive integers, got {value!r}")
    return out


def _str_list(ctx, param, value):
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmprobe")
def main() -> None:
    """How fast an LLM really runs on your GPU, how fast it could run, and what a token costs."""


# ---- catalogs ---------------------------------------------------------------------------------

@main.command(short_help="The model catalog, with exact parameter counts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models(as_json: bool) -> None:
    """The model catalog, with exact parameter counts.

    \b
    Example:
      llmprobe models --json | jq '.models[] | {name, total_params}'
    """
    from . import commands
    commands.models(as_json=as_json)


@main.command(short_help="The GPU catalog: datasheet ceilings and sources.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def gpus(as_json: bool) -> None:
    """The GPU catalog: datasheet ceilings (memory, HBM bandwidth, peak FLOP/s, interconnect, collective
    latency) and where each came from.

    \b
    Example:
      llmprobe gpus
    """
    from . import commands
    commands.gpus(as_json=as_json)


# ---- roofline ---------------------------------------------------------------------------------

@main.command(short_help="A GPU's ceilings and a model's floors on them.")
@click.option("--gpu", default="auto", show_default=True,
              help="Catalog GPU id/alias for datasheet ceilings, or 'auto' to measure this machine.")
@click.option("--model", "model_name", help="Catalog name/alias or path to a config.json.")
@click.option("--batch", default="1,8", callback=_int_list, show_default=True, help="Batch sizes, comma-separated: prompts submitted together (e.g. 1,8).")
@click.option("--prompt-len", default="256", callback=_int_list, show_default=True, help="Prompt lengths in tokens, comma-separated.")
@click.option("--gen-len", default="256", callback=_int_list, show_default=True, help="Tokens to generate per prompt, comma-separated.")
@click.option("--dtype", default="bf16", callback=_str_list, show_default=True,
              help="Weight format(s): bf16, fp16, fp8, int8, int4.")
@click.option("--kv-dtype", default=None, help="KV-cache format (default: the activation format).")
@click.option("--tp", default="1", callback=_int_list, show_default=True,
              help="Tensor-parallel degrees to model, comma-separated (profile runs one degree).")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--quick", "mode", flag_value="quick", help="Measure: a faster, coarser pass.")
@click.option("--full", "mode", flag_value="full", help="Measure: a size and shape sweep.")
@click.option("--remeasure", is_flag=True, help="Measure again instead of reusing saved ceilings.")
@click.option("--methods", default=None, callback=_str_list,
              help="Measure only these method families: torch, triton, cupy (GPU).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the roofline chart (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def roofline(**options) -> None:
    """Ceilings of a GPU (datasheet or measured) and a model's analytic bounds on them.

    Without --gpu it measures this machine (saved and reused until --remeasure); with --gpu it takes
    the catalog's datasheet. With --model it adds the TTFT, TPOT and TPS floors of every scenario.

    \b
    Examples:
      llmprobe roofline --gpu h100-sxm --model mixtral
      llmprobe roofline --gpu a100-sxm-80gb --model llama-2-70b --tp 1,2,4 --dtype bf16,fp8
      llmprobe roofline --quick --plot roofline.png      # measure this machine, coarse pass
    """
    from . import commands
    commands.roofline(**options)


# ---- profile ----------------------------------------------------------------------------------

@main.command(short_help="Run the real engine; time every step.")
@click.option("--model", "model_name", required=True, help="Catalog name/alias, config.json path, or checkpoint folder.")
@click.option("--backend", type=click.Choice(["vllm", "hf"]), default="vllm", show_default=True)
@click.option("--batch", default="1,8", callback=_int_list, show_default=True, help="Batch sizes, comma-separated: prompts submitted together (e.g. 1,8).")
@click.option("--prompt-len", default="256", callback=_int_list, show_default=True, help="Prompt lengths in tokens, comma-separated.")
@click.option("--gen-len", default="256", callback=_int_list, show_default=True, help="Tokens to generate per prompt, comma-separated.")
@click.option("--scenario", "scenario_specs", multiple=True, metavar="BxPxG",
              help="A scenario as batch x prompt x generation, e.g. 8x1024x128 (repeatable); replaces the "
                   "--batch/--prompt-len/--gen-len grid, for lists that are no grid.")
@click.option("--runs", default=5, show_default=True, type=int, help="Measured runs per scenario.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Warm-up runs per scenario (not measured).")
@click.option("--layers", type=int, help="Run only the first N layers (a model too big for the card).")
@click.option("--weights", type=click.Choice(["dummy", "real"]), default="dummy", show_default=True,
              help="dummy: random weights from config.json, nothing downloaded; real: a local checkpoint's.")
@click.option("--routing", type=click.Choice(["auto", "trained-like", "as-loaded"]), default="auto", show_default=True,
              help="MoE routers with random weights: trained-like spreads tokens over the experts as a trained "
                   "Mixtral does; as-loaded keeps the loader's (tokens pile onto few experts). auto: trained-like "
                   "for --weights dummy; real weights are never touched.")
@click.option("--expert-counts/--no-expert-counts", default=True, show_default=True,
              help="MoE: record the distinct experts each step touched, per layer (a top-k and a sum per layer "
                   "inside the step).")
@click.option("--dtype", default="bf16", show_default=True, help="Activation/weight dtype: bf16 or fp16.")
@click.option("--quantization", default=None, help="vLLM quantization method, e.g. fp8.")
@click.option("--kv-cache-dtype", default="auto", show_default=True)
@click.option("--max-model-len", type=int, default=None, help="Default: the longest prompt + generation.")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--enforce-eager", is_flag=True, help="No CUDA graphs / torch.compile (vLLM).")
@click.option("--tp", default=1, show_default=True, type=int,
              help="Tensor-parallel degree of the one engine this runs (vLLM's executor); one value, not a list.")
@click.option("--pp", default=1, show_default=True, type=int, help="Pipeline-parallel degree (vLLM's executor).")
@click.option("--distributed-executor-backend", type=click.Choice(["mp", "ray"]), default=None,
              help="vLLM's executor for multi-GPU or multi-node runs.")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
              help="Any other vLLM engine argument, VALUE as JSON where it parses (repeatable), "
                   "e.g. --engine-arg 'compilation_config={\"cudagraph_capture_sizes\": [1, 8]}'.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="hf backend: where to run.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="0: greedy decoding. 1.0 samples the way vLLM's latency benchmark does (top-p 1).")
@click.option("--trace-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="After each scenario's measured runs, trace N prefill and N decode steps with the PyTorch "
                   "profiler in extra runs: kernel classes and their floors in `explain` (traces saved beside the record).")
@click.option("--trace-graphs", is_flag=True,
              help="CUDA: replay CUDA graphs in the traced steps too (CUPTI from CUDA 13.1 Update 1 attributes "
                   "replayed kernels; before it, the default runs the traced steps without graphs).")
@click.option("--no-ceilings", "no_ceilings", is_flag=True,
              help="Where no ceilings are saved for this device, do not measure the quick pass first "
                   "(`explain` then needs --gpu, --ceilings or a `llmprobe roofline` on this machine).")
@click.option("--provider", default=None, help="Cloud provider this runs on (else detected from the environment).")
@click.option("--out", type=click.Path(dir_okay=False), help="Run record path (default: results/<model>-<time>.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as one JSON document.")
def profile(**options) -> None:
    """Run the real engine and time every prefill and decode step (TTFT, TPOT, TPS).

    Random weights by default (nothing is downloaded); a warm-up, then --runs measured runs per
    scenario; the run record (JSON) is written as it goes, so an interrupted run keeps what finished.

    \b
    Examples:
      llmprobe profile --model tiny-mixtral --batch 1,8 --prompt-len 64 --gen-len 16
      llmprobe profile --model mixtral --layers 4 --runs 5 --out mixtral.json
      llmprobe profile --model llama-2-70b --tp 2 --quantization fp8
      llmprobe profile --model tiny-mixtral --trace-steps 4     # + kernel classes per step
    """
    from . import commands
    commands.profile(**options)


# ---- serve ------------------------------------------------------------------------------------

def _rate_list(ctx, param, value):
    if value is None:
        return []
    try:
        out = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers (inf: all at once), got {value!r}") from None
    if not out or any(not v > 0 for v in out):
        raise click.BadParameter(f"rates must be positive (requests/s), got {value!r}")
    return out


@main.command(short_help="A load sweep on the real engine: latency, goodput.")
@click.option("--model", "model_name", required=True, help="Catalog name/alias, config.json path, or checkpoint folder.")
@click.option("--rate", "rates", default=None, callback=_rate_list,
              help="Request rates to sweep, requests/s, comma-separated (inf: all at once).")
@click.option("--concurrency", "concurrencies", default=None,
              callback=lambda c, p, v: _int_list(c, p, v) or [],
              help="Concurrencies to sweep: every request due at once, at most N in flight.")
@click.option("--arrivals", type=click.Choice(["poisson", "constant"]), default="poisson", show_default=True,
              help="How requests arrive at a rate: exponential gaps (as vLLM's bench serve) or evenly spaced.")
@click.option("--num-prompts", default=100, show_default=True, type=click.IntRange(min=1), help="Requests per load point.")
@click.option("--prompt-len", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--gen-len", default=256, show_default=True, type=click.IntRange(min=1), help="Output tokens per request.")
@click.option("--range-ratio", default=0.0, show_default=True, type=float,
              help="Lengths drawn uniformly within this fraction of --prompt-len/--gen-len (0: fixed).")
@click.option("--dataset", type=click.Path(dir_okay=False),
              help="JSONL or CSV of prompt_len and output_len per request, instead of the lengths above.")
@click.option("--slo", default=None,
              help="Goodput's limits, e.g. ttft=2s,tpot=200ms (keys ttft, tpot, e2el). Default: MLPerf's Llama-2-70B "
                   "server limits, ttft=2s,tpot=200ms.")
@click.option("--warmup", default=4, show_default=True, type=click.IntRange(min=0),
              help="Requests sent at once before the sweep (not kept).")
@click.option("--url", default=None,
              help="Load an already running OpenAI-compatible vLLM server here (e.g. http://localhost:8000) instead "
                   "of an engine in this process; --model then names the model it serves (for its vocabulary).")
@click.option("--served-model", default=None, help="With --url: the model's name on the server (default: its first).")
@click.option("--layers", type=int, help="Run only the first N layers (a model too big for the card).")
@click.option("--dtype", default="bf16", show_default=True, help="Activation/weight dtype: bf16 or fp16.")
@click.option("--quantization", default=None, help="vLLM quantization method, e.g. fp8.")
@click.option("--kv-cache-dtype", default="auto", show_default=True)
@click.option("--max-model-len", type=int, default=None, help="Default: the longest prompt + output.")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--enforce-eager", is_flag=True, help="No CUDA graphs / torch.compile.")
@click.option("--tp", default=1, show_default=True, type=int, help="Tensor-parallel degree (vLLM's executor).")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
              help="Any other vLLM engine argument, VALUE as JSON where it parses (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds lengths, prompts and arrivals.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--no-ceilings", "no_ceilings", is_flag=True, help="As for profile.")
@click.option("--provider", default=None, help="Cloud provider this runs on.")
@click.option("--out", type=click.Path(dir_okay=False), help="Serve record path (default: results/<model>-serve-<time>.json).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the throughput/interactivity frontier and goodput as a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print each load point's summary as one JSON document.")
def serve(**options) -> None:
    """Send requests to the real engine at a sweep of rates (an open loop) or concurrencies, and measure what
    vLLM's bench serve measures: throughput, TTFT, TPOT, ITL and end-to-end latency percentiles, and goodput
    (requests within the SLO per second). Every engine step is timed meanwhile, as in profile.

    \b
    Examples:
      llmprobe serve --model tiny-llama --rate 2,4,8,inf --num-prompts 50 --prompt-len 64 --gen-len 32
      llmprobe serve --model mixtral --layers 4 --concurrency 1,8,32 --slo ttft=1s,tpot=100ms
      llmprobe serve --model llama-2-70b --url http://localhost:8000 --rate 1,2,4 --num-prompts 200
    """
    from . import commands
    commands.serve(**options)


# ---- explain ----------------------------------------------------------------------------------

@main.command(short_help="Measured against the floors: where time went.")
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md/.html and PNG figures here.")
@click.option("--gpu", default=None, help="Explain against this catalog GPU's datasheet instead.")
@click.option("--ceilings", "ceilings_path", type=click.Path(dir_okay=False),
              help="Explain against the ceilings of a `llmprobe roofline --json` output.")
@click.option("--slo", default=None, help="Serve records: judge against these limits (e.g. ttft=1s,tpot=100ms) "
                                          "instead of the record's own.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def explain(**options) -> None:
    """Measured tokens/s against the roofline, and where the time went.

    A serve record (llmprobe serve) is explained under load: per load point, the engine's batch, tokens per step,
    steps against their floors, KV cache and preemptions, and where the requests' latency went; then, in one line,
    what bounds the SLO at the knee.

    \b
    Examples:
      llmprobe explain results/mixtral-vllm-*.json
      llmprobe explain run.json --gpu h100-sxm --report report/      # against a datasheet, with figures
      llmprobe explain results/tiny-llama-serve-*.json --slo ttft=500ms,tpot=50ms
    """
    from . import commands
    commands.explain(**options)


@main.command(short_help="Predict unmeasured scenarios from runs.")
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--batch", default="1,8", callback=_int_list, show_default=True,
              help="Batch sizes, comma-separated: prompts submitted together (e.g. 1,8).")
@click.option("--prompt-len", default="256", callback=_int_list, show_default=True,
              help="Prompt lengths in tokens, comma-separated.")
@click.option("--gen-len", default="256", callback=_int_list, show_default=True,
              help="Tokens to generate per prompt, comma-separated.")
@click.option("--gpu", default=None, help="Predict for this catalog GPU instead (its datasheet ceilings).")
@click.option("--ceilings", "ceilings_path", type=click.Path(dir_okay=False),
              help="Predict for the card of this `llmprobe roofline --json` measurement (preferred to --gpu).")
@click.option("--tp", default=1, show_default=True, type=int, help="Tensor-parallel degree to predict for.")
@click.option("--model", "model_name", default=None, help="Another model of the same architecture family.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def predict(**options) -> None:
    """Predict TTFT, TPOT, latency and TPS of scenarios never run, calibrated on measured runs.

    The step times of the records are fitted (fixed cost + memory and compute floors over their
    efficiencies, per phase); every prediction has an interval. Another card (--gpu/--ceilings) or
    TP degree is "transferred": the fitted efficiencies applied to its floors, a wider interval, and
    the assumption said. docs/model.md, "Calibrated prediction".

    \b
    Examples:
      llmprobe predict run.json --batch 1,8,32 --prompt-len 256 --gen-len 256
      llmprobe predict run.json --gpu h100-sxm --tp 2 --json
    """
    from . import commands
    commands.predict(**options)


# ---- providers ----------------------------------------------------------------------------------

@main.command(short_help="Tokens/s per dollar and $/Mtok by provider.")
@click.argument("records", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), help="TOML price file overriding the catalog.")
@click.option("--provider", default=None, help="Price the records at this provider (default: the one they ran on).")
@click.option("--tokens", type=float, default=None, help="Also cost a workload of this many output tokens.")
@click.option("--predict", is_flag=True, help="Predict from the roofline x an efficiency measured on a run.")
@click.option("--model", "model_name", default=None, help="--predict: the model.")
@click.option("--gpus", default=None, callback=_str_list, help="--predict: catalog GPUs, comma-separated.")
@click.option("--tp", default="1", callback=_int_list, show_default=True, help="--predict: TP degrees.")
@click.option("--batch", default="1,8", callback=_int_list, show_default=True,
              help="--predict: batch sizes, comma-separated.")
@click.option("--prompt-len", default=256, show_default=True, type=int, help="--predict: prompt length in tokens.")
@click.option("--gen-len", default=256, show_default=True, type=int, help="--predict: tokens generated per prompt.")
@click.option("--dtype", default="bf16", show_default=True, help="--predict: weight format.")
@click.option("--efficiency", type=float, default=None, help="--predict: use this efficiency (0-1) instead of a run's.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write every row as CSV.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the tables as markdown.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a $/Mtok bar chart (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def compare(**options) -> None:
    """Tokens/s per dollar and $ per million tokens across providers and GPUs.

    Measured rows come from run records; --predict adds rows for GPUs not run, from the roofline
    times an efficiency measured on a record (or --efficiency), labelled "predicted".

    \b
    Examples:
      llmprobe compare run.json --tokens 1e9
      llmprobe compare run.json --predict --model mixtral --gpus h100-sxm,a100-sxm-80gb --tp 1,2
      llmprobe compare run.json --prices my-prices.toml --markdown cost.md
    """
    from . import commands
    commands.compare(**options)


@main.command(short_help="Judge published tokens/s claims (CSV).")
@click.argument("claims", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit(**options) -> None:
    """Judge published tokens/s claims (CSV) against what the hardware can do.

    \b
    CSV header (optional columns may be left empty or out):
      model,gpu,batch,prompt_len,gen_len,tps,tp,dtype,provider,price_per_hour[,tps_per_dollar]
    Example:
      llmprobe audit experiments/data/article_claims.csv
    """
    from . import commands
    commands.audit(**options)


@main.command(short_help="The price catalog and its sources.")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), help="TOML price file overriding the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def prices(**options) -> None:
    """The price catalog and where each price came from.

    \b
    A price file (--prices, here and in compare) is TOML, one table per price:
      [[price]]
      provider = "runpod"            # any name; compare matches it to a record's provider
      gpu = "h100-sxm"               # a catalog id or alias (llmprobe gpus), or "cpu"
      usd_per_hour = 2.99            # per GPU
      date = "2026-11-27"            # when the price was seen
      source = "https://..."         # where
    Its entries replace the catalog's for the same provider and GPU.
    Example:
      llmprobe prices --prices my-prices.toml
    """
    from . import commands
    commands.prices(**options)


if __name__ == "__main__":  # pragma: no cover
    main()
