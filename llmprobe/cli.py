"""The llmprobe command line: parse, call the library, print a table or one JSON document."""

from __future__ import annotations

import sys

import click

from . import render
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

@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models(as_json: bool) -> None:
    """The model catalog, with exact parameter counts."""
    from .models import ALIASES, catalog_names, load_catalog_model
    specs = [load_catalog_model(n) for n in catalog_names()]
    if as_json:
        return render.emit_json({"models": [dict(s.summary(), aliases=sorted(a for a, t in ALIASES.items() if t == s.name))
                                             for s in specs]})
    rows = [[s.name, s.architecture, render.count(s.total_params), render.count(s.active_params_per_token),
             s.num_layers, s.hidden_size, f"{s.num_heads}/{s.num_kv_heads}",
             f"{s.experts_per_token}/{s.num_experts}" if s.is_moe else "-",
             ", ".join(sorted(a for a, t in ALIASES.items() if t == s.name))] for s in specs]
    render.console.print(render.table("Model catalog", ["model", "architecture", "total params", "active/token",
                                                         "layers", "hidden", "heads/kv", "experts k/E", "aliases"], rows,
                                      caption="Any Hugging Face config.json (file or folder) works too: --model ./path"))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def gpus(as_json: bool) -> None:
    """The GPU catalog: datasheet ceilings and their sources."""
    from .hardware import gpu_catalog
    cat = gpu_catalog().values()
    if as_json:
        return render.emit_json({"gpus": [g.to_dict() for g in cat]})
    rows = [[g.id, g.name, render.si(g.memory_bytes, "B"), render.si(g.hbm_bytes_per_s, "B/s"),
             render.si(g.peak_flops.get("bf16"), "FLOP/s"), render.si(g.peak_flops.get("fp8"), "FLOP/s"),
             render.si(g.peak_flops.get("int8"), "OP/s"), f"{render.si(g.interconnect_bytes_per_s, 'B/s')} {g.interconnect}",
             ", ".join(g.aliases)] for g in cat]
    render.console.print(render.table("GPU catalog (datasheet, dense)", ["id", "name", "memory", "HBM", "bf16", "fp8",
                                                                          "int8", "interconnect/dir", "aliases"], rows))
    render.console.print("Sources:")
    for g in cat:
        render.console.print(f"  {g.id}: {g.source}")


# ---- roofline ---------------------------------------------------------------------------------

@main.command()
@click.option("--gpu", default="auto", show_default=True,
              help="Catalog GPU id/alias for datasheet ceilings, or 'auto' to measure this machine.")
@click.option("--model", "model_name", help="Catalog name/alias or path to a config.json.")
@click.option("--batch", default="1,8", callback=_int_list, show_default=True)
@click.option("--prompt-len", default="256", callback=_int_list, show_default=True)
@click.option("--gen-len", default="256", callback=_int_list, show_default=True)
@click.option("--dtype", default="bf16", callback=_str_list, show_default=True,
              help="Weight format(s): bf16, fp16, fp8, int8, int4.")
@click.option("--kv-dtype", default=None, help="KV-cache format (default: the activation format).")
@click.option("--tp", default="1", callback=_int_list, show_default=True, help="Tensor-parallel degree(s).")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--quick", "mode", flag_value="quick", help="Measure: a faster, coarser pass.")
@click.option("--full", "mode", flag_value="full", help="Measure: a size and shape sweep.")
@click.option("--remeasure", is_flag=True, help="Measure again instead of reusing saved ceilings.")
@click.option("--methods", default=None, callback=_str_list,
              help="Measure only these method families: torch, triton, cupy (GPU).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the roofline chart (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def roofline(gpu, model_name, batch, prompt_len, gen_len, dtype, kv_dtype, tp, gpu_memory_utilization, mode,
             remeasure, methods, plot, as_json) -> None:
    """Ceilings of a GPU (datasheet or measured) and a model's analytic bounds on them."""
    from . import commands
    commands.roofline(gpu=gpu, model_name=model_name, batches=batch, prompt_lens=prompt_len, gen_lens=gen_len,
                      dtypes=dtype, kv_dtype=kv_dtype, tp_degrees=tp, gpu_memory_utilization=gpu_memory_utilization,
                      mode=mode or "default", remeasure=remeasure, methods=methods, plot=plot, as_json=as_json)


# ---- profile ----------------------------------------------------------------------------------

@main.command()
@click.option("--model", "model_name", required=True, help="Catalog name/alias, config.json path, or checkpoint folder.")
@click.option("--backend", type=click.Choice(["vllm", "hf"]), default="vllm", show_default=True)
@click.option("--batch", default="1,8", callback=_int_list, show_default=True)
@click.option("--prompt-len", default="256", callback=_int_list, show_default=True)
@click.option("--gen-len", default="256", callback=_int_list, show_default=True)
@click.option("--runs", default=5, show_default=True, type=int, help="Measured runs per scenario.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Warm-up runs per scenario (not measured).")
@click.option("--layers", type=int, help="Run only the first N layers (a model too big for the card).")
@click.option("--weights", type=click.Choice(["dummy", "real"]), default="dummy", show_default=True,
              help="dummy: random weights from config.json, nothing downloaded; real: a local checkpoint's.")
