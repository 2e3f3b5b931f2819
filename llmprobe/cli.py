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
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the roofline chart (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def roofline(gpu, model_name, batch, prompt_len, gen_len, dtype, kv_dtype, tp, gpu_memory_utilization, mode,
             remeasure, plot, as_json) -> None:
    """Ceilings of a GPU (datasheet or measured) and a model's analytic bounds on them."""
    from . import commands
    commands.roofline(gpu=gpu, model_name=model_name, batches=batch, prompt_lens=prompt_len, gen_lens=gen_len,
                      dtypes=dtype, kv_dtype=kv_dtype, tps=tp, gpu_memory_utilization=gpu_memory_utilization,
                      mode=mode or "default", remeasure=remeasure, plot=plot, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
