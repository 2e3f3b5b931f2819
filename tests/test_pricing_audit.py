import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmprobe.audit import ACHIEVABLE_SHARE, Claim, audit_file, judge
from llmprobe.errors import UserError
from llmprobe.hardware import resolve_gpu
from llmprobe.models import resolve_model
from llmprobe.pricing import load_prices, price_for, tps_per_dollar_hour, usd_per_million_tokens, workload_cost_usd
from llmprobe.bounds import bound

ROOT = Path(__file__).resolve().parents[1]


def test_cost_arithmetic_by_hand():
    assert tps_per_dollar_hour(28, 1.99) == pytest.approx(14.0704, abs=1e-4)     # the article's 14.07
    assert usd_per_million_tokens(100, 3.6) == pytest.approx(10.0)               # 3.6 $/h / 360,000 tok/h
    assert workload_cost_usd(1e9, 100, 3.6) == pytest.approx(10_000.0)


def test_price_catalog_and_overrides(tmp_path):
    cat = load_prices()
    assert price_for(cat, "runpod", "h100-sxm")[0].usd_per_hour == 3.29
    assert all("article" in p.source for p in cat)
    f = tmp_path / "mine.toml"
    f.write_text('[[price]]\nprovider = "RunPod"\ngpu = "h100"\nusd_per_hour = 2.49\ndate = "2026-11-01"\nsource = "me"\n'
                 '[[price]]\nprovider = "acme"\ngpu = "h200"\nusd_per_hour = 3.10\n')
    mine = load_prices(str(f))
    assert price_for(mine, "runpod", "h100-sxm")[0].usd_per_hour == 2.49          # overridden
    assert price_for(mine, "acme", "h200")[0].usd_per_hour == 3.10                # extended
    assert len(mine) == len(cat) + 1