@click.option("--dtype", default="bf16", show_default=True, help="Activation/weight dtype: bf16 or fp16.")
@click.option("--quantization", default=None, help="vLLM quantization method, e.g. fp8.")
@click.option("--kv-cache-dtype", default="auto", show_default=True)
@click.option("--max-model-len", type=int, default=None, help="Default: the longest prompt + generation.")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--enforce-eager", is_flag=True, help="No CUDA graphs / torch.compile (vLLM).")
@click.option("--tp", default=1, show_default=True, type=int, help="Tensor-parallel degree (vLLM's executor).")
@click.option("--pp", default=1, show_default=True, type=int, help="Pipeline-parallel degree (vLLM's executor).")
@click.option("--distributed-executor-backend", type=click.Choice(["mp", "ray"]), default=None,
              help="vLLM's executor for multi-GPU or multi-node runs.")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
              help="Any other vLLM engine argument, VALUE as JSON where it parses (repeatable), "
                   "e.g. --engine-arg 'compilation_config={\"cudagraph_capture_sizes\": [1, 8]}'.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="hf backend: where to run.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--provider", default=None, help="Cloud provider this runs on (else detected from the environment).")
@click.option("--out", type=click.Path(dir_okay=False), help="Run record path (default: results/<model>-<time>.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as one JSON document.")
def profile(model_name, backend, batch, prompt_len, gen_len, runs, warmup, layers, weights, dtype, quantization,
            kv_cache_dtype, max_model_len, gpu_memory_utilization, enforce_eager, tp, pp,
            distributed_executor_backend, engine_args, device, seed, provider, out, as_json) -> None:
    """Run the real engine and time every prefill and decode step (TTFT, TPOT, TPS)."""
    from . import commands
    commands.profile(model_name=model_name, backend=backend, batches=batch, prompt_lens=prompt_len, gen_lens=gen_len,
                     runs=runs, warmup=warmup, layers=layers, weights=weights, dtype=dtype, quantization=quantization,
                     kv_cache_dtype=kv_cache_dtype, max_model_len=max_model_len,
                     gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, tp=tp, pp=pp,
                     distributed_executor_backend=distributed_executor_backend, engine_args=engine_args,
                     device=device, seed=seed, provider=provider, out=out, as_json=as_json)


# ---- explain ----------------------------------------------------------------------------------

@main.command()
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md/.html and PNG figures here.")
@click.option("--gpu", default=None, help="Explain against this catalog GPU's datasheet instead.")
@click.option("--ceilings", "ceilings_file", type=click.Path(dir_okay=False),
              help="Explain against the ceilings of a `llmprobe roofline --json` output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def explain(records, report_dir, gpu, ceilings_file, as_json) -> None:
    """Measured tokens/s against the roofline, and where the time went."""
    from . import commands
    commands.explain(paths=list(records), report_dir=report_dir, gpu=gpu, ceilings_file=ceilings_file, as_json=as_json)


# ---- providers ----------------------------------------------------------------------------------

@main.command()
@click.argument("records", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), help="TOML price file overriding the catalog.")
@click.option("--provider", default=None, help="Price the records at this provider (default: the one they ran on).")
@click.option("--tokens", type=float, default=None, help="Also cost a workload of this many output tokens.")
@click.option("--predict", is_flag=True, help="Predict from the roofline x an efficiency measured on a run.")
@click.option("--model", "model_name", default=None, help="--predict: the model.")
@click.option("--gpus", default=None, callback=_str_list, help="--predict: catalog GPUs, comma-separated.")
@click.option("--tp", default="1", callback=_int_list, show_default=True, help="--predict: TP degrees.")
@click.option("--batch", default="1,8", callback=_int_list, show_default=True, help="--predict: batch sizes.")
@click.option("--prompt-len", default=256, show_default=True, type=int)
@click.option("--gen-len", default=256, show_default=True, type=int)
@click.option("--dtype", default="bf16", show_default=True, help="--predict: weight format.")
@click.option("--efficiency", type=float, default=None, help="--predict: use this efficiency (0-1) instead of a run's.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write every row as CSV.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the tables as markdown.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a $/Mtok bar chart (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def compare(records, prices_file, provider, tokens, predict, model_name, gpus, tp, batch, prompt_len, gen_len, dtype,
            efficiency, csv_out, md_out, plot, as_json) -> None:
    """Tokens/s per dollar and $ per million tokens across providers and GPUs."""
    from . import commands
    commands.compare(paths=list(records), prices_file=prices_file, provider=provider, tokens=tokens, predict=predict,
                     model_name=model_name, gpus=gpus, tp_degrees=tp, batches=batch, prompt_len=prompt_len, gen_len=gen_len,
                     dtype=dtype, efficiency=efficiency, csv_out=csv_out, md_out=md_out, plot=plot, as_json=as_json)


@main.command()
@click.argument("claims", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit(claims, as_json) -> None:
    """Judge published tokens/s claims (CSV) against what the hardware can do."""
    from . import commands
    commands.audit(path=claims, as_json=as_json)


@main.command()
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), help="TOML price file overriding the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def prices(prices_file, as_json) -> None:
    """The price catalog and where each price came from."""
    from . import commands
    commands.prices(prices_file=prices_file, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
