"""Load a dataset of atomic files into a :class:`~kgglm.data.dataset.Dataset` with its graph and splits.

Conventions (stable across runs, independent of the machine):

* **Users and items** are numbered in order of first appearance in the interaction file (or in the
  train, valid, test files in that order for ``benchmark_filename``), like RecBole's remapping
  without its ``[PAD]`` at 0. Items are exactly the items that occur in the interactions; items
  only in ``.link``/``.item`` are ignored (debug log).
* **Linked items**: a KG entity named in ``.link`` for a known item *is* that item's node. An item
  linked to two different entities is an error, and so is an entity linked to two known items
  (one node cannot be two items); the message names both lines.
* **Entities** are the KG entities (heads and tails of ``.kg``) not linked to a known item,
  numbered in order of first appearance in ``.kg`` (row by row, head before tail).
* **Relations**: id 0 is ``ui_relation``; KG relations get 1.. in sorted token order.
* Duplicate interactions (same user and item) and duplicate triples are dropped, keeping the first
  (with ``benchmark_filename`` the files count in train, valid, test order, so a pair repeated in
  test is dropped there and nothing leaks from train). Ratings are kept out (no threshold filter).
* **Names**: an item's readable name is the first ``token_seq`` field of ``.item`` whose name contains
  'title' or 'name' (words joined by single spaces), else its token; entities keep their KG token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgglm.data.dataset import SPLITS, Dataset, Interactions, build_graph

if TYPE_CHECKING:
    import pandas as pd

    from kgglm.data.atomic import AtomicTable

# pandas, the atomic-file reader and the downloader are imported when a dataset is parsed: a dataset
# read back from the cache (kgglm.data.cache) needs none of them

logger = logging.getLogger(__name__)

FIELD_DEFAULTS = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "HEAD_ENTITY_ID_FIELD": "head_id",
    "RELATION_ID_FIELD": "relation_id",
    "TAIL_ENTITY_ID_FIELD": "tail_id",
    "ENTITY_ID_FIELD": "entity_id",
}
_CONFIG_KEYS = ("data_path", "eval_args", "seed", "benchmark_filename", "ui_relation", "show_progress", "item_name")


def load_dataset(
    dataset: str,
    *,
    data_path: str | Path | None = None,
    eval_args: dict | None = None,
    seed: int = 2024,
    benchmark_filename: list[str] | None = None,
    USER_ID_FIELD: str = "user_id",
    ITEM_ID_FIELD: str = "item_id",
    TIME_FIELD: str = "timestamp",
    HEAD_ENTITY_ID_FIELD: str = "head_id",
    RELATION_ID_FIELD: str = "relation_id",
    TAIL_ENTITY_ID_FIELD: str = "tail_id",
    ENTITY_ID_FIELD: str = "entity_id",
    ui_relation: str = "[UI-Relation]",
    show_progress: bool = False,
    download: bool = True,
    item_name: str = "title",
    cache: bool | None = None,
) -> Dataset:
    """Read ``DATA_PATH/NAME/NAME.{inter,kg,link,item}``, split the interactions and build the graph.

    Args mirror RecBole/hopwise config keys: ``eval_args`` (default ``{'split': {'RS': [0.8, 0.1,
    0.1]}, 'order': 'RO', 'group_by': 'user'}``), ``benchmark_filename`` (e.g. ``['train', 'valid',
    'test']`` reads the pre-split ``NAME.train.inter``... instead of splitting), the field names, and
    ``ui_relation``. ``item_name`` picks readable item names: ``'title'`` (the ``.item`` title) or
    ``'entity'`` (the linked KG entity token, e.g. DBpedia's ``Toy_Story``; the title when unlinked).
    ``data_path`` is resolved as in :func:`kgglm.data.download.resolve_dataset`.
    Raises :class:`~kgglm.data.atomic.DatasetError` with file, line and field on bad input.

    ``cache``: reuse the parsed arrays of an earlier call with the same files and options
    (:mod:`kgglm.data.cache`; the result is the same); None (default) caches unless
    ``$KGGLM_DATASET_CACHE`` is ``off``, False always parses.
    """
    options = {k: v for k, v in locals().items() if k not in ("dataset", "cache")}
    if cache is False:
        return _parse(dataset, **options)
    from kgglm.data.cache import load_or_parse

    return load_or_parse(dataset, options, _parse)


def _parse(dataset: str, *, data_path, eval_args, seed, benchmark_filename, USER_ID_FIELD, ITEM_ID_FIELD,
           TIME_FIELD, HEAD_ENTITY_ID_FIELD, RELATION_ID_FIELD, TAIL_ENTITY_ID_FIELD, ENTITY_ID_FIELD, ui_relation,
           show_progress, download, item_name) -> Dataset:
    """:func:`load_dataset` without the cache: parse the atomic files."""
    import pandas as pd

    from kgglm.data.atomic import DatasetError, read_atomic
    from kgglm.data.download import resolve_dataset
    from kgglm.data.splits import normalize_eval_args, split_indices

    t0 = time.perf_counter()
    uid, iid, tfield = USER_ID_FIELD, ITEM_ID_FIELD, TIME_FIELD
    folder = resolve_dataset(dataset, data_path, show_progress=show_progress, download=download)
    eval_args = normalize_eval_args(eval_args)

    # ---- interactions: one file, or the pre-split files in train, valid, test order
    if benchmark_filename:
        if len(benchmark_filename) != 3:
            raise DatasetError(f"benchmark_filename: got {benchmark_filename!r}; expected three suffixes "
                               "for train, valid and test, e.g. ['train', 'valid', 'test']")
        paths = [folder / f"{dataset}.{part}.inter" for part in benchmark_filename]
    else:
        paths = [folder / f"{dataset}.inter"]
    tables = [read_atomic(p, required=(uid, iid), usecols=(uid, iid, tfield)) for p in paths]
    for table in tables:
        _check_tokens(table, (uid, iid))
    user_str = np.concatenate([t.column(uid) for t in tables])
    item_str = np.concatenate([t.column(iid) for t in tables])
    has_time = all(tfield in t for t in tables)
    times = np.concatenate([t.column(tfield) for t in tables]) if has_time else None
    part_of_row = np.repeat(np.arange(len(tables)), [len(t) for t in tables])

    user_codes, user_tokens = pd.factorize(user_str)
    item_codes, item_tokens = pd.factorize(item_str)
    n_users, n_items = len(user_tokens), len(item_tokens)
    keep = ~pd.Series(user_codes.astype(np.int64) * n_items + item_codes).duplicated().to_numpy()
    if not keep.all():
        logger.debug("dropped %d duplicate interactions (kept the first)", int((~keep).sum()))
    users, items = user_codes[keep].astype(np.int64), item_codes[keep].astype(np.int64)
    times = times[keep] if times is not None else None
    part_of_row = part_of_row[keep]

    if benchmark_filename:
        parts = {name: np.flatnonzero(part_of_row == k) for k, name in enumerate(SPLITS)}
    else:
        parts = split_indices(users, eval_args=eval_args, timestamps=times, seed=seed)
    splits = {name: Interactions(users[idx], items[idx], None if times is None else times[idx])
              for name, idx in parts.items()}

    # ---- knowledge graph, links and names
    kg = read_atomic(folder / f"{dataset}.kg", required=(HEAD_ENTITY_ID_FIELD, RELATION_ID_FIELD,
                                                          TAIL_ENTITY_ID_FIELD))
    _check_tokens(kg, (HEAD_ENTITY_ID_FIELD, RELATION_ID_FIELD, TAIL_ENTITY_ID_FIELD))
    link = read_atomic(folder / f"{dataset}.link", required=(iid, ENTITY_ID_FIELD), allow_empty=True)
    _check_tokens(link, (iid, ENTITY_ID_FIELD))
    item_entity = _link_items(link, iid, ENTITY_ID_FIELD, pd.Index(item_tokens))

    heads, rels, tails = (kg.column(f) for f in (HEAD_ENTITY_ID_FIELD, RELATION_ID_FIELD, TAIL_ENTITY_ID_FIELD))
    kg_codes, kg_tokens = pd.factorize(np.column_stack([heads, tails]).ravel())
    rel_tokens = np.array(sorted(set(rels.tolist())), dtype=object)
    if ui_relation in set(rel_tokens):
        raise DatasetError(f"{kg.path}: KG relation '{ui_relation}' has the name of ui_relation; expected "
                           "a name not used by the KG (set ui_relation)")
    rel_ids = 1 + np.searchsorted(rel_tokens.astype(str), rels.astype(str))
    # entity token -> node: the linked item's node, or the next entity id in order of appearance
    linked = np.flatnonzero(item_entity != "")
    found = pd.Index(item_entity[linked]).get_indexer(kg_tokens)
    linked_item = np.where(found >= 0, linked[np.maximum(found, 0)] if len(linked) else -1, -1)
    is_entity = linked_item < 0
    entity_rank = np.cumsum(is_entity) - 1
    token_node = np.where(is_entity, n_users + n_items + entity_rank, n_users + linked_item)
    head_nodes, tail_nodes = token_node[kg_codes[0::2]], token_node[kg_codes[1::2]]
    kg_keep = ~pd.Series((head_nodes * (len(rel_tokens) + 1) + rel_ids) * len(token_node)
                         + kg_codes[1::2]).duplicated().to_numpy()
    if not kg_keep.all():
        logger.debug("dropped %d duplicate triples (kept the first)", int((~kg_keep).sum()))
    kg_heads, kg_rels, kg_tails = head_nodes[kg_keep], rel_ids[kg_keep].astype(np.int64), tail_nodes[kg_keep]
    entity_tokens = np.asarray(kg_tokens[is_entity], dtype=object)
    n_linked_in_kg = int((~is_entity).sum())
    linked_total = int((item_entity != "").sum())
    if linked_total > n_linked_in_kg:
        logger.debug("%d linked items have no triples in %s", linked_total - n_linked_in_kg, kg.path)

    item_tokens = np.asarray(item_tokens, dtype=object)
    if item_name not in ("title", "entity"):
        raise ValueError(f"item_name must be 'title' or 'entity', got {item_name!r}")
    item_names = _item_names(folder / f"{dataset}.item", iid, item_tokens)
    if item_name == "entity":
        item_names = np.where(item_entity != "", item_entity, item_names).astype(object)
    relation_tokens = np.concatenate([[ui_relation], rel_tokens]).astype(object)
    graph = build_graph(n_users, n_items, len(entity_tokens), len(relation_tokens), splits["train"],
                        kg_heads, kg_rels, kg_tails)
    ds = Dataset(
        name=dataset,
        user_tokens=np.asarray(user_tokens, dtype=object),
        item_tokens=item_tokens,
        entity_tokens=entity_tokens,
        relation_tokens=relation_tokens,
        item_names=item_names,
        item_entity_tokens=item_entity,
        splits=splits,
        kg_heads=kg_heads,
        kg_relations=kg_rels,
        kg_tails=kg_tails,
        graph=graph,
    )
    ds.stats.update({
        "dataset": dataset,
        "path": str(folder),
        "users": n_users,
        "items": n_items,
        "interactions": int(len(users)),
        **{f"{name}_interactions": len(splits[name]) for name in SPLITS},
        "kg_entities": int(len(kg_tokens)),
        "entities": int(len(entity_tokens)),
        "linked_items": linked_total,
        "linked_items_in_kg": n_linked_in_kg,
        "relations": int(len(relation_tokens)),
        "kg_relations": int(len(rel_tokens)),
        "triples": int(len(kg_heads)),
        "nodes": graph.n_nodes,
        "csr_edges": graph.n_edges,
        "split": "benchmark " + ",".join(benchmark_filename) if benchmark_filename else str(eval_args),
        "load_seconds": round(time.perf_counter() - t0, 3),
    })
    logger.info("loaded %s in %.2fs: %d users, %d items, %d interactions, %d triples", dataset,
             ds.stats["load_seconds"], n_users, n_items, len(users), len(kg_heads))
    return ds


def load_dataset_from_config(config: Mapping[str, Any], *, cache: bool | None = None) -> Dataset:
    """``load_dataset`` with arguments taken from a config mapping (RecBole key names; others ignored)."""
    kwargs = {k: config[k] for k in (*_CONFIG_KEYS, *FIELD_DEFAULTS) if config.get(k) is not None}
    return load_dataset(config["dataset"], cache=cache, **kwargs)


# --------------------------------------------------------------------------------------- internals
def _check_tokens(table: AtomicTable, fields: tuple[str, ...]) -> None:
    from kgglm.data.atomic import DatasetError

    for name in fields:
        empty = np.flatnonzero((table.frame[name] == "").to_numpy())
        if len(empty):
            raise DatasetError(f"{table.where(int(empty[0]), name)}: empty value (expected a token)")


def _first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """(index of the first value seen before, index of its first occurrence), or None."""
    import pandas as pd

    again = pd.Series(values).duplicated().to_numpy()
    if not again.any():
        return None
    k = int(np.flatnonzero(again)[0])
    return k, int(np.flatnonzero(values == values[k])[0])


def _link_items(link: AtomicTable, iid: str, eid: str, items: pd.Index) -> np.ndarray:
    """Linked entity token of every known item ('' when unlinked); errors on conflicting links."""
    from kgglm.data.atomic import DatasetError

    frame = link.frame[[iid, eid]]
    first = ~frame.duplicated().to_numpy()  # exact repeats of a link are harmless
    rows = np.flatnonzero(first)
    link_items, link_ents = frame[iid].to_numpy()[rows], frame[eid].to_numpy()[rows]
    repeat = _first_repeat(link_items)
    if repeat:
        k, prev = repeat
        raise DatasetError(
            f"{link.where(rows[k], iid)}: item '{link_items[k]}' is linked to entity '{link_ents[k]}' but "
            f"line {link.lines[rows[prev]]} links it to '{link_ents[prev]}' (expected one entity per item)")
    index = items.get_indexer(link_items)
    known = index >= 0
    if not known.all():
        logger.debug("%s: %d linked items are not in the interactions (ignored)", link.path, int((~known).sum()))
    rows, link_items, link_ents, index = rows[known], link_items[known], link_ents[known], index[known]
    repeat = _first_repeat(link_ents)
    if repeat:
        k, prev = repeat
        raise DatasetError(
            f"{link.where(rows[k], eid)}: entity '{link_ents[k]}' is linked to item '{link_items[k]}' but "
            f"line {link.lines[rows[prev]]} links it to item '{link_items[prev]}' (expected one item per "
            "entity)")
    out = np.full(len(items), "", dtype=object)
    out[index] = link_ents
    return out


def _item_names(path: Path, iid: str, item_tokens: np.ndarray) -> np.ndarray:
    import pandas as pd

    from kgglm.data.atomic import read_atomic, read_header

    names = item_tokens.copy()
    if not path.is_file():
        return names
    types = read_header(path)
    title = next((f for f, t in types.items() if t == "token_seq" and ("title" in f or "name" in f)), None)
    if title is None or iid not in types:
        logger.debug("%s: no item id or title field; items are named by their tokens", path)
        return names
    table = read_atomic(path, required=(iid, title), usecols=(iid, title), allow_empty=True)
    frame = table.frame.drop_duplicates(subset=iid, keep="first")
    words = frame[title].str.split().str.join(" ").to_numpy()
    index = pd.Index(frame[iid].to_numpy()).get_indexer(item_tokens)
    has = index >= 0
    found = words[index[has]]
    names[has] = np.where(found == "", item_tokens[has], found)
    return names