@pytest.mark.parametrize("text,needle", [
    ('[[price]]\nprovider = "x"\ngpu = "h100"\nusd_per_hour = = 1\n', "line 4"),
    ('[[price]]\nprovider = "x"\ngpu = "h100"\nusd_per_hour = -1\n', "positive"),
    ('[[price]]\nprovider = "x"\ngpu = "h1000"\nusd_per_hour = 1\n', "unknown GPU"),
    ('[[price]]\nprovider = "x"\nusd_per_hour = 1\n', "missing gpu"),
])
def test_bad_price_files(tmp_path, text, needle):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(UserError, match=needle) as e:
        load_prices(str(f))
    assert str(f) in str(e.value)
    r = subprocess.run([sys.executable, "-m", "llmprobe", "prices", "--prices", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def _claim(model, gpu, tps, batch=1, tp=1, dtype=None, **kw):
    return Claim(line=2, model=model, gpu=gpu, batch=batch, prompt_len=256, gen_len=256, tps=tps, tp=tp, dtype=dtype,
                 provider=None, price_per_hour=kw.get("price"), tps_per_dollar=kw.get("tpd"))


def _ceiling(model, gpu, dtype, batch=1, tp=1, optimistic=False):
    s = bound(resolve_model(model), resolve_gpu(gpu).ceilings(), batch, 256, 256, dtype=dtype, tp=tp)
    return s.tps_ceiling_optimistic if optimistic else s.tps_ceiling


def test_share_threshold_both_sides():
    cap = ACHIEVABLE_SHARE * _ceiling("llama-2-7b", "h100-sxm", "bf16")
    assert judge(_claim("llama-2-7b", "h100-sxm", cap * 0.99))["verdict"] == "plausible"
    above = judge(_claim("llama-2-7b", "h100-sxm", cap * 1.01))
    assert above["verdict"] == "conditional" and "<=8-bit" in above["reason"]        # precision unstated: 8-bit helps
    assert judge(_claim("llama-2-7b", "h100-sxm", cap * 1.01, dtype="bf16"))["verdict"] == "impossible"   # stated


def test_fit_threshold_both_sides():
    assert judge(_claim("llama-2-70b", "h100-sxm", 20, dtype="bf16"))["verdict"] == "impossible"       # 138 GB on 80
    assert "does not fit" in judge(_claim("llama-2-70b", "h100-sxm", 20, dtype="bf16"))["reason"]
    assert judge(_claim("llama-2-70b", "h100-sxm", 20, dtype="bf16", tp=2))["verdict"] == "plausible"


def test_int4_threshold_and_impossible():
    cap8 = ACHIEVABLE_SHARE * _ceiling("llama-2-70b", "a100-sxm-80gb", "int8")
    cap4 = ACHIEVABLE_SHARE * _ceiling("llama-2-70b", "a100-sxm-80gb", "int4")
    below8 = judge(_claim("llama-2-70b", "a100-sxm-80gb", cap8 * 0.99))
    above8 = judge(_claim("llama-2-70b", "a100-sxm-80gb", cap8 * 1.01))
    assert below8["verdict"] == above8["verdict"] == "conditional"
    assert "<=8-bit" in below8["reason"] and "<=4-bit" in above8["reason"]
    assert judge(_claim("llama-2-70b", "a100-sxm-80gb", cap4 * 1.01))["verdict"] == "impossible"


def test_moe_routing_threshold():
    uni = ACHIEVABLE_SHARE * _ceiling("mixtral", "h100-sxm", "int4", batch=8)
    opt = ACHIEVABLE_SHARE * _ceiling("mixtral", "h100-sxm", "int4", batch=8, optimistic=True)
    assert uni < opt
    mid = judge(_claim("mixtral", "h100-sxm", (uni + opt) / 2, batch=8, dtype="int4"))
    assert mid["verdict"] == "conditional" and "routing" in mid["reason"]
    assert judge(_claim("mixtral", "h100-sxm", opt * 1.01, batch=8, dtype="int4"))["verdict"] == "impossible"


def test_published_tps_per_dollar_is_rechecked():
    ok = judge(_claim("llama-2-7b", "h100-sxm", 100, price=2.0, tpd=50.0))
    bad = judge(_claim("llama-2-7b", "h100-sxm", 100, price=2.0, tpd=55.0))
    assert ok["cost"]["arithmetic_ok"] and not bad["cost"]["arithmetic_ok"] and "off" in bad["reason"]


def test_malformed_claims(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("model,gpu,batch,prompt_len,gen_len,tps,tp,dtype,provider,price_per_hour\n"
                 "# a comment\n"
                 "llama-2-7b,h100,1,256,256,100,,,,\n"
                 "llama-9,h100,1,256,256,100,,,,\n"
                 "llama-2-7b,h100,1,256,256,-3,,,,\n"
                 "llama-2-7b,h100,x,256,256,100,,,,\n"
                 "llama-2-7b,h999,1,256,256,100,,,,\n"
                 "llama-2-7b,h100,1,256,256,100,,fp5,,\n")
    doc = audit_file(str(f))
    assert [c["line"] for c in doc["claims"]] == [3]
    assert [e["line"] for e in doc["errors"]] == [4, 5, 6, 7, 8]
    r = subprocess.run([sys.executable, "-m", "llmprobe", "audit", str(f), "--json"], capture_output=True, text=True)
    assert r.returncode == 2 and json.loads(r.stdout)["claims"][0]["verdict"] == "plausible"
    f.write_text("model,gpu,tps\nllama-2-7b,h100,3\n")
    r = subprocess.run([sys.executable, "-m", "llmprobe", "audit", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "line 1: missing column(s) batch" in r.stderr and "Traceback" not in r.stderr


def test_article_page_regenerates_identically():
    from experiments import article_tables
    assert article_tables.build_page(article_tables.CLAIMS) == (ROOT / "docs" / "article-audit.md").read_text()


# ---- compare ---------------------------------------------------------------------------------------

def _record(path: Path, provider: str, tps1: float, tps8: float, tp: int = 1) -> str:
    stat = lambda v: {"n": 1, "mean": v, "median": v, "min": v, "max": v, "stdev": 0.0}  # noqa: E731
    rec = {"schema_version": 1, "config": {"model": "mixtral-8x7b", "provider": provider, "tp": tp},
           "provenance": {"device": {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984}},
           "scenarios": [{"batch": b, "prompt_len": 256, "gen_len": 256, "runs": [],
                          "summary": {"tps": stat(t), "ttft_s": stat(0.1), "tpot_s": stat(1 / t), "total_latency_s": stat(9.0)}}
                         for b, t in ((1, tps1), (8, tps8))]}
    path.write_text(json.dumps(rec))
    return str(path)


def test_compare_measured_records(tmp_path):
    a = _record(tmp_path / "a.json", "runpod", 68, 450)
    b = _record(tmp_path / "b.json", "vast.ai", 65, 430, tp=2)
    r = subprocess.run([sys.executable, "-m", "llmprobe", "compare", a, b, "--tokens", "1e9", "--json",
                        "--csv", str(tmp_path / "o.csv"), "--markdown", str(tmp_path / "o.md"), "--plot",
                        str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    row = next(x for x in doc["rows"] if x["provider"] == "runpod" and x["batch"] == 1)
    assert row["usd_per_hour"] == 3.29 and row["tps_per_dollar"] == pytest.approx(68 / 3.29)
    assert row["usd_per_million_tokens"] == pytest.approx(3.29 / (68 * 3600) * 1e6)
    assert row["workload_usd"] == pytest.approx(1e9 / 68 / 3600 * 3.29)
    vast = next(x for x in doc["rows"] if x["provider"] == "vast.ai" and x["batch"] == 8)
    assert vast["usd_per_hour"] == pytest.approx(2 * 2.80)                          # TP 2 pays two GPUs
    assert {c["batch"]: c["provider"] for c in doc["cheapest"]} == {1: "runpod", 8: "runpod"}
    assert (tmp_path / "o.csv").read_text().startswith("kind,model")
    assert "### mixtral-8x7b on h100-sxm" in (tmp_path / "o.md").read_text()
    assert (tmp_path / "o.png").stat().st_size > 1000


def test_compare_predict_is_labelled_and_scales_with_tp():
    r = subprocess.run([sys.executable, "-m", "llmprobe", "compare", "--predict", "--model", "mixtral", "--gpus",
                        "h100-sxm,a100-sxm-80gb", "--tp", "1,2", "--efficiency", "0.5", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert all(x["kind"] == "predicted" for x in rows)
    tp1 = [x for x in rows if x["gpu"] == "h100-sxm" and x["tp"] == 1]
    assert tp1 and all(not x["fits_in_memory"] and x["tps"] is None for x in tp1)   # 93 GB of bf16 weights
    tp2 = next(x for x in rows if x["gpu"] == "h100-sxm" and x["tp"] == 2 and x["provider"] == "runpod" and x["batch"] == 1)
    assert tp2["tps"] == pytest.approx(0.5 * tp2["tps_ceiling"]) and tp2["usd_per_hour"] == pytest.approx(2 * 3.29)
    r = subprocess.run([sys.executable, "-m", "llmprobe", "compare", "--predict", "--model", "mixtral", "--gpus", "h100"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs run records to calibrate on, or --efficiency" in r.stderr
