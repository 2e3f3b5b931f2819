"""Storage sizes of the number formats the cost model knows.

Weight formats are what the linear layers are stored in; the KV cache has its own format; the
activation format is what the matmuls compute in unless the weights are fp8/int8 (W8A8).
"""

from __future__ import annotations

from .errors import UserError

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "int8", "int4")
KV_DTYPES = ("bf16", "fp16", "fp8")
ACTIVATION_DTYPES = ("bf16", "fp16")

_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32",
            "float8": "fp8", "fp8_e4m3": "fp8", "e4m3": "fp8", "w8": "int8", "w4": "int4",
            "auto": "bf16"}


def normalize(dtype: str, allowed: tuple[str, ...] = WEIGHT_DTYPES, what: str = "dtype") -> str:
    d = _ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if d not in allowed:
        raise UserError(f"unknown {what} {dtype!r}; choose one of: {', '.join(allowed)}")
    return d


TORCH_NAMES = {"bf16": "bfloat16", "fp16": "float16"}


def torch_name(dtype: str) -> str:
    """The torch/vLLM name of an activation format given in any alias ("bf16", "half", "auto", ...)."""
    return TORCH_NAMES[normalize(dtype, ACTIVATION_DTYPES, "--dtype")]


def nbytes(dtype: str) -> float:
    return BYTES_PER_ELEMENT[dtype]


def compute_dtype(weight_dtype: str, activation_dtype: str, peak_flops: dict[str, float]) -> str:
    """The tensor-core format the linear layers run in.

    fp8 and int8 weights run W8A8 where the card has that format (vLLM's fp8 path on Hopper/Ada,
    int8 on Ampere); otherwise, and always for int4 (W4A16 kernels such as Marlin), the weights are
    dequantized and the matmul runs in the activation format.
    """
    if weight_dtype in ("fp8", "int8") and peak_flops.get(weight_dtype):
        return weight_dtype
    return activation_dtype


def kv_dtype_of(kv_cache_dtype: str | None) -> str | None:
    """The cost model's KV format for vLLM's --kv-cache-dtype ("auto": the activation format, None)."""
    return "fp8" if str(kv_cache_dtype or "auto").startswith("fp8") else None


# vLLM quantization methods -> the weight format the cost model should assume.
_QUANTIZATION = {"fp8": "fp8", "fbgemm_fp8": "fp8", "modelopt": "fp8", "ptpc_fp8": "fp8",
                 "awq": "int4", "awq_marlin": "int4", "gptq": "int4", "gptq_marlin": "int4", "marlin": "int4",
                 "experts_int8": "int8", "bitsandbytes": None}


def quantized_weight_dtype(method: str | None) -> str | None:
    """Weight format of a vLLM quantization method; None when there is none or it cannot be told
    (bitsandbytes is 4- or 8-bit by its own config; unknown methods are left to the caller)."""
    return _QUANTIZATION.get(method.lower()) if method else None
