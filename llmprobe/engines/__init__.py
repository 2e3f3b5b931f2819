"""Inference engines behind one small interface (base.Engine): vLLM and transformers ("hf"); under load, vLLM's
AsyncLLM in process (vllm_serving) and an OpenAI-compatible server over HTTP (http_client)."""

from __future__ import annotations

from .base import Engine, EngineOptions

BACKENDS = ("vllm", "hf")


def create_engine(backend: str, opts: EngineOptions) -> Engine:
    if backend == "vllm":
        from .vllm_engine import VllmEngine
        return VllmEngine(opts)
    if backend == "hf":
        from .hf_engine import HfEngine
        return HfEngine(opts)
    from ..errors import UserError
    raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def check_options(backend: str, opts: EngineOptions) -> None:
    """What a backend cannot do, refused before anything heavy is imported."""
    from ..errors import UserError
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "hf":
        if opts.tp != 1 or opts.pp != 1:
            raise UserError("--backend hf runs on one device; use --backend vllm for tensor/pipeline parallel")
        if opts.quantization:
            raise UserError("--quantization needs --backend vllm")
    if backend == "vllm" and opts.weights == "real" and opts.model.layers_note:
        # vLLM 0.32's loader raises on the checkpoint's weights for the layers that were cut
        raise UserError("--weights real with --layers needs --backend hf: vLLM refuses a checkpoint's weights for "
                        "layers the model does not have")
    if opts.tp <= 0 or opts.pp <= 0:
        raise UserError("--tp and --pp must be positive")
    from .routing import ROUTINGS
    if opts.routing not in ROUTINGS:
        raise UserError(f"unknown routing {opts.routing!r}; choose {' or '.join(ROUTINGS)}")
    if opts.routing == "trained-like" and opts.weights == "real":
        raise UserError("--routing trained-like sets random routers; real weights are never touched (use --routing as-loaded)")
    if opts.routing == "trained-like" and not opts.model.is_moe:
        raise UserError(f"--routing trained-like: {opts.model.name} has no experts to route")


def engine_device(backend: str, requested: str = "auto") -> str:
    """Where the backend will run ("cuda" or "cpu"), known before any engine is built."""
    if backend == "vllm":
        from .vllm_engine import import_vllm
        import_vllm()
        from vllm.platforms import current_platform
        return "cpu" if current_platform.is_cpu() else "cuda"
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError as e:
        from ..errors import MissingDependency
        raise MissingDependency("torch", "hf", cause=e) from None
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["BACKENDS", "Engine", "EngineOptions", "check_options", "create_engine", "engine_device"]
