"""Throughput of the LLM execution layer against a loopback OpenAI-compatible server.

    python benchmarks/llm_throughput.py            # writes benchmarks/results/llm_throughput.{json,md}

The server runs in its own process (so it does not share the client's GIL) and answers after a
set latency. OpenAI-compatible endpoints (a base_url) use the provider's raw transport by
default; the ``-sdk`` row drives the same load through the official SDK (``options.http:
aiohttp``), in the same run. For each scenario the achieved requests/s is compared with the bound
min(concurrency / latency, rpm / 60); the overhead per call is the client-side mean latency
minus the server's. A second pass over the same requests on the same cache must make zero
wire calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from music_openai.provider import OpenAIProvider

from music_core.config.schema import EndpointConfig
from music_core.llm.cache import CallCache
from music_core.llm.executor import Endpoint, RoleUsage

RESULTS = Path(__file__).parent / "results"


async def drive(ep: Endpoint, n: int, tag: str) -> tuple[float, list[float], RoleUsage]:
    usage = RoleUsage()
    lat: list[float] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        await ep.chat([{"role": "user", "content": f"{tag}-{i}"}], usage)
        lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, lat, usage


def scenario(url: str, latency: float, concurrency: int, rpm: float | None, window: float, n: int, tag: str,
             http: str = "raw") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = CallCache(Path(tmp) / "cache.sqlite")
        cfg = EndpointConfig(provider="openai", model="bench", base_url=url + "/v1", api_key_env="BENCH_KEY",
                             concurrency=concurrency, rpm=rpm, rate_window_s=window, max_tokens=16, timeout_s=30,
                             options={"http": http})
        bound = concurrency / latency if rpm is None else min(concurrency / latency, rpm / 60.0)

        async def both():
            ep = Endpoint("bench", cfg, OpenAIProvider(cfg), cache)
            await drive(ep, min(64, n), f"warmup-{tag}")  # connections, imports, first-call costs
            first = await drive(ep, n, tag)
            second = await drive(ep, n, tag)
            await ep.provider.aclose()
            return first, second

        (elapsed, lat, usage), (elapsed2, _, usage2) = asyncio.run(both())
        cache.close()
    achieved = n / elapsed
    return {
        "scenario": tag, "transport": http, "requests": n, "latency_s": latency, "concurrency": concurrency, "rpm": rpm,
        "rate_window_s": window, "bound_rps": round(bound, 1), "achieved_rps": round(achieved, 1),
        "fraction_of_bound": round(achieved / bound, 3),
        "median_call_ms": round(sorted(lat)[len(lat) // 2] * 1000, 2),
        # time each concurrency slot spends per call beyond the server's latency
        "overhead_per_call_ms": round((concurrency / achieved - latency) * 1000, 2) if rpm is None else None,
        "wire_calls_first_run": usage.wire_calls, "wire_calls_repeat_run": usage2.wire_calls,
        "repeat_run_s": round(elapsed2, 3),
    }


def raw_round_trip_ms(url: str, n: int = 21) -> float:
    """Median time of a bare sequential HTTP request: the server's latency as the client sees it."""
    import httpx2

    async def go() -> float:
        async with httpx2.AsyncClient() as client:
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await client.get(url + "/v1/models", headers={"authorization": "Bearer x"})
                times.append(time.perf_counter() - t)
        return sorted(times)[n // 2] * 1000

    return round(asyncio.run(go()), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=RESULTS / "llm_throughput")
    args = ap.parse_args()
    os.environ["BENCH_KEY"] = "bench-key"
    server = subprocess.Popen([sys.executable, "-m", "music_openai.testing", "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        floor_ms = raw_round_trip_ms(url)
        rows = [
            scenario(url, args.latency, 64, None, 60.0, args.requests, "concurrency-64"),
            scenario(url, args.latency, 64, None, 60.0, args.requests, "concurrency-64-sdk", http="aiohttp"),
            scenario(url, args.latency, 16, None, 60.0, args.requests // 3, "concurrency-16"),
            scenario(url, args.latency, 64, 9000.0, 1.0, args.requests // 2, "rpm-9000-per-second-window"),
        ]
    finally:
        server.terminate()
        server.wait(10)
    result = {"benchmark": "llm_throughput", "machine": f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}",
              "date": time.strftime("%Y-%m-%d"), "raw_http_round_trip_ms": floor_ms, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cols = ["scenario", "transport", "bound_rps", "achieved_rps", "fraction_of_bound", "median_call_ms", "overhead_per_call_ms",
            "wire_calls_first_run", "wire_calls_repeat_run"]
    md = ["# LLM execution layer throughput", "", f"`python benchmarks/llm_throughput.py` on {result['machine']}, "
          f"{result['date']}; loopback OpenAI-compatible server in its own process, {args.latency * 1000:.0f} ms latency "
          f"(one bare HTTP request, no SDK, takes {floor_ms} ms here: the floor under any client).", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
