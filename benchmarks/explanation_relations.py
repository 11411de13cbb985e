"""Which relations a run's shown explanations go through, from its exported recommendations.

For one run directory (``kgglm run``), read ``recommendations.jsonl`` (the test split's explained
top-k, one line per user and rank, ``explanation: best`` unless the run said otherwise) and the
run's dataset (its training graph), then print:

* ``kg_share``: the share of exported paths with a KG entity strictly inside (recomputed from the
  export, independently of the evaluator's ``kg_share``, which the run's ``result.json`` reports);
* for a relation (default ``related_to_wikipage``): how many shown paths use it, and among those how
  many could have been explained by a KG path that avoids it: a path ``user -> l -> e -> item`` of the
  same length in the training graph, ``l`` one of the user's training items, ``e`` a KG entity and
  both KG hops through other relations (``same_link``: through the shown path's own ``l``).

    python benchmarks/explanation_relations.py /tmp/kgtable-runs/KGGLM-ml-100k-dbpedia-run-... \
        --relation related_to_wikipage [--users 196,186,22 --max-rank 5] [--json]

Three-hop paths only (the default ``path_hop_length``); dense item x item counts (fine up to ML1M).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgglm.paths.vocab import RELATION_OFFSET, Vocabulary
from kgglm.tasks.recommendation import load_for_inference

EXPORT = "recommendations.jsonl"


def read_export(path: Path, vocab: Vocabulary) -> dict[str, np.ndarray]:
    """Users (original ids), ranks, node ids ``[N, H+1]`` and relation ids ``[N, H]`` of the exported paths."""
    users, ranks, tokens = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            users.append(rec["user"])
            ranks.append(rec["rank"])
            tokens.append(rec["path_token_ids"])
    lengths = {len(t) for t in tokens}
    if len(lengths) != 1:
        raise ValueError(f"{path}: paths of several lengths {sorted(lengths)}; expected one path_hop_length")
    toks = np.asarray(tokens, dtype=np.int64)
    if toks.shape[1] != 7:
        raise ValueError(f"{path}: field path_token_ids has {toks.shape[1]} tokens; expected 7 (3-hop paths)")
    return {
        "users": np.asarray(users, dtype=object),
        "ranks": np.asarray(ranks, dtype=np.int64),
        "nodes": toks[:, 0::2] - vocab.node_offset,
        "rels": toks[:, 1::2] - RELATION_OFFSET,
    }


def item_entity(data, keep: np.ndarray) -> sp.csr_matrix:
    """Binary item x entity matrix of the training KG's item-entity edges whose relation is in ``keep``."""
    g = data.graph
    src = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
    sel = (src >= g.item_offset) & (src < g.entity_offset) & (g.neighbor >= g.entity_offset) & np.isin(g.relation, keep)
    rows, cols = src[sel] - g.item_offset, g.neighbor[sel] - g.entity_offset
    m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(g.n_items, g.n_entities))
    m.data[:] = 1.0  # duplicates (two relations to one entity) count once
    return m


def _reach(data, hist: sp.csr_matrix, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item x item, user x item) booleans: sharing an entity through ``keep``, and reachable by
    ``user -> training item -> entity -> item`` with both KG hops in ``keep``."""
    b = item_entity(data, keep)
    co = (b @ b.T).toarray() > 0
    return co, (hist @ sp.csr_matrix(co.astype(np.float32))).toarray() > 0


def detours(data, paths: dict[str, np.ndarray], relation: str) -> dict:
    """Counts of the shown paths through ``relation``, and of those with a KG path avoiding it
    (through any other KG relation, and through each one alone)."""
    g = data.graph
    names = [str(r) for r in data.relation_tokens]
    if relation not in names:
        raise ValueError(f"dataset {data.name}: no relation {relation!r} (relations: {names[1:]})")
    rid = names.index(relation)
    nodes, rels = paths["nodes"], paths["rels"]
    through = (rels[:, 1:] == rid).any(1)
    kg = (nodes[:, 1:-1] >= g.entity_offset).any(1)
    train = data.splits["train"]
    hist = sp.csr_matrix(
        (np.ones(len(train), dtype=np.float32), (train.users, train.items)), shape=(g.n_users, g.n_items)
    )
    user, link, item = nodes[:, 0], nodes[:, 1] - g.item_offset, nodes[:, -1] - g.item_offset
    others = np.setdiff1d(np.arange(1, g.n_relations), [rid])
    co, reach = _reach(data, hist, others)
    by_relation = {}
    for r in others:  # one relation at a time: which specific relation would have explained it
        _, reach_r = _reach(data, hist, np.array([r]))
        by_relation[names[r]] = int((reach_r[user, item] & through).sum())
    return {
        "paths": int(len(nodes)),
        "kg_paths": int(kg.sum()),
        "kg_share": float(kg.mean()),
        "relation": relation,
        "through_relation": int(through.sum()),
        "through_relation_share_of_kg": float(through.sum() / max(int(kg.sum()), 1)),
        "with_other_kg_path": int((reach[user, item] & through).sum()),
        "with_other_kg_path_same_link": int((co[link, item] & through).sum()),
        "with_other_kg_path_by_relation": by_relation,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a kgglm run directory (holding recommendations.jsonl and checkpoint/)")
    p.add_argument("--relation", default="related_to_wikipage")
    p.add_argument("--users", default=None, help="only these original user ids (comma separated)")
    p.add_argument("--max-rank", type=int, default=None, help="only ranks 1..N (kgglm run prints 5 per user)")
    p.add_argument("--data-path", default=None, help="folder holding the dataset (if it moved)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    export = run / EXPORT
    if not export.is_file():
        raise SystemExit(f"{export}: missing (the run had export_recommendations: false?)")
    _, vocab, data, _ = load_for_inference(run, data_path=args.data_path)
    paths = read_export(export, vocab)
    keep = np.ones(len(paths["users"]), dtype=bool)
    if args.users:
        keep &= np.isin(paths["users"], np.asarray(args.users.split(","), dtype=object))
    if args.max_rank:
        keep &= paths["ranks"] <= args.max_rank
    paths = {k: v[keep] for k, v in paths.items()}
    out = detours(data, paths, args.relation)
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
