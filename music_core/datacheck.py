"""Can a stage read its data? The checks the preflight and the components' own ``preflight``
hooks share: a local file or folder exists with the columns its reader needs in its first rows,
a hub id is cached, or reachable when online. Kept apart from :mod:`music_core.preflight` (which
walks the stages) so that the contracts can use it without importing the pipeline."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextvars import ContextVar
from itertools import islice
from pathlib import Path
from typing import Any

from .errors import MusicError, Problem

_ASK_HUB: ContextVar[bool] = ContextVar("preflight_ask_hub", default=True)  # False: the dry run calls nothing
ROWS = 3  # the first rows whose columns are checked


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_local(value: str) -> bool:
    """A path, not a hub id: it exists, starts like a path, or ends like a data file."""
    from .formats import LOCAL_SUFFIXES

    return value.startswith((".", "/", "~")) or value.endswith(LOCAL_SUFFIXES) or Path(value).expanduser().exists()


def in_hub_cache(hub_id: str) -> bool:
    from huggingface_hub import constants

    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or str(Path(constants.HF_HOME) / "datasets")
    return (Path(datasets_cache) / hub_id.replace("/", "___")).exists() or \
        (Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}").exists()


def _hub_problem(hub_id: str) -> str | None:
    if in_hub_cache(hub_id):
        return None
    if hub_offline():
        return f"hub dataset {hub_id!r} is not in the local cache and the hub is offline (HF_HUB_OFFLINE): " \
               "download it first, or pass a local path"
    if not _ASK_HUB.get():
        return None
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(hub_id, timeout=15)
    except Exception as exc:  # unknown, private, gated without a token, no network: all stop the stage later
        return f"hub dataset {hub_id!r} cannot be reached: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def check_data(value: str, key: str, *, split: str = "train", name: str | None = None,
               columns: Iterable[str] = (), local_only: bool = False) -> list[Problem]:
    """Problems reading ``value`` (config ``key``): a local file or folder must exist and hold
    ``columns`` in its first rows (``"a|b"``: one of them); a hub id must be cached, or reachable
    when online (``local_only``: hub ids are not checked)."""
    columns = tuple(columns)
    if not looks_local(value):
        why = None if local_only else _hub_problem(value)
        return [Problem(key, why)] if why else []
    path = Path(value).expanduser()
    if not path.exists():
        return [Problem(key, f"{value}: file or folder not found")]
    if not columns:
        return []
    try:
        rows = _first_rows(path, split, name)
    except MusicError as exc:  # a bad file: RecordError names it and the line
        return [Problem(key, str(exc))]
    if not rows:
        return [Problem(key, f"{value}: no records")]
    for where, line, row in rows:
        have = set(row) if isinstance(row, dict) else set()
        missing = [c for c in columns if not have & set(c.split("|"))]
        if missing:
            at = f"{where}:{line}" if line is not None else where
            return [Problem(key, f"{at}: missing column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(repr(c.replace('|', ' or ')) for c in missing)} (has {sorted(have)})")]
    return []


def _first_rows(path: Path, split: str, name: str | None) -> list[tuple[str, int | None, Any]]:
    if path.suffix == ".parquet":  # the schema alone: no need to load the file through datasets
        import pyarrow.parquet as pq

        return [(str(path), None, dict.fromkeys(pq.read_schema(path).names))]
    from .formats import iter_raw_records

    return list(islice(iter_raw_records(str(path), split, name), ROWS))
