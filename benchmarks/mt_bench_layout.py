"""MT-Bench's questions and the six human-study models' answers, put into the layout of
``lmsys/mt_bench_human_judgments`` (question_id, model_a, model_b, winner, judge, turn,
conversation_a, conversation_b), for checking the ``mt-bench-human`` reader on real text.

The human votes themselves are not in any public repository this machine can reach, so every
model pair is written once per question and turn with a placeholder winner (model_a) and judge
``expert_0``: the file tests reading (every real answer, the empty one included), not agreement.

    python benchmarks/mt_bench_layout.py DIR_WITH_question.jsonl_AND_model_answer/ OUT.jsonl

The inputs are FastChat's ``fastchat/llm_judge/data/mt_bench/`` files (Apache-2.0).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

MODELS = ("alpaca-13b", "claude-v1", "gpt-3.5-turbo", "gpt-4", "llama-13b", "vicuna-13b-v1.2")


def conversation(questions: list[str], answers: list[str]) -> list[dict[str, str]]:
    out = []
    for q, a in zip(questions, answers):
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


def build(src: Path) -> list[dict]:
    questions = {}
    for line in (src / "question.jsonl").read_text().splitlines():
        q = json.loads(line)
        questions[q["question_id"]] = q["turns"]
    answers: dict[str, dict[int, list[str]]] = {}
    for m in MODELS:
        answers[m] = {}
        for line in (src / "model_answer" / f"{m}.jsonl").read_text().splitlines():
            a = json.loads(line)
            answers[m][a["question_id"]] = a["choices"][0]["turns"]
    rows = []
    for qid, turns in sorted(questions.items()):
        for a, b in itertools.combinations(MODELS, 2):
            for turn in (1, 2):
                rows.append({"question_id": qid, "model_a": a, "model_b": b, "winner": "model_a", "judge": "expert_0",
                             "turn": turn, "conversation_a": conversation(turns, answers[a][qid]),
                             "conversation_b": conversation(turns, answers[b][qid])})
    return rows


if __name__ == "__main__":
    rows = build(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {sys.argv[2]}")
