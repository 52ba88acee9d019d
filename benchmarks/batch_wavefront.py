"""Batch mode as a wavefront: rounds and jobs do not grow with the number of conversations.

    python benchmarks/batch_wavefront.py     # writes benchmarks/results/batch_wavefront.{json,md}

Synthesizes N pairs (T=3, the paper's instruction contrast) through the openai provider against
a loopback server that speaks the Batch API, for several N. Each job takes ``--job-s`` seconds
at the server, as a real batch job takes minutes to hours. Reported per N: rounds, jobs,
requests, requests per job, wall time, and whether the pairs equal an online run's (same
server, same seeds). The expected shape: 3T - 1 = 8 rounds (one more where some conversation
retries a step: a rewrite or user turn its validator refused), one job each, whatever N; so the
wall time is about that many job latencies plus client work, not N-dependent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the scripted stand-in LLM the tests use

from music_openai.testing import openai_server  # noqa: E402
from synth_helpers import scripted_reply  # noqa: E402

from music_core.config import load_config  # noqa: E402
from music_core.context import RunContext  # noqa: E402
from music_core.plugins import get_plugins  # noqa: E402
from music_core.synth.runner import run_synth  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TOPICS = ["a budget for a trip", "learning Rust", "a sourdough starter", "a job interview", "a garden in shade",
          "a 10k race", "a wedding toast", "a home network", "tax on savings", "a slow laptop"]


def write_seeds(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"s{i}", "messages": [
                {"role": "user", "content": f"Help me plan {TOPICS[i % len(TOPICS)]} (case {i})."}]}) + "\n")


def synth(tmp: Path, url: str, seeds: Path, n: int, batch: bool) -> tuple[dict, float, list]:
    overrides = [f"run.output_dir={tmp}", "run.progress=false", "models.sim.provider=openai", "models.sim.model=m",
                 f"models.sim.base_url={url}/v1", "models.sim.api_key_env=BENCH_KEY", "models.sim.max_tokens=64",
                 "roles.user_simulator=sim", "roles.assistant_simulator=sim", "roles.contrast=sim",
                 "roles.policy=sim", "roles.judge=sim", "seeds.source=jsonl", f"seeds.path={seeds}",
                 f"seeds.limit={n}", "synth.turns=3", "synth.concurrency=64"]
    if batch:
        overrides += ["models.sim.mode=batch", "models.sim.batch_linger_s=0.2", "models.sim.batch_poll_s=0.1",
                      "models.sim.batch_poll_max_s=0.2"]
    ctx = RunContext(load_config(None, overrides), get_plugins().registry)
    t0 = time.perf_counter()
    stats = run_synth(ctx)
    wall = time.perf_counter() - t0
    pairs = [(p["id"], p["chosen"], p["rejected"]) for p in map(json.loads, open(ctx.synth_output()))]
    return stats, wall, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25,100,400")
    ap.add_argument("--job-s", type=float, default=1.0, help="how long each job runs at the server")
    args = ap.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in args.sizes.split(",")):
            seeds = Path(d) / f"seeds{n}.jsonl"
            write_seeds(seeds, n)
            with openai_server(reply=scripted_reply, seeded=True) as srv:
                online, online_wall, online_pairs = synth(Path(d) / f"online{n}", srv.url, seeds, n, batch=False)
            with openai_server(reply=scripted_reply, seeded=True, batch={"complete_after_s": args.job_s}) as srv:
                cpu0 = time.process_time()
                stats, wall, pairs = synth(Path(d) / f"batch{n}", srv.url, seeds, n, batch=True)
                cpu = time.process_time() - cpu0
                jobs = srv.batch_jobs
            b = stats["endpoints"]["sim"]["batch"]
            rows.append({"conversations": n, "pairs": stats["written"], "rounds": b["rounds"],
                         "jobs": b["jobs_submitted"], "requests": b["items_submitted"],
                         "requests_per_job": round(b["items_submitted"] / max(1, b["jobs_submitted"]), 1),
                         "online_wire_calls": sum(u["wire_calls"] for u in online["usage"].values()),
                         "batch_wall_s": round(wall, 2), "batch_cpu_s": round(cpu, 2),
                         "online_wall_s": round(online_wall, 2), "same_pairs_as_online": pairs == online_pairs,
                         "resubmitted": len(jobs.resubmitted())})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_wavefront.json").write_text(json.dumps({"job_s": args.job_s, "turns": 3, "rows": rows}, indent=2) + "\n")
    lines = ["# Batch mode as a wavefront", "", f"`python benchmarks/batch_wavefront.py` (T=3, each job {args.job_s:g} s at "
             "a loopback Batch API server, openai provider through the official SDK; online runs against an instant "
             "server for the equality check).", "",
             "| conversations | pairs | rounds | jobs | requests | requests/job | online wire calls | batch wall s | "
             "batch CPU s | same pairs as online | items sent twice |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['conversations']} | {r['pairs']} | {r['rounds']} | {r['jobs']} | {r['requests']} | "
                     f"{r['requests_per_job']} | {r['online_wire_calls']} | {r['batch_wall_s']} | {r['batch_cpu_s']} | "
                     f"{r['same_pairs_as_online']} | {r['resubmitted']} |")
    (RESULTS / "batch_wavefront.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
