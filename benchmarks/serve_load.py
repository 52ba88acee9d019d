"""`music serve` under load: batched against a naive server that scores each request alone
(OpenRLHF's serve_rm pattern), 1, 8 and 64 concurrent clients, MiniLM and SmolLM2-135M reward
models on CPU, in one run.

    python benchmarks/serve_load.py [--requests-per-client 4] [--models minilm,smollm2-135m]

Each client sends multi-turn conversations (1-4 user turns, answers of log-normal length, median
~60 words) one request at a time to POST /v1/rewards. The naive server is the same server with
batching off (one sequence per scoring call, no waiting). Reports throughput (conversations/s)
and p50/p99 latency. Both servers run as subprocesses on this machine; the clients are threads
of this process. Writes benchmarks/results/serve_load.json|md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from human_eval_cpu import conversations, reward_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CLIENTS = (1, 8, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, batched: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    knobs = [] if batched else ["--max-wait-ms", "0", "--max-batch-tokens", "1"]  # one sequence per call
    proc = subprocess.Popen([sys.executable, "-m", "music_core", "serve", "--rm", f"rm={folder}", "--port", str(port),
                             *knobs], env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.2)


def load(port: int, clients: int, per_client: int, convs: list) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for r in range(per_client):
            conv = convs[(k * per_client + r) % len(convs)]
            body = json.dumps({"conversations": [conv]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/rewards", data=body,
                                         headers={"content-type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=600) as resp:
                resp.read()
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "seconds": round(wall, 2),
            "throughput": round(len(lat) / wall, 2), "p50_s": round(statistics.median(lat), 3),
            "p99_s": round(lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--models", default="minilm,smollm2-135m")
    ap.add_argument("--short", action="store_true", help="one short exchange per conversation (~20 tokens) instead")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(0)
    convs = [c[: 2 * rng.randint(1, 4)] for c in conversations(512, seed=1)]
    if args.short:
        convs = [[{"role": "user", "content": " ".join(c[0]["content"].split()[:6])},
                  {"role": "assistant", "content": " ".join(c[1]["content"].split()[:8])}] for c in convs]
    out: dict = {"cpus": os.cpu_count(), "requests_per_client": args.requests_per_client, "short": args.short,
                 "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.models.split(","):
            folder = reward_model(backbone, Path(tmp) / backbone)
            rows = {}
            for mode in ("naive", "batched"):
                proc, port = start(folder, batched=mode == "batched")
                try:
                    load(port, 4, 1, convs)  # warm-up
                    rows[mode] = [load(port, c, args.requests_per_client, convs) for c in CLIENTS]
                finally:
                    proc.terminate()
                    proc.wait()
                print(backbone, mode, rows[mode], flush=True)
            out["models"][backbone] = rows
    RESULTS.mkdir(exist_ok=True)
    stem = "serve_load" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# music serve under load (CPU)", "",
             f"`python benchmarks/serve_load.py --requests-per-client {args.requests_per_client}"
             f"{' --short' if args.short else ''}`, {os.cpu_count()} CPUs; one conversation per request "
             f"({'one short exchange, ~20 tokens' if args.short else '1-4 user turns'}), clients are threads of the benchmark process, both servers "
             "on this machine. Naive: the same server scoring each request alone (OpenRLHF's pattern).", "",
             "| RM | clients | naive conv/s | batched conv/s | speed-up | naive p50 / p99 s | batched p50 / p99 s |",
             "|---|---|---|---|---|---|---|"]
    for backbone, rows in out["models"].items():
        for n, b in zip(rows["naive"], rows["batched"]):
            lines.append(f"| {backbone} | {n['clients']} | {n['throughput']} | {b['throughput']} | "
                         f"{b['throughput'] / n['throughput']:.2f}x | {n['p50_s']} / {n['p99_s']} | {b['p50_s']} / {b['p99_s']} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
