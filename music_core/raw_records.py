"""Where records come from: every raw record of a local file, a folder, an Arrow snapshot or a
Hugging Face hub dataset, as ``(file, line, record)``, before any format is applied.

Kept apart from the format parsers (:mod:`music_core.format_parsers`) because finding and
decoding files (JSONL, JSON, Parquet, gzip, split names in a hub snapshot) is a different
question from what a record means; :mod:`music_core.formats` joins the two.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MusicError, RecordError
from .jsonl import iter_json_lines, read_text_utf8

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")


def iter_raw_records(path_or_id: str, split: str = "train", name: str | None = None, *,
                     allow_empty: bool = False) -> Iterator[tuple[str, int | None, Any]]:
    """Yield ``(file, line, record)`` from a local JSONL/JSON/Parquet file (``.jsonl.gz`` and
    ``.json.gz`` too), a folder of them, an Arrow snapshot folder (``Dataset.save_to_disk``), or a
    Hugging Face hub id (through ``datasets``; ``name`` is the dataset's config, e.g.
    HelpSteer3's ``preference``). Line numbers exist for JSONL only.

    A source that holds no record at all is a file error naming it ("nothing usable left"): an
    empty data file given to an evaluator must not become a report over 0 items. Only a run's
    own intermediate files, which may rightly be empty (synthesis that wrote no pair), pass
    ``allow_empty``; a folder is empty when all of its files are."""
    empty = True
    for row in _iter_source(path_or_id, split, name):
        empty = False
        yield row
    if empty and not allow_empty:
        raise RecordError(path_or_id, None, "holds no records: nothing usable left")


def _iter_source(path_or_id: str, split: str, name: str | None) -> Iterator[tuple[str, int | None, Any]]:
    path = Path(os.path.expanduser(path_or_id))
    if path.is_dir() and _is_arrow_snapshot(path):
        yield from _iter_arrow(path, split)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.name.endswith(LOCAL_SUFFIXES))
        if not files:
            raise RecordError(str(path), None, f"folder holds no {'/'.join(LOCAL_SUFFIXES)} files")
        # A hub snapshot keeps each split in its own files (data/filtered-00000-of-00001.parquet,
        # data/raw-...): read the configured split's files only, when the names say which.
        of_split = [f for f in files if split_of(f) == split]
        if of_split:
            files = of_split
        elif any(split_of(f) for f in files):
            found = sorted({s for f in files if (s := split_of(f))})
            raise RecordError(str(path), None, f"no files of split {split!r} (the folder has splits {found})")
        for f in files:
            yield from iter_raw_records(str(f), split, allow_empty=True)
        return
    if path.name.endswith(".gz") and path.exists():
        yield from _iter_gzip(path)
        return
    if path.suffix == ".jsonl" or (path.exists() and path.suffix not in (".json", ".parquet")):
        for lineno, obj in iter_json_lines(path):
            yield str(path), lineno, obj
        return
    if path.exists():
        import json

        if path.suffix == ".json":
            try:
                data = json.loads(read_text_utf8(path))
            except json.JSONDecodeError as exc:
                raise RecordError(str(path), exc.lineno, f"invalid JSON ({exc.msg})") from None
            rows = data if isinstance(data, list) else data.get("data", data.get(split, None))
            if not isinstance(rows, list):
                raise RecordError(str(path), None, "expected a JSON list of records")
            for i, row in enumerate(rows):
                yield f"{path}[{i}]", None, row
            return
        import datasets

        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        for i, row in enumerate(ds):
            yield f"{path}[{i}]", None, row
        return
    if path.name.endswith(LOCAL_SUFFIXES) or path_or_id.startswith((".", "/", "~")):
        raise RecordError(str(path), None, "file not found")
    yield from _iter_hub(path_or_id, split, name)


def _iter_gzip(path: Path) -> Iterator[tuple[str, int | None, Any]]:
    """A gzipped JSONL file (one record a line) or JSON file (a list of records)."""
    import gzip
    import json

    try:
        text = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise RecordError(str(path), None, f"not a readable gzip file ({exc})") from None
    lines = text.split(b"\n")
    if path.name.endswith(".json.gz"):
        try:
            data = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(str(path), getattr(exc, "lineno", None), f"invalid JSON ({exc})") from None
        rows = data if isinstance(data, list) else None
        if rows is None:
            raise RecordError(str(path), None, "expected a JSON list of records")
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", None, row
        return
    for lineno, raw in enumerate(lines, start=1):
        line = raw.decode("utf-8", errors="strict") if raw else ""
        if not line.strip():
            continue
        try:
            yield str(path), lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(str(path), lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None


def _is_arrow_snapshot(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or ((path / "state.json").exists() and any(path.glob("*.arrow")))


def _iter_arrow(path: Path, split: str) -> Iterator[tuple[str, int | None, Any]]:
    """A folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``: the split's)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise RecordError(str(path), None, f"no split {split!r} in this snapshot (it has {sorted(ds)})")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"{path}[{i}]", None, row


def split_of(file: Path) -> str | None:
    """The split a snapshot file belongs to, by the hub's naming (``<split>-00000-of-00001``,
    ``<split>.jsonl``), or None when the name does not say."""
    import re

    m = re.match(r"^([A-Za-z0-9_]+?)(-\d{5}-of-\d{5})?$", file.stem)
    if m and m.group(2):
        return m.group(1)
    return None


def _iter_hub(hub_id: str, split: str, name: str | None = None) -> Iterator[tuple[str, int | None, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, name, split=split)
    except Exception as exc:  # offline, unknown id, gated: say which and how to fix it
        raise MusicError(
            f"could not load dataset {hub_id!r} (split {split!r}) from the hub: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Offline? Pass a local file or folder path instead."
        ) from None
    for i, row in enumerate(ds):
        yield f"{hub_id}[{split}][{i}]", None, row
