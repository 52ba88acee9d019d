"""Where a run keeps everything: the one place that spells out the output layout.

``<run.output_dir>/``
    ``llm-cache.sqlite`` (LLM calls and batch jobs; ``run.cache`` moves it),
    ``synth/pairs.jsonl`` with its side files (``pairs.errors.jsonl``, ``.filtered.jsonl``,
    ``.config.json``, ``.report.json``, ``.report.md``; shards ``pairs.shard-I-of-N.jsonl``;
    ``labels.jsonl``: human labels written by ``music inspect`` beside any pairs file),
    ``mix/`` (``train.jsonl``, ``eval.jsonl``, ``original_train.jsonl``, ``summary.json``,
    ``skipped_records.jsonl``: the original data's unusable records), ``synth/skipped_seeds.jsonl``,
    ``audit/`` (``audit.jsonl``: a record per pair; ``calibration.jsonl``: the known pairs;
    ``report.json``, ``report.md``),
    ``rm/<name>/`` (a Hugging Face folder and the stage's ``music_trainer.json``),
    ``eval/<evaluator>/`` (``results.json``, ``report.md``, figures, ``skipped_records.jsonl``),
    ``stages/<step>.json`` (the hash of each finished step's inputs), ``report.md``, ``report.json``.

Each stage's folder can be moved by its own ``output_dir`` key (``synth.output`` for the pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config.schema import MusicConfig

RM_MARKER = "music_trainer.json"  # {"trainer": NAME, ...} in every folder the training stage wrote
MIX_FILES = ("train", "eval", "original_train")
# The reward models `music run` trains, and the mix file each trains on.
RUN_RMS = {"baseline": "original_train", "music": "train"}
SKIPPED_RECORDS = "skipped_records.jsonl"  # beside a stage's output: every record its readers skipped, and why
LABELS = "labels.jsonl"  # human labels of a pairs file, beside it (`music inspect` writes them)
SIDE_SUFFIXES = {"errors": ".errors.jsonl", "filtered": ".filtered.jsonl", "config": ".config.json",
                 "report": ".report.json", "report-md": ".report.md"}


class RunPaths:
    def __init__(self, config: MusicConfig):
        self.config = config

    @property
    def root(self) -> Path:
        return Path(self.config.run.output_dir)

    @property
    def cache(self) -> Path:
        return Path(self.config.run.cache) if self.config.run.cache else self.root / "llm-cache.sqlite"

    # synthesis
    @property
    def synth_output(self) -> Path:
        s = self.config.synth
        base = Path(s.output) if s.output else self.root / "synth" / "pairs.jsonl"
        if s.shard:
            i, n = (int(x) for x in s.shard.split("/"))
            base = base.with_name(f"{base.stem}.shard-{i}-of-{n}{base.suffix}")
        return base

    def synth_side(self, kind: str) -> Path:
        return side_file(self.synth_output, kind)

    def synth_shards(self) -> list[Path]:
        """Shard files beside the (unsharded) pairs file, side files excluded."""
        s = self.config.synth
        base = Path(s.output) if s.output else self.root / "synth" / "pairs.jsonl"
        return sorted(p for p in base.parent.glob(f"{base.stem}.shard-*-of-*{base.suffix}")
                      if not is_side_file(p))

    # audit
    @property
    def audit_dir(self) -> Path:
        return Path(self.config.audit.output_dir) if self.config.audit.output_dir else self.root / "audit"

    def audit_file(self, name: str) -> Path:
        """``audit`` or ``calibration`` (JSONL), ``report`` (JSON) or ``report-md``."""
        return self.audit_dir / {"audit": "audit.jsonl", "calibration": "calibration.jsonl", "report": "report.json",
                                 "report-md": "report.md"}[name]

    # mix
    @property
    def mix_dir(self) -> Path:
        return Path(self.config.mix.output_dir) if self.config.mix.output_dir else self.root / "mix"

    def mix_file(self, name: str) -> Path:
        """``train``, ``eval``, ``original_train`` (JSONL) or ``summary`` (JSON)."""
        return self.mix_dir / (f"{name}.json" if name == "summary" else f"{name}.jsonl")

    # training
    def rm_dir(self, name: str | None = None) -> Path:
        base = Path(self.config.train.output_dir) if self.config.train.output_dir else self.root / "rm"
        return base / name if name else base

    def rm_marker(self, name: str) -> Path:
        return self.rm_dir(name) / RM_MARKER

    # evaluation
    @property
    def eval_root(self) -> Path:
        return Path(self.config.eval.output_dir) if self.config.eval.output_dir else self.root / "eval"

    def eval_dir(self, evaluator: str) -> Path:
        return self.eval_root / evaluator

    def eval_results(self, evaluator: str) -> Path:
        return self.eval_dir(evaluator) / "results.json"

    def eval_report(self, evaluator: str) -> Path:
        return self.eval_dir(evaluator) / "report.md"

    def eval_skipped(self, evaluator: str) -> Path:
        return self.eval_dir(evaluator) / SKIPPED_RECORDS

    # the run
    def stage_marker(self, step: str) -> Path:
        return self.root / "stages" / f"{step}.json"

    def stage_markers(self) -> list[Path]:
        return sorted((self.root / "stages").glob("*.json"))

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"


def labels_beside(pairs: str | Path) -> Path:
    """Where ``music inspect`` writes, and the audit looks for, the human labels of a pairs file."""
    return Path(pairs).parent / LABELS


def audit_beside(pairs: str | Path) -> Path:
    """The audit records of a pairs file that lies in a run's ``synth/`` folder (the default
    layout), for a tool handed only the pairs file."""
    return Path(pairs).parent.parent / "audit" / "audit.jsonl"


def side_file(pairs: Path, kind: str) -> Path:
    """A side file of a pairs file: errors, filtered, config, report (JSON) or report-md."""
    return pairs.with_name(pairs.stem + SIDE_SUFFIXES[kind])


def side_paths(pairs: Path) -> dict[str, Path]:
    """The side files synthesis writes beside its pairs: errors, filtered and config."""
    return {kind: side_file(pairs, kind) for kind in ("errors", "filtered", "config")}


def is_side_file(path: str | Path) -> bool:
    return str(path).endswith(tuple(SIDE_SUFFIXES.values()))
