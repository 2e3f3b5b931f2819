"""--weights real: a local checkpoint's own weights, through both backends (and cut with --layers)."""

import json
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llmprobe.models import resolve_model
    d = tmp_path_factory.mktemp("ckpt") / "tiny-llama-real"
    cfg = transformers.AutoConfig.for_model(**resolve_model("tiny-llama").config)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    return d


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])])
def test_profile_real_checkpoint(checkpoint, backend, tmp_path):
    if backend == "vllm":
        pytest.importorskip("vllm")
    out = tmp_path / "r.json"
    args = [sys.executable, "-m", "llmprobe", "profile", "--model", str(checkpoint), "--weights", "real", "--backend",
            backend, "--batch", "2", "--prompt-len", "8", "--gen-len", "3", "--runs", "1", "--out", str(out), "--json"]
    args += ["--enforce-eager"] if backend == "vllm" else ["--layers", "1"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout)
    assert rec["config"]["weights"] == "real"
    assert rec["config"]["layers_note"] == ("1 of 2 layers" if backend == "hf" else None)
    assert rec["scenarios"][0]["summary"]["tps"]["median"] > 0


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])])
def test_real_weights_generate_what_the_checkpoint_generates(checkpoint, backend):
    """Greedy tokens from the engine match transformers' own greedy decode of the checkpoint (random
    weights would not): the weights really are the checkpoint's."""
    from llmprobe.engines import EngineOptions, create_engine
    from llmprobe.models import resolve_model
    if backend == "vllm":
        pytest.importorskip("vllm")
    prompts = [[11, 57, 300, 42, 9, 700, 13, 5], [500, 3, 99, 250, 31, 7, 801, 64]]
    # vLLM runs the checkpoint in fp32 (no bf16 rounding to tip a near-tie); the hf backend takes bf16/fp16 only
    dtype = "float32" if backend == "vllm" else "bfloat16"
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
    with torch.inference_mode():
        ref = ref_model.generate(torch.tensor(prompts), attention_mask=torch.ones(2, 8, dtype=torch.long),
                                 max_new_tokens=6, min_new_tokens=6, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)[:, 8:].tolist()
    opts = EngineOptions(model=resolve_model(str(checkpoint)), model_path=str(checkpoint), weights="real",
                         dtype=dtype, enforce_eager=True, max_model_len=32, device="cpu")
    with create_engine(backend, opts) as eng:
        got = [r.output_ids for r in eng.run(prompts, 6).requests]
    assert got == ref


def test_real_weights_need_a_folder(checkpoint):
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", "tiny-llama", "--weights", "real"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "local checkpoint folder" in r.stderr
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", str(checkpoint), "--weights", "real",
                        "--layers", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs --backend hf" in r.stderr and "Traceback" not in r.stderr
