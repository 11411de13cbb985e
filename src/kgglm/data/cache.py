"""A cache of parsed datasets: the arrays of a :class:`~kgglm.data.dataset.Dataset` in one ``.npz``.

Parsing the atomic files (pandas, factorising tokens, splitting, building the graph) takes about a
second on ml-100k; reading the parsed arrays back takes a few milliseconds and needs no pandas.
:func:`kgglm.data.loader.load_dataset` uses this module unless told not to.

* **Where**: ``$KGGLM_DATASET_CACHE`` (a folder; ``off``, ``0``, ``false`` or ``no`` turns the cache
  off), else ``$XDG_CACHE_HOME/kgglm/.parsed`` (``~/.cache/kgglm/.parsed``). The :data:`KEEP`
  most recently used files are kept, within :data:`MAX_BYTES`.
* **Key**: the SHA-256 of the resolved dataset folder, the size and modification time (ns) of
  every ``NAME.*`` file in it, every loader option that changes the result (split, seed, field
  names, ...), the format version and the source of the modules that parse. Any change of
  these gives another file name, so a stale entry is never read. The full key is stored in the
  file too and compared on reading.
* **Racy timestamps** (as git does): a dataset whose files changed less than :data:`RACY_SECONDS`
  ago is not cached, since a second change within the file system's timestamp granularity and with
  the same size would not change the key.
* **Safe to read**: plain arrays only (strings as fixed-width unicode, never objects), read with
  ``np.load(..., allow_pickle=False)``; written to a temporary file and renamed into place, so a
  reader never sees half a file. A file that cannot be read is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kgglm import durable
from kgglm.data.dataset import SPLITS, Dataset, Interactions
from kgglm.data.graph import CollaborativeGraph
from kgglm.data.locate import CHECKSUM_FILE, cache_dir
from kgglm.data.locate import find_dataset as find_folder  # the folder resolve_dataset returns when on disk

logger = logging.getLogger(__name__)

ENV = "KGGLM_DATASET_CACHE"
FORMAT = "kgglm-parsed-dataset"
VERSION = 1
KEEP = 16  # newest cache files kept in the folder
MAX_BYTES = 2 << 30  # and at most this much of them (the newest is always kept)
RACY_SECONDS = 2.0
OFF = ("off", "0", "false", "no")
# the modules whose code decides what a dataset parses to: a change of any of them is a new key
PARSER_MODULES = ("atomic.py", "dataset.py", "download.py", "graph.py", "loader.py", "locate.py", "splits.py",
                  "cache.py")

_STRINGS = ("user_tokens", "item_tokens", "entity_tokens", "relation_tokens", "item_names", "item_entity_tokens")
_INTS = ("kg_heads", "kg_relations", "kg_tails")
_GRAPH_SIZES = ("n_users", "n_items", "n_entities", "n_relations")
_GRAPH_ARRAYS = ("indptr", "neighbor", "relation", "_edge_keys")
# the fields this format stores; a class with other fields is not cached (rather than half stored)
_LAYOUT = {Dataset: {"name", *_STRINGS, *_INTS, "splits", "graph", "stats", "_cache"},
           Interactions: {"users", "items", "timestamps"},
           CollaborativeGraph: {*_GRAPH_SIZES, *_GRAPH_ARRAYS}}


def cache_folder() -> Path | None:
    """The cache folder, or None when ``$KGGLM_DATASET_CACHE`` turns the cache off."""
    value = os.environ.get(ENV)
    if value is not None and value.strip().lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    return cache_dir() / ".parsed"


def load_or_parse(dataset: str, options: Mapping[str, Any], parse: Callable[..., Dataset]) -> Dataset:
    """The dataset from the cache when an entry for exactly these files and options exists; else
    ``parse(dataset, **options)``, stored for next time (when the files are not too fresh)."""
    t0 = time.perf_counter()
    where = cache_folder()
    folder = find_folder(dataset, options.get("data_path")) if where is not None else None
    key = _key(dataset, folder, options) if folder is not None else None
    if key is None:
        return parse(dataset, **options)
    file = where / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', dataset)}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    data = _read(file, key)
    if data is not None:
        data.stats.update(path=str(folder), load_seconds=round(time.perf_counter() - t0, 3))
        logger.info("loaded %s from the dataset cache in %.3fs (%s)", dataset, data.stats["load_seconds"], file)
        with contextlib.suppress(OSError):
            os.utime(file)  # most recently used: kept by the pruning
        return data
    data = parse(dataset, **options)
    newest = max((s.st_mtime for s in _source_stats(folder, dataset).values()), default=0.0)
    if time.time() - newest < RACY_SECONDS:
        logger.debug("%s: files changed less than %.0fs ago; not cached", folder, RACY_SECONDS)
        return data
    _write(file, key, data)
    return data


# --------------------------------------------------------------------------------------- internals
def _source_stats(folder: Path, dataset: str) -> dict[str, os.stat_result]:
    """The dataset's files in ``folder`` (``NAME.*`` and the download checksums) and their stats."""
    return {e.name: e.stat() for e in os.scandir(folder)
            if e.is_file() and (e.name.startswith(f"{dataset}.") or e.name == CHECKSUM_FILE)}


