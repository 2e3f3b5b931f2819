#!/usr/bin/env bash
# Pack vLLM 0.26.0 (the release pinned to the GPU machine's torch 2.11.0) and exactly what that
# machine lacks for an offline run into xz chunks of at most 58 MiB, so it travels in a few
# transfers to a machine with no network. Runs on any connected Linux machine with pip and xz.
#
#   bash experiments/vllm_bundle.sh CHUNKDIR            # CHUNKDIR/vllm-bundle.tar.xz.00, .01, ...
#   bash experiments/vllm_bundle.sh CHUNKDIR --check     # also: unpack into a Python 3.12 venv holding
#                                                         # torch 2.11.0 + transformers 5.17 (as the GPU
#                                                         # machine) and import the offline closure
#
# What is left out, and why: FlashAttention 2 (Ampere; Hopper runs FA3), the Rust frontend
# binary (`vllm serve` only), FlashMLA and QuTLASS (MLA models, FP4), DeepGEMM and the sm100
# FMHA headers (fp8 / Blackwell), the API server's static files.
set -euo pipefail
out=${1:?usage: vllm_bundle.sh CHUNKDIR [--check]}
check=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${VLLM_BUNDLE_WORK:-$(mktemp -d)}
mkdir -p "$out" "$work/dl"
py=${PYTHON:-python3}

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
target=(--only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}")

echo "downloading $(grep -c '^[a-z]' "$here/experiments/vllm_bundle_requirements.txt") wheels for CPython 3.12" >&2
PIP_CONSTRAINT= "$py" -m pip download -q --no-deps "${target[@]}" -d "$work/dl" \
    -r "$here/experiments/vllm_bundle_requirements.txt"

stage="$work/site"
rm -rf "$stage"
PIP_CONSTRAINT= "$py" -m pip install -q --no-deps --no-compile "${target[@]}" --target "$stage" "$work"/dl/*.whl
rm -rf "$stage/bin" \
    "$stage/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" "$stage/vllm/vllm-rs" \
    "$stage/vllm/_flashmla_C.abi3.so" "$stage/vllm/_qutlass_C.abi3.so" \
    "$stage/vllm/third_party/fmha_sm100" "$stage/vllm/third_party/deep_gemm" \
    "$stage/vllm/entrypoints/serve/instrumentator/static"
# Symbol tables are for debuggers; the dynamic symbols and the CUDA fatbins stay (~20 MB less).
find "$stage" -name '*.so' -exec strip --strip-unneeded {} +
echo "staged $(du -sm "$stage" | cut -f1) MiB; compressing (xz -9e)" >&2

# One piece per transfer: 64 MiB a transfer, the repository's own files (~5 MB) included.
chunk_mib=${VLLM_BUNDLE_CHUNK_MIB:-58}
rm -f "$out"/vllm-bundle.tar.xz.*
tar -C "$stage" -cf - . | xz -9e -T0 -c | split -b "${chunk_mib}M" -d - "$out/vllm-bundle.tar.xz."
(cd "$out" && sha256sum vllm-bundle.tar.xz.* >vllm-bundle.sha256)
n=$(ls "$out"/vllm-bundle.tar.xz.* | wc -l)
echo "$n chunk(s):"
ls -l "$out"/vllm-bundle.tar.xz.* | awk '{printf "  %s  %.1f MiB\n", $NF, $5 / 1048576}'

if [ "$check" = "--check" ]; then
    # The GPU machine's side of it, without its GPU: Python 3.12, torch 2.11.0 (CUDA 13 build, which
    # imports without a GPU), transformers 5.17 and the packages the bundle found already there.
    venv="$work/venv312"
    py312=${PYTHON312:-$(command -v python3.12 || echo "$HOME/.pyenv/versions/3.12.1/bin/python")}
    if [ ! -x "$venv/bin/python" ]; then
        "$py312" -m venv "$venv"
        PIP_CONSTRAINT= "$venv/bin/pip" install -q torch==2.11.0 transformers==5.17.0 numpy psutil requests \
            cloudpickle pillow uvloop py-cpuinfo prometheus-client einops aiohttp pyyaml regex sentencepiece \
            tiktoken protobuf
    fi
    site="$work/unpacked"
    rm -rf "$site" && mkdir -p "$site"
    cat "$out"/vllm-bundle.tar.xz.* | xz -dc | tar -C "$site" -xf -
    # No GPU here means no CUDA driver: a stand-in libcuda.so.1 that defines the driver entry points
    # vLLM's extensions link against (each returns an error) lets them load, so that what fails is
    # a real gap in the bundle, not the missing card.
    stub="$work/stub"
    mkdir -p "$stub"
    find "$site/vllm" -name '*.so' -exec nm -D --undefined-only {} + 2>/dev/null | awk '{print $2}' \
        | grep -E '^cu[A-Z]' | sed 's/@.*//' | sort -u \
        | awk '{print "int " $1 "(void) { return 999; }"}' >"$stub/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so.1" "$stub/libcuda.c"
    LD_LIBRARY_PATH="$stub" PYTHONPATH="$site" "$venv/bin/python" "$here/experiments/vllm_closure.py"
fi
