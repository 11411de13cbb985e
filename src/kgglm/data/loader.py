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

import dataclasses
import logging
import time
from dataclasses import dataclass
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

@dataclass(frozen=True)
class DataConfig:
    """How a dataset is read and split; field names are the config's Data keys (RecBole/hopwise names).

    :func:`kgglm.settings.resolve` builds it from the run config (the defaults in
    ``configs/overall.yaml``); the field defaults here serve code and tests that call
    :func:`load_dataset` by hand (``load_dataset('ml-100k', data_path=...)``). ``eval_args`` (default
    ``{'split': {'RS': [0.8, 0.1, 0.1]}, 'order': 'RO', 'group_by': 'user'}``), ``benchmark_filename``
    (e.g. ``('train', 'valid', 'test')`` reads the pre-split ``NAME.train.inter``... instead of
    splitting), the field names and ``ui_relation``. ``item_name`` picks readable item names:
    ``'title'`` (the ``.item`` title) or ``'entity'`` (the linked KG entity token, e.g. DBpedia's
    ``Toy_Story``; the title when unlinked). ``data_path`` is resolved as in
    :func:`kgglm.data.download.resolve_dataset`; ``download``: fetch a known dataset missing there.
    """

    data_path: str | Path | None = None
    eval_args: dict | None = None
    seed: int = 2024
    benchmark_filename: tuple[str, ...] | None = None
    USER_ID_FIELD: str = "user_id"
    ITEM_ID_FIELD: str = "item_id"
    TIME_FIELD: str = "timestamp"
    HEAD_ENTITY_ID_FIELD: str = "head_id"
    RELATION_ID_FIELD: str = "relation_id"
    TAIL_ENTITY_ID_FIELD: str = "tail_id"
    ENTITY_ID_FIELD: str = "entity_id"
    ui_relation: str = "[UI-Relation]"
    show_progress: bool = False
    download: bool = True
    item_name: str = "title"

    def __post_init__(self) -> None:
        if self.item_name not in ("title", "entity"):
            raise ValueError(f"item_name must be 'title' or 'entity', got {self.item_name!r}")

    @property
    def kg_fields(self) -> tuple[str, str, str]:
        return self.HEAD_ENTITY_ID_FIELD, self.RELATION_ID_FIELD, self.TAIL_ENTITY_ID_FIELD


def load_dataset(dataset: str, options: DataConfig | None = None, *, cache: bool | None = None,
                 **fields: Any) -> Dataset:
    """Read ``DATA_PATH/NAME/NAME.{inter,kg,link,item}``, split the interactions and build the graph.

    ``options``: a :class:`DataConfig` (a run's is ``kgglm.settings.resolve(config).data``); or its
    fields as keyword arguments (``fields`` also replace those of ``options``).
    Raises :class:`~kgglm.data.atomic.DatasetError` with file, line and field on bad input.

    ``cache``: reuse the parsed arrays of an earlier call with the same files and options
    (:mod:`kgglm.data.cache`; the result is the same); None (default) caches unless
    ``$KGGLM_DATASET_CACHE`` is ``off``, False always parses.
    """
    options = DataConfig(**fields) if options is None else dataclasses.replace(options, **fields)
    values = dataclasses.asdict(options)
    if values["benchmark_filename"] is not None:
        values["benchmark_filename"] = list(values["benchmark_filename"])
    if cache is False:
        return _parse(dataset, **values)
    from kgglm.data.cache import load_or_parse

    return load_or_parse(dataset, values, _parse)


@dataclass(frozen=True)
class _KG:
    """The KG triples as node ids, the entity and relation tokens, and the link counts."""

    heads: np.ndarray
    relations: np.ndarray
    tails: np.ndarray
    entity_tokens: np.ndarray
    relation_tokens: np.ndarray  # ui_relation first
    kg_entities: int  # distinct heads and tails, linked items included
    linked_items: int
    linked_items_in_kg: int


def _parse(dataset: str, **options) -> Dataset:
    """:func:`load_dataset` without the cache (its keyword arguments but ``cache``): parse the atomic files."""
    from kgglm.data.download import resolve_dataset
    from kgglm.data.splits import normalize_eval_args

    t0 = time.perf_counter()
    opt = DataConfig(**options)
    folder = resolve_dataset(dataset, opt.data_path, show_progress=opt.show_progress, download=opt.download)
    eval_args = normalize_eval_args(opt.eval_args)
    users, items, times, user_tokens, item_tokens, splits = _read_interactions(folder, dataset, opt, eval_args)
    n_users, n_items = len(user_tokens), len(item_tokens)
    item_entity, kg = _read_kg(folder, dataset, opt, item_tokens, n_users)
    item_tokens = np.asarray(item_tokens, dtype=object)
    item_names = _item_names(folder / f"{dataset}.item", opt.ITEM_ID_FIELD, item_tokens)
    if opt.item_name == "entity":
        item_names = np.where(item_entity != "", item_entity, item_names).astype(object)
    graph = build_graph(n_users, n_items, len(kg.entity_tokens), len(kg.relation_tokens), splits["train"],
                        kg.heads, kg.relations, kg.tails)
    ds = Dataset(name=dataset, user_tokens=np.asarray(user_tokens, dtype=object), item_tokens=item_tokens,
                 entity_tokens=kg.entity_tokens, relation_tokens=kg.relation_tokens, item_names=item_names,
                 item_entity_tokens=item_entity, splits=splits, kg_heads=kg.heads, kg_relations=kg.relations,
                 kg_tails=kg.tails, graph=graph)
    ds.stats.update({
        "dataset": dataset,
        "path": str(folder),
        "users": n_users,
        "items": n_items,
        "interactions": int(len(users)),
        **{f"{name}_interactions": len(splits[name]) for name in SPLITS},
        "kg_entities": kg.kg_entities,
        "entities": int(len(kg.entity_tokens)),
        "linked_items": kg.linked_items,
        "linked_items_in_kg": kg.linked_items_in_kg,
        "relations": int(len(kg.relation_tokens)),
        "kg_relations": int(len(kg.relation_tokens)) - 1,
        "triples": int(len(kg.heads)),
        "nodes": graph.n_nodes,
        "csr_edges": graph.n_edges,
        "split": "benchmark " + ",".join(opt.benchmark_filename) if opt.benchmark_filename else str(eval_args),
        "load_seconds": round(time.perf_counter() - t0, 3),
    })
    logger.info("loaded %s in %.2fs: %d users, %d items, %d interactions, %d triples", dataset,
                ds.stats["load_seconds"], n_users, n_items, len(users), len(kg.heads))
    return ds


