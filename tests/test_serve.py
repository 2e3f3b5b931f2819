"""llmprobe serve: the workload (arrivals, lengths, SLO), a load point's figures by hand, bad input in one line,
and a short sweep on the real engine (vLLM's CPU build)."""

import json
import math
import os
import random
import subprocess
import sys

import pytest

from llmprobe.errors import UserError
from llmprobe.records import LoadPoint, SchedulerSample, ServedRequest, ServeRecord
from llmprobe.workload import arrival_times, parse_slo, read_dataset, workload


def test_arrivals_are_seeded_and_have_the_asked_rate():
    a = arrival_times(2000, 4.0, "poisson", random.Random(1))
    assert a == arrival_times(2000, 4.0, "poisson", random.Random(1)) and a[-1] == pytest.approx(500.0)   # n / rate
    gaps = [y - x for x, y in zip([0.0] + a, a)]                    # as vLLM's bench serve: the first after a gap
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.06)            # mean gap 1/rate
    assert sum(g * g for g in gaps) / len(gaps) == pytest.approx(2 * 0.25 ** 2, rel=0.15)   # exponential: E[g^2] = 2/r^2
    assert arrival_times(5, 4.0, "constant", random.Random(1)) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])
    assert arrival_times(3, math.inf, "poisson", random.Random(1)) == [0.0, 0.0, 0.0]


def test_the_same_requests_at_every_rate():
    slow, fast = workload(20, 1.0, "poisson", 64, 32, 0.5, seed=3), workload(20, 8.0, "poisson", 64, 32, 0.5, seed=3)
    assert [(r.prompt_len, r.output_len) for r in slow] == [(r.prompt_len, r.output_len) for r in fast]
    assert all(32 <= r.prompt_len <= 96 and 16 <= r.output_len <= 48 for r in slow)
    assert slow[-1].arrival_s > fast[-1].arrival_s


def test_slo_parsing():
    assert parse_slo("ttft=2s,tpot=200ms") == {"ttft": 2.0, "tpot": 0.2}
    assert parse_slo(None) == {"ttft": 2.0, "tpot": 0.2}                    # MLPerf's Llama-2-70B server limits
    assert parse_slo("e2el=1.5") == {"e2el": 1.5}
    for bad, needle in (("latency=2s", "KEY one of"), ("ttft=fast", "not a duration"), ("ttft=0", "positive")):
        with pytest.raises(UserError, match=needle):
            parse_slo(bad)


def test_dataset_lengths(tmp_path):
    good = tmp_path / "d.jsonl"
    good.write_text('{"prompt_len": 10, "output_len": 5}\n{"prompt_len": 7, "output_len": 3}\n')
    assert read_dataset(str(good)) == [(10, 5), (7, 3)]
    assert [(r.prompt_len, r.output_len) for r in workload(3, 1.0, "constant", 1, 1, dataset=str(good))] == \
        [(10, 5), (7, 3), (10, 5)]
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,completion\nhello,world\n")
    with pytest.raises(UserError, match="row 1 has no integer prompt_len and output_len"):
        read_dataset(str(bad))


def _req(i, ttft, latency, n, sent=0.0, error=None):
    gaps = [(latency - ttft) / (n - 1)] * (n - 1) if n > 1 else []
    return ServedRequest(f"r{i}", sent, sent, 100, n, ttft, latency, gaps, error)


def test_a_load_point_by_hand():
    """4 requests of 100 prompt tokens over 10 s: 3 done (11, 11 and 21 output tokens), 1 failed."""
    reqs = [_req(0, 0.5, 1.5, 11), _req(1, 1.0, 3.0, 11), _req(2, 3.0, 5.0, 21), _req(3, None, None, 0, error="x")]
    sched = [SchedulerSample(1.0, 0.2, 2, 0, 0), SchedulerSample(2.0, 0.6, 3, 1, 1)]
    s = LoadPoint(rate=2.0, max_concurrency=None, duration_s=10.0, requests=reqs, scheduler=sched,
                  energy_j=86.0).summary({"ttft": 2.0, "tpot": 0.15})
    assert (s["completed"], s["failed"]) == (3, 1)
    assert s["request_throughput"] == pytest.approx(0.3) and s["output_throughput"] == pytest.approx(4.3)
    assert s["input_throughput"] == pytest.approx(30.0) and s["total_token_throughput"] == pytest.approx(34.3)
    # TPOTs: 1/10 = 0.1, 2/10 = 0.2, 2/20 = 0.1 -> request 1 breaks tpot <= 150 ms, request 2 breaks ttft <= 2 s
    assert s["tpot"]["median_s"] == pytest.approx(0.1) and s["tpot"]["mean_s"] == pytest.approx(0.4 / 3)
    assert s["goodput"] == pytest.approx(0.1) and s["good_fraction"] == pytest.approx(1 / 3)
    assert s["ttft"]["p99_s"] == pytest.approx(1.0 + 0.98 * 2.0)             # linear interpolation, as numpy
    assert s["itl"]["n"] == 10 + 10 + 20 and s["e2el"]["median_s"] == pytest.approx(3.0)
    assert s["output_throughput_per_user"] == pytest.approx(10.0)            # 1 / median TPOT
    assert s["joules_per_output_token"] == pytest.approx(2.0)               # 86 J / 43 tokens
    assert s["scheduler"] == {"kv_cache_usage_max": 0.6, "kv_cache_usage_mean": pytest.approx(0.4),
                              "running_mean": 2.5, "waiting_max": 1, "preempted": 1}


