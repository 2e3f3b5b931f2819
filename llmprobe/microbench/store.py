"""Saved ceilings, keyed by the device's identity, driver and the methodology version.

A card's UUID changes when the machine does; a driver update or a new methodology invalidates
old figures. CPU measurements are keyed by host and CPU model. Folder: $LLMPROBE_CACHE_DIR, else
~/.cache/llmprobe/ceilings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..records import CEILINGS_METHODOLOGY, atomic_write_json


def cache_dir() -> Path:
    base = os.environ.get("LLMPROBE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "llmprobe")
    return Path(base) / "ceilings"


def device_key(device: dict[str, Any]) -> str:
    if device.get("kind") == "cuda":
        ident = [device.get("uuid") or device.get("name"), device.get("driver_version")]
    else:
        import socket
        ident = [socket.gethostname(), device.get("name"), device.get("logical_cores"), device.get("bf16_gemm")]
    raw = json.dumps(ident + [CEILINGS_METHODOLOGY], default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def path_for(device: dict[str, Any]) -> Path:
    return cache_dir() / f"{device.get('kind', 'cpu')}-{device_key(device)}.json"


def save(measurement_dict: dict[str, Any]) -> Path:
    p = path_for(measurement_dict["fingerprint"])
    atomic_write_json(p, measurement_dict)
    return p


def load_for_device(device: dict[str, Any]) -> dict[str, Any] | None:
    p = path_for(device)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is the same as none: measure again
    return d if d.get("methodology") == CEILINGS_METHODOLOGY else None
