import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The suite owns its state: saved ceilings go to a temp dir for the whole session (subprocesses inherit
# it), so no test passes because an earlier `llmprobe roofline` left ceilings in ~/.cache/llmprobe,
# and none writes there. sessionfinish checks the user's folder was left as it was.
HOME_CACHE = Path(os.path.expanduser("~")) / ".cache" / "llmprobe"


def cache_snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every file under ``root``: (relative path, size, mtime in ns); empty when there is no folder."""
    if not root.exists():
        return []
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*") if p.is_file())


def pytest_configure(config):
    config._home_cache_before = cache_snapshot(HOME_CACHE)
    config._session_cache = tempfile.mkdtemp(prefix="llmprobe-test-cache-")
    os.environ["LLMPROBE_CACHE_DIR"] = config._session_cache


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not hasattr(config, "_session_cache"):
        return
    shutil.rmtree(config._session_cache, ignore_errors=True)
    if cache_snapshot(HOME_CACHE) != config._home_cache_before:
        print(f"\nERROR: the suite changed {HOME_CACHE}: tests must keep their state in temp dirs")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def write_config(tmp_path):
    def write(cfg: dict, name: str = "model") -> str:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        return str(d)
    return write


requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
