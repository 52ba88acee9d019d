"""Does a sample of the in-process ``local`` provider depend on what it was batched with?

The engine batches concurrent requests into one padded ``generate``; each sample is seeded by
(request, index, seed), so in exact arithmetic it is the same alone or in any batch. In floating
point the batch's shape can change rounding, and a sampled token near a boundary can flip, late in a
long answer. This generates 96-token answers (temperature 0.8, top-p 0.95, as the offline default)
to multi-turn prompts from the bundled pairs, alone and in batches of two sizes, per dtype, and
counts identical answers and the time taken.

    python benchmarks/local_batch_invariance.py        # writes results/local_batch_invariance.{json,md}
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from music_local.provider import LocalProvider  # noqa: E402

from music_core.config.schema import EndpointConfig  # noqa: E402
from music_core.llm.types import ProviderCall, SamplingParams  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def prompts(n: int) -> list[tuple[dict, ...]]:
    """The first three messages (user, assistant, user) of the bundled pairs' chosen sides."""
    rows = [json.loads(line) for line in open(ROOT / "plugins" / "music_data" / "data" / "pairs.jsonl")]
    out = []
    for row in rows:
        msgs = row["chosen"]
        if len(msgs) >= 3:
            out.append(tuple({"role": m["role"], "content": m["content"]} for m in msgs[:3]))
    return out[:n]


def call(msgs: tuple[dict, ...], seed: int) -> ProviderCall:
    return ProviderCall(msgs, SamplingParams(temperature=0.8, top_p=0.95, max_tokens=96, seed=seed), (seed,))


async def measure(dtype: str, convs: list[tuple[dict, ...]], small: int) -> dict:
    prov = LocalProvider(EndpointConfig(provider="local", model="smollm2-135m", options={"max_batch_size": 32, "dtype": dtype}))
    t0 = time.perf_counter()
    alone = [(await prov.generate(call(c, 1)))[0].text for c in convs]
    t1 = time.perf_counter()
    full = [c[0].text for c in await asyncio.gather(*(prov.generate(call(c, 1)) for c in convs))]
    t2 = time.perf_counter()
    part = [c[0].text for c in await asyncio.gather(*(prov.generate(call(c, 1)) for c in convs[:small]))]
    return {"dtype": dtype, "prompts": len(convs), "identical_in_batch_of_all": sum(a == b for a, b in zip(alone, full)),
            f"identical_in_batch_of_{small}": sum(a == b for a, b in zip(alone, part)), "small_batch": small,
            "seconds_alone": round(t1 - t0, 1), "seconds_batched": round(t2 - t1, 1)}


def main() -> None:
    convs, small = prompts(16), 9
    rows = [asyncio.run(measure(dtype, convs, small)) for dtype in ("bfloat16", "float32")]
    for r in rows:
        print(json.dumps(r), flush=True)
    result = {"benchmark": "local_batch_invariance", "cpu_cores": os.cpu_count(), "rows": rows,
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "local_batch_invariance.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Is a local sample independent of its batch?", "",
          f"`python benchmarks/local_batch_invariance.py` on {os.cpu_count()} CPU cores, {result['date']}: "
          f"SmolLM2-135M, 96-token answers at temperature 0.8 to {len(convs)} three-message prompts from the "
          "bundled pairs, each generated alone, then all in one batch, then the first "
          f"{small} in one batch.", "",
          f"| dtype | identical, batch of {len(convs)} | identical, batch of {small} | alone s | batched s |",
          "|---|---|---|---|---|"]
    md += [f"| {r['dtype']} | {r['identical_in_batch_of_all']}/{r['prompts']} | {r[f'identical_in_batch_of_{small}']}/{small} "
           f"| {r['seconds_alone']} | {r['seconds_batched']} |" for r in rows]
    (RESULTS / "local_batch_invariance.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