def test_serve_record_round_trips():
    p = LoadPoint(rate=None, max_concurrency=4, duration_s=1.0, requests=[_req(0, 0.1, 0.5, 5)],
                  extra={"future": 1})
    rec = ServeRecord(schema_version=1, config={"model": "m"}, points=[p])
    doc = json.loads(json.dumps(rec.to_dict()))
    assert ServeRecord.from_dict(doc) == rec and doc["points"][0]["future"] == 1


@pytest.mark.parametrize("args,needle", [
    (["--rate", "0"], "rates must be positive"),
    (["--rate", "fast"], "comma-separated numbers"),
    (["--rate", "2", "--slo", "latency=3s"], "KEY one of"),
    (["--rate", "2", "--dataset", "/nonexistent.jsonl"], "no such dataset file"),
    ([], "give --rate and/or --concurrency"),
])
def test_bad_input_is_one_line(args, needle):
    r = subprocess.run([sys.executable, "-m", "llmprobe", "serve", "--model", "tiny-llama", *args],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_a_short_sweep_on_the_real_engine(tmp_path):
    """Four points on tiny-llama: every request completes with its tokens, throughput follows the offered load
    below saturation, the engine's steps were timed over each point, and the record reads back."""
    pytest.importorskip("vllm")
    from llmprobe.serving import serve
    out = tmp_path / "serve.json"
    rec = serve("tiny-llama", rates=[2.0, 8.0, math.inf], concurrencies=[4], num_prompts=12, prompt_len=32,
                gen_len=8, slo={"ttft": 2.0, "tpot": 0.2}, out=str(out), engine_options={"enforce_eager": True},
                warmup=2, measure_ceilings=False)
    assert rec.status == "complete" and [p.rate for p in rec.points] == [2.0, 8.0, None, None]
    for p in rec.points:
        assert all(r.error is None and r.output_tokens == 8 and 0 < r.ttft_s <= r.latency_s for r in p.requests)
        assert sum(st.decode_tokens for st in p.steps) == 12 * 7 and sum(st.prefill_tokens for st in p.steps) == 12 * 32
        assert p.scheduler and max(s.running for s in p.scheduler) >= 1
    s2 = rec.points[0].summary({"ttft": 2.0})
    assert s2["request_throughput"] == pytest.approx(12 / rec.points[0].duration_s)
    assert rec.points[0].duration_s >= max(r.arrival_s for r in rec.points[0].requests)   # sent at their times
    assert max(s.running for s in rec.points[3].scheduler) <= 4                            # the concurrency cap held
    assert ServeRecord.from_dict(json.loads(out.read_text())) == rec


@pytest.mark.vllm
@pytest.mark.slow
def test_the_http_client_on_a_running_vllm_server(tmp_path):
    """vLLM's own OpenAI API server on tiny-llama (random weights, a word-level tokenizer written here): llmprobe
    serve --url times every request to it, each with exactly its tokens, and refuses a model it does not serve."""
    pytest.importorskip("vllm")
    import socket
    import time
    import urllib.request
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from llmprobe import resolve_model
    spec = resolve_model("tiny-llama")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, spec.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.WhitespaceSplit(), decoders.WordPiece(prefix="##")
    d = tmp_path / "model"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(d)
    (d / "config.json").write_text(json.dumps(spec.config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(d),
                               "--served-model-name", "tiny", "--load-format", "dummy", "--enforce-eager",
                               "--max-model-len", "128", "--port", str(port), "--kv-cache-memory-bytes", str(1 << 30)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            time.sleep(2)
            assert server.poll() is None, "the vLLM server exited"
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2)
                break
            except OSError:
                continue
        out = tmp_path / "http.json"
        r = subprocess.run([sys.executable, "-m", "llmprobe", "serve", "--model", "tiny-llama", "--url", url,
                            "--rate", "20,inf", "--num-prompts", "8", "--prompt-len", "24", "--gen-len", "6",
                            "--warmup", "1", "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        rec = ServeRecord.from_dict(json.loads(out.read_text()))
        assert rec.engine["served_model"] == "tiny" and rec.config["client"] == "http" and rec.ceilings is None
        for p in rec.points:
            for q in p.requests:
                assert q.error is None and q.output_tokens == 6 and q.ttft_s > 0 and q.latency_s >= q.ttft_s, q
                # one inter-chunk gap per chunk after the first, as bench serve counts them; a chunk carries every
                # token the server had ready when it was sent, so on a slow or busy host two tokens can share one
                assert 1 <= len(q.itl_s) <= 5 and all(g >= 0 for g in q.itl_s), q
            assert not p.steps          # the server's steps are not visible from its HTTP API
        r = subprocess.run([sys.executable, "-m", "llmprobe", "serve", "--model", "tiny-llama", "--url", url,
                            "--served-model", "other", "--rate", "1", "--out", str(tmp_path / "x.json")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "is not served at" in r.stderr
    finally:
        server.terminate()
        server.wait(timeout=60)
