"""Train/valid/test split of the knowledge-graph triples, for knowledge completion (h, r, ?).

Where the triples come from (``NAME`` is the dataset, ``DIR`` its folder):

* ``DIR/NAME.train.kg`` and ``DIR/NAME.test.kg`` exist (the KGGLM paper's ML1M): they are the train
  and test triples; ``DIR/NAME.valid.kg`` is the valid part when present, otherwise a seeded
  ``kg_eval_args.valid_ratio`` share of the train triples becomes valid.
* otherwise the de-duplicated triples of the loaded dataset (``NAME.kg``) are split at random with
  the ``kg_eval_args.split`` ratios (RecBole style ``{RS: [0.8, 0.1, 0.1]}``), seeded.

Triples are node ids (head, tail) and relation ids consistent with the loaded
:class:`~kgglm.data.dataset.Dataset` (tokens are mapped with its entity and item-link tables).

**De-duplication.** The collaborative graph is undirected (each edge is stored both ways), so a
triple ``(h, r, t)`` and its reverse ``(t, r, h)`` are the same edge. A valid or test triple whose
edge is already in train is dropped (the paper's ML1M split was made before de-duplication), and
a test triple whose edge is in valid is dropped from test; each drop is logged with its count.

**Train-only graph.** :attr:`KGSplit.dataset` is the loaded dataset with ``kg_heads``/``kg_relations``/
``kg_tails`` and the graph rebuilt from the *train* triples (plus the user-item training edges), so
pre-training walks, fine-tuning paths and decoding constraints never see a valid or test triple.
Node and relation ids (hence the vocabulary) are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgglm.data.atomic import DatasetError, read_atomic
from kgglm.data.dataset import Dataset, build_graph
from kgglm.data.splits import _splitmix64

logger = logging.getLogger(__name__)

KG_SPLITS = ("train", "valid", "test")
# Proposed config key (overall.yaml), with its default:
#   # Knowledge completion (task kg_completion): how the KG triples are split into train/valid/test.
#   kg_eval_args:
#     # {RS: [train, valid, test]} ratios of a seeded random split of NAME.kg (used when there is no NAME.train.kg).
#     split: {RS: [0.8, 0.1, 0.1]}
#     # With pre-split NAME.train.kg/NAME.test.kg but no NAME.valid.kg: share of train triples held out as valid.
#     valid_ratio: 0.1
DEFAULT_KG_EVAL_ARGS: dict[str, Any] = {"split": {"RS": [0.8, 0.1, 0.1]}, "valid_ratio": 0.1}


@dataclass(frozen=True)
class KGSplit:
    """Split triples as int64 ``[N, 3]`` arrays of (head node, relation id, tail node), and the
    dataset whose graph holds only the train triples (see module docstring)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    dataset: Dataset
    stats: dict

    def triples(self, split: str) -> np.ndarray:
        if split not in KG_SPLITS:
            raise ValueError(f"split must be one of {KG_SPLITS}, got {split!r}")
        return getattr(self, split)


def normalize_kg_eval_args(args: Mapping | None) -> dict[str, Any]:
    """Fill defaults of ``kg_eval_args`` and validate them (clear errors)."""
    out = {**DEFAULT_KG_EVAL_ARGS, **{k: v for k, v in (args or {}).items() if v is not None}}
    unknown = set(out) - set(DEFAULT_KG_EVAL_ARGS)
    if unknown:
        raise DatasetError(f"kg_eval_args: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_KG_EVAL_ARGS)}")
    split = out["split"]
    if not isinstance(split, Mapping) or list(split) != ["RS"]:
        raise DatasetError(f"kg_eval_args.split: got {split!r}; expected {{'RS': [train, valid, test]}}")
    ratios = [float(r) for r in split["RS"]]
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise DatasetError(f"kg_eval_args.split.RS: got {split['RS']!r}; expected 3 non-negative ratios, train > 0")
    out["split"] = {"RS": [r / sum(ratios) for r in ratios]}
    vr = float(out["valid_ratio"])
    if not 0 <= vr < 1:
        raise DatasetError(f"kg_eval_args.valid_ratio: got {vr}; expected a number in [0, 1)")
    out["valid_ratio"] = vr
    return out


