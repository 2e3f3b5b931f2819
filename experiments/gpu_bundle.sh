#!/usr/bin/env bash
# On a connected machine: download the pure-Python wheels llmprobe needs that a bare GPU box
# (torch, triton, cupy, transformers, nvidia-ml-py; no network) lacks, for Python 3.12 x86_64.
# Carry the folder (a few MB besides matplotlib's ~9 MB) and set LLMPROBE_WHEELS to it.
#
#   bash experiments/gpu_bundle.sh wheels/
set -euo pipefail
dest=${1:?usage: gpu_bundle.sh DEST}
pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$dest" click rich matplotlib
du -sh "$dest"