def _read_interactions(folder: Path, dataset: str, opt: DataConfig, eval_args: dict):
    """``(users, items, times, user tokens, item tokens, splits)``: the interaction file (or the pre-split
    files in train, valid, test order), de-duplicated, numbered and split."""
    import pandas as pd

    from kgglm.data.atomic import DatasetError, read_atomic
    from kgglm.data.splits import split_indices

    uid, iid, tfield = opt.USER_ID_FIELD, opt.ITEM_ID_FIELD, opt.TIME_FIELD
    benchmark = opt.benchmark_filename
    if benchmark:
        if len(benchmark) != 3:
            raise DatasetError(f"benchmark_filename: got {benchmark!r}; expected three suffixes "
                               "for train, valid and test, e.g. ['train', 'valid', 'test']")
        paths = [folder / f"{dataset}.{part}.inter" for part in benchmark]
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
    keep = ~pd.Series(user_codes.astype(np.int64) * len(item_tokens) + item_codes).duplicated().to_numpy()
    if not keep.all():
        logger.debug("dropped %d duplicate interactions (kept the first)", int((~keep).sum()))
    users, items = user_codes[keep].astype(np.int64), item_codes[keep].astype(np.int64)
    times = times[keep] if times is not None else None
    part_of_row = part_of_row[keep]
    if benchmark:
        parts = {name: np.flatnonzero(part_of_row == k) for k, name in enumerate(SPLITS)}
    else:
        parts = split_indices(users, eval_args=eval_args, timestamps=times, seed=opt.seed)
    splits = {name: Interactions(users[idx], items[idx], None if times is None else times[idx])
              for name, idx in parts.items()}
    return users, items, times, user_tokens, item_tokens, splits


def _read_kg(folder: Path, dataset: str, opt: DataConfig, item_tokens, n_users: int) -> tuple[np.ndarray, _KG]:
    """The items' linked entity tokens ('' when unlinked) and the KG (``.kg`` and ``.link``) as node ids."""
    import pandas as pd

    from kgglm.data.atomic import DatasetError, read_atomic

    iid, eid = opt.ITEM_ID_FIELD, opt.ENTITY_ID_FIELD
    kg = read_atomic(folder / f"{dataset}.kg", required=opt.kg_fields)
    _check_tokens(kg, opt.kg_fields)
    link = read_atomic(folder / f"{dataset}.link", required=(iid, eid), allow_empty=True)
    _check_tokens(link, (iid, eid))
    item_entity = _link_items(link, iid, eid, pd.Index(item_tokens))

    heads, rels, tails = (kg.column(f) for f in opt.kg_fields)
    kg_codes, kg_tokens = pd.factorize(np.column_stack([heads, tails]).ravel())
    rel_tokens = np.array(sorted(set(rels.tolist())), dtype=object)
    if opt.ui_relation in set(rel_tokens):
        raise DatasetError(f"{kg.path}: KG relation '{opt.ui_relation}' has the name of ui_relation; expected "
                           "a name not used by the KG (set ui_relation)")
    rel_ids = 1 + np.searchsorted(rel_tokens.astype(str), rels.astype(str))
    # entity token -> node: the linked item's node, or the next entity id in order of appearance
    linked = np.flatnonzero(item_entity != "")
    found = pd.Index(item_entity[linked]).get_indexer(kg_tokens)
    linked_item = np.where(found >= 0, linked[np.maximum(found, 0)] if len(linked) else -1, -1)
    is_entity = linked_item < 0
    entity_rank = np.cumsum(is_entity) - 1
    token_node = np.where(is_entity, n_users + len(item_tokens) + entity_rank, n_users + linked_item)
    head_nodes, tail_nodes = token_node[kg_codes[0::2]], token_node[kg_codes[1::2]]
    kg_keep = ~pd.Series((head_nodes * (len(rel_tokens) + 1) + rel_ids) * len(token_node)
                         + kg_codes[1::2]).duplicated().to_numpy()
    if not kg_keep.all():
        logger.debug("dropped %d duplicate triples (kept the first)", int((~kg_keep).sum()))
    n_linked_in_kg = int((~is_entity).sum())
    linked_total = int((item_entity != "").sum())
    if linked_total > n_linked_in_kg:
        logger.debug("%d linked items have no triples in %s", linked_total - n_linked_in_kg, kg.path)
    return item_entity, _KG(heads=head_nodes[kg_keep], relations=rel_ids[kg_keep].astype(np.int64),
                            tails=tail_nodes[kg_keep], entity_tokens=np.asarray(kg_tokens[is_entity], dtype=object),
                            relation_tokens=np.concatenate([[opt.ui_relation], rel_tokens]).astype(object),
                            kg_entities=int(len(kg_tokens)), linked_items=linked_total,
                            linked_items_in_kg=n_linked_in_kg)


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