# ------------------------------------------------------------------------------------ helpers
def edge_keys(triples: np.ndarray, n_nodes: int, n_relations: int) -> np.ndarray:
    """Direction-free int64 key of each triple: ``(min(h,t) * R + r) * N + max(h,t)``."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    lo, hi = np.minimum(t[:, 0], t[:, 2]), np.maximum(t[:, 0], t[:, 2])
    return (lo * n_relations + t[:, 1]) * n_nodes + hi


def _first_unique_edges(triples: np.ndarray, n_nodes: int, n_rel: int) -> np.ndarray:
    """Triples with repeated edges (also reversed ones) removed, first occurrence kept, order kept."""
    keep = ~pd.Series(edge_keys(triples, n_nodes, n_rel)).duplicated().to_numpy()
    return triples[keep]


def _drop_seen(part: np.ndarray, seen: np.ndarray, n_nodes: int, n_rel: int, what: str) -> np.ndarray:
    """``part`` without the triples whose edge is in ``seen`` (logged with ``what``)."""
    if len(part) == 0 or len(seen) == 0:
        return part
    dup = np.isin(edge_keys(part, n_nodes, n_rel), edge_keys(seen, n_nodes, n_rel))
    if dup.any():
        logger.info("kg split: dropped %d of %d %s (their edge is already in an earlier split)",
                 int(dup.sum()), len(part), what)
    return part[~dup]


def seeded_split(triples: np.ndarray, ratios: list[float], seed: int) -> list[np.ndarray]:
    """Split rows into parts of sizes ``floor(ratio * n)`` (train gets the rest), seeded.

    The order is a SplitMix64 hash of (seed, row index) so it is the same on every machine.
    Rows keep their original order within each part.
    """
    n = len(triples)
    key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(np.arange(n, dtype=np.uint64)))
    order = np.argsort(key, kind="stable")
    sizes = [int(np.floor(r * n)) for r in ratios[1:]]
    n_train = n - sum(sizes)
    bounds = np.cumsum([0, n_train, *sizes])
    return [triples[np.sort(order[bounds[i]:bounds[i + 1]])] for i in range(len(ratios))]


def _token_nodes(data: Dataset) -> pd.Index:
    """Index from a KG token to its node id (linked items first, then entities), as the loader maps."""
    linked = np.flatnonzero(np.asarray(data.item_entity_tokens, dtype=object) != "")
    tokens = np.concatenate([np.asarray(data.item_entity_tokens, dtype=object)[linked],
                             np.asarray(data.entity_tokens, dtype=object)]).astype(str)
    nodes = np.concatenate([linked + data.n_users, np.arange(data.n_entities) + data.n_users + data.n_items])
    return pd.Series(nodes.astype(np.int64), index=pd.Index(tokens))


def read_kg_file(path: Path, data: Dataset, fields: tuple[str, str, str] = ("head_id", "relation_id", "tail_id")
                 ) -> np.ndarray:
    """Triples of an atomic ``.kg`` file as node/relation ids of ``data``; unknown tokens are dropped
    (with a warning: they name entities the dataset's ``NAME.kg`` does not have)."""
    table = read_atomic(path, required=fields, usecols=fields)
    heads, rels, tails = (table.column(f).astype(str) for f in fields)
    node_of = _token_nodes(data)
    h = node_of.reindex(heads).to_numpy(dtype=np.float64, na_value=np.nan)
    t = node_of.reindex(tails).to_numpy(dtype=np.float64, na_value=np.nan)
    rel_index = pd.Index(np.asarray(data.relation_tokens, dtype=object).astype(str))
    r = rel_index.get_indexer(rels)
    ok = ~np.isnan(h) & ~np.isnan(t) & (r > 0)
    if not ok.all():
        logger.warning("%s: dropped %d of %d triples with a head, relation or tail unknown to the dataset",
                    path, int((~ok).sum()), len(ok))
    return np.column_stack([h[ok], r[ok], t[ok]]).astype(np.int64)


def train_only_dataset(data: Dataset, train: np.ndarray) -> Dataset:
    """``data`` with its KG triples and graph restricted to ``train`` (plus user-item train edges)."""
    train = np.asarray(train, dtype=np.int64).reshape(-1, 3)
    graph = build_graph(data.n_users, data.n_items, data.n_entities, data.n_relations, data.splits["train"],
                        train[:, 0], train[:, 1], train[:, 2])
    stats = dict(data.stats, triples=len(train), csr_edges=graph.n_edges, kg_graph="train triples only")
    # a new Dataset derives its own artefacts: nothing derived from the full graph carries over
    return dataclasses.replace(data, kg_heads=train[:, 0].copy(), kg_relations=train[:, 1].copy(),
                               kg_tails=train[:, 2].copy(), graph=graph, stats=stats)


# ------------------------------------------------------------------------------------ main entry
def load_kg_split(data: Dataset, *, kg_eval_args: Mapping | None = None, seed: int = 2024,
                  folder: str | Path | None = None,
                  fields: tuple[str, str, str] = ("head_id", "relation_id", "tail_id")) -> KGSplit:
    """Split the KG triples of ``data`` (see module docstring) and build the train-only dataset.

    ``folder`` is where ``NAME.train.kg``... are looked for (default: ``data.stats['path']``; without
    one, e.g. a synthetic dataset, the triples of ``data`` are split at random).
    """
    args = normalize_kg_eval_args(kg_eval_args)
    n_nodes, n_rel = data.graph.n_nodes, data.n_relations
    folder = Path(folder) if folder is not None else (Path(data.stats["path"]) if data.stats.get("path") else None)
    pre = {s: folder / f"{data.name}.{s}.kg" for s in KG_SPLITS} if folder is not None else {}
    if pre and pre["train"].is_file() and pre["test"].is_file():
        source = f"pre-split {data.name}.train.kg/.test.kg"
        parts = {s: read_kg_file(p, data, fields) for s, p in pre.items() if p.is_file()}
        raw = {s: len(v) for s, v in parts.items()}
        train = _first_unique_edges(parts["train"], n_nodes, n_rel)
        # de-duplicate test against the whole train file before any valid triples are carved out of it
        parts["test"] = _drop_seen(_first_unique_edges(parts["test"], n_nodes, n_rel), train, n_nodes, n_rel,
                                   "test triples also in train")
        if "valid" in parts:
            source += " + .valid.kg"
            valid = parts["valid"]
        else:
            source += f" (valid: seeded {args['valid_ratio']:.0%} of train)"
            vr = args["valid_ratio"]
            train, valid = seeded_split(train, [1 - vr, vr], seed)
    else:
        source = f"seeded split {args['split']['RS']} of {data.name} KG"
        triples = np.column_stack([data.kg_heads, data.kg_relations, data.kg_tails]).astype(np.int64)
        raw = {"all": len(triples)}
        unique = _first_unique_edges(triples, n_nodes, n_rel)
        if len(unique) < len(triples):
            logger.info("kg split: dropped %d reversed duplicate triples before splitting", len(triples) - len(unique))
        train, valid, test_ = seeded_split(unique, args["split"]["RS"], seed)
        parts = {"test": test_}
    valid = _drop_seen(_first_unique_edges(valid, n_nodes, n_rel), train, n_nodes, n_rel, "valid triples in train")
    test = _first_unique_edges(parts["test"], n_nodes, n_rel)
    test = _drop_seen(test, train, n_nodes, n_rel, "test triples in train")
    test = _drop_seen(test, valid, n_nodes, n_rel, "test triples in valid")
    train_nodes = np.unique(train[:, [0, 2]])
    stats = {"kg_split": source, "kg_split_raw": raw, "kg_train": len(train), "kg_valid": len(valid),
             "kg_test": len(test), "kg_test_unseen_node": int((~np.isin(test[:, [0, 2]], train_nodes)).any(1).sum()),
             # identifies the exact split, so a checkpoint pre-trained on another one is refused
             "kg_train_sha1": hashlib.sha1(np.ascontiguousarray(train, dtype=np.int64).tobytes()).hexdigest()[:16]}
    logger.info("kg split (%s): %d train, %d valid, %d test triples", source, len(train), len(valid), len(test))
    return KGSplit(train=train, valid=valid, test=test, dataset=train_only_dataset(data, train), stats=stats)