def _key(dataset: str, folder: Path, options: Mapping[str, Any]) -> str | None:
    """The cache key as canonical JSON, or None when the options cannot be written as JSON."""
    here = Path(__file__).resolve().parent
    code = hashlib.sha256()
    for module in PARSER_MODULES:
        code.update((here / module).read_bytes())
    files = {n: [s.st_size, s.st_mtime_ns] for n, s in sorted(_source_stats(folder, dataset).items())}
    relevant = {k: v for k, v in options.items() if k not in ("data_path", "show_progress", "download")}
    try:
        return json.dumps({"format": FORMAT, "version": VERSION, "dataset": dataset,
                           "folder": str(folder.resolve()), "files": files, "options": relevant,
                           "code": code.hexdigest(), "numpy": np.__version__}, sort_keys=True)
    except TypeError:
        return None


def _layout_known() -> bool:
    return all({f.name for f in dataclasses.fields(cls)} == names for cls, names in _LAYOUT.items())


def _strings(values: np.ndarray) -> np.ndarray | None:
    """``values`` (str objects) as a fixed-width unicode array, or None when it would not round-trip
    (non-str values, trailing NUL characters)."""
    values = np.asarray(values, dtype=object)
    if not all(type(v) is str for v in values.tolist()):
        return None
    out = values.astype(str) if len(values) else np.zeros(0, dtype="<U1")
    return out if np.array_equal(out.astype(object), values) else None


def _arrays(data: Dataset) -> dict[str, np.ndarray] | None:
    if not _layout_known():
        return None
    arrays: dict[str, np.ndarray] = {}
    for name in _STRINGS:
        arrays[name] = _strings(getattr(data, name))
        if arrays[name] is None:
            return None
    for name in _INTS:
        arrays[name] = np.asarray(getattr(data, name))
    for split in SPLITS:
        part = data.splits[split]
        arrays[f"{split}.users"], arrays[f"{split}.items"] = np.asarray(part.users), np.asarray(part.items)
        if part.timestamps is not None:
            arrays[f"{split}.timestamps"] = np.asarray(part.timestamps)
    graph = data.graph
    for name in _GRAPH_ARRAYS:
        value = getattr(graph, name)
        if value is not None:
            arrays[f"graph.{name}"] = np.asarray(value)
    if set(data.splits) != set(SPLITS) or any(a.dtype == object for a in arrays.values()):
        return None
    return arrays


def _write(file: Path, key: str, data: Dataset) -> None:
    arrays = _arrays(data)
    if arrays is None:
        logger.debug("%s: dataset has values the cache format cannot store; not cached", data.name)
        return
    stats = {k: v for k, v in data.stats.items() if k != "load_seconds"}
    meta = {"key": key, "name": data.name, "stats": stats,
            "graph": {k: int(getattr(data.graph, k)) for k in _GRAPH_SIZES}}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with durable.open_atomic(file, "wb") as tmp:
            np.savez(tmp, __meta__=np.array(json.dumps(meta)), **arrays)
    except (OSError, TypeError, ValueError) as exc:
        logger.debug("could not write the dataset cache %s: %s", file, exc)
        return
    logger.debug("wrote the dataset cache %s", file)
    _prune(file.parent)


def _read(file: Path, key: str) -> Dataset | None:
    if not file.is_file() or not _layout_known():
        return None
    try:
        with np.load(file, allow_pickle=False) as npz:
            meta = json.loads(str(npz["__meta__"]))
            if meta.get("key") != key:
                return None
            arrays = {name: npz[name] for name in npz.files if name != "__meta__"}
        graph = CollaborativeGraph(**meta["graph"], **{k: arrays.get(f"graph.{k}") for k in _GRAPH_ARRAYS})
        splits = {s: Interactions(arrays[f"{s}.users"], arrays[f"{s}.items"], arrays.get(f"{s}.timestamps"))
                  for s in SPLITS}
        return Dataset(name=meta["name"], **{n: arrays[n].astype(object) for n in _STRINGS},
                       **{n: arrays[n] for n in _INTS}, splits=splits, graph=graph, stats=dict(meta["stats"]))
    except Exception as exc:  # noqa: BLE001 - a broken cache file is a miss, never an error
        logger.warning("ignoring the unreadable dataset cache %s (%s: %s)", file, type(exc).__name__, exc)
        return None


def _prune(folder: Path) -> None:
    """Keep the :data:`KEEP` most recently used cache files, and no more than :data:`MAX_BYTES`."""
    with contextlib.suppress(OSError):
        files = sorted(((p, p.stat()) for p in folder.glob("*.npz")), key=lambda f: f[1].st_mtime, reverse=True)
        total = 0
        for rank, (path, stat) in enumerate(files):
            total += stat.st_size
            if rank >= KEEP or (rank > 0 and total > MAX_BYTES):
                path.unlink(missing_ok=True)

