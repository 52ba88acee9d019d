"""How long `music inspect` takes to show its first page on a 30,000-pair file.

    python benchmarks/inspect_first_page.py [--pairs 30000]

Writes a pairs file of that size (the offline default's synthetic pairs repeated with new ids,
~5 KB a pair, or the built-in pairs when no run exists), starts `music inspect --pairs FILE` as a
subprocess, and measures from the process start to: the API answering, the first page of the
list and the first pair served, and (where Debian's chromium is installed) the page rendered in
a headless browser. Also when the background index (which the filters and search use) is done.
Writes benchmarks/results/inspect_first_page.json|md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def make_pairs(path: Path, n: int) -> int:
    source = ROOT / "runs" / "default" / "synth" / "pairs.jsonl"
    if not source.exists():
        source = ROOT / "plugins" / "music_data" / "data" / "pairs.jsonl"
    rows = [json.loads(line) for line in source.open() if line.strip()]
    with path.open("w") as fh:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            r["id"] = f"{r.get('id', 'pair')}-{i}"
            fh.write(json.dumps(r) + "\n")
    return path.stat().st_size


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        size = make_pairs(pairs, args.pairs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "music_core", "inspect", "--pairs", str(pairs), "--port", str(port)],
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                try:
                    get(base + "/api/meta")
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise SystemExit(proc.stderr.read().decode()[-2000:]) from None
                    time.sleep(0.02)
            t_api = time.perf_counter() - t0
            get(base + "/")
            get(base + "/api/pairs?offset=0&limit=50")
            get(base + "/api/pair/0")
            t_first = time.perf_counter() - t0
            t_browser = None
            chromium = shutil.which("chromium")
            if chromium:
                from playwright.sync_api import sync_playwright

                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=chromium, args=[
                        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
                    page = browser.new_page()
                    b0 = time.perf_counter()
                    page.goto(base + "/")
                    page.wait_for_selector("body[data-ready='1']")
                    t_browser = time.perf_counter() - b0
                    browser.close()
            while not json.loads(get(base + "/api/meta"))["ready"]:
                time.sleep(0.1)
            t_index = time.perf_counter() - t0
            t_search = time.perf_counter()
            hits = json.loads(get(base + "/api/pairs?q=budget"))["total"]
            t_search = time.perf_counter() - t_search
        finally:
            proc.kill()
            proc.wait()
    result = {"pairs": args.pairs, "file_mb": round(size / 1e6, 1), "api_up_s": round(t_api, 2),
              "first_page_served_s": round(t_first, 2), "browser_render_s": None if t_browser is None else round(t_browser, 2),
              "index_ready_s": round(t_index, 2), "search_s": round(t_search, 3), "search_hits": hits, "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inspect_first_page.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "inspect_first_page.md").write_text("\n".join([
        f"# music inspect on {args.pairs:,} pairs ({result['file_mb']} MB)", "",
        f"`python benchmarks/inspect_first_page.py --pairs {args.pairs}`, {os.cpu_count()} CPUs; times from the process start.", "",
        "| milestone | seconds |", "|---|---|",
        f"| API answering | {result['api_up_s']} |",
        f"| first page served (page, list of 50, first pair) | {result['first_page_served_s']} |",
        f"| page rendered in headless chromium (from navigation) | {result['browser_render_s']} |",
        f"| background index ready (filters, search) | {result['index_ready_s']} |",
        f"| a text search over every pair, once indexed | {result['search_s']} ({hits} hits) |", ""]))


if __name__ == "__main__":
    main()
