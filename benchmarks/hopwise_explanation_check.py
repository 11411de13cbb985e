"""Cross-check (not CI): our explanation / beyond-accuracy metrics against hopwise 0.9.1's on the same lists.

Builds explained top-k lists on a dataset (default ml-100k): either synthetic — for each user, random
3-hop walks ``user -> training item -> any node -> unseen item`` over the training graph, keeping the
first K distinct end items in walk order — or read from a ``recommendations.jsonl`` export
(:func:`kgglm.decode.recommend.write_recommendations`). Computes our metrics
(:mod:`kgglm.evaluate.explanation`, :mod:`kgglm.evaluate.beyond_accuracy`), then runs hopwise's metric
classes (``hopwise.evaluator.metrics``: LIR, SEP, LID, SED, PTD, PTC, PPT, Fidelity, ItemCoverage,
Novelty, Serendipity, NDCG) in hopwise's own virtual environment on the *same* lists and the same
inputs (training timestamps, node degrees from our graph), and prints both side by side.

hopwise's metrics are fed directly (a stand-in for its DataStruct with ``get``), so no hopwise dataset
or model is built. Inputs are laid out the way hopwise's collectors would: paths as
``[("self_loop", "user", u), (rel_id, "item", i), (rel_id, type, id), ..., (rel_id, "item", j)]``,
items and KG entities in one entity id space (items first), a dense user x item timestamp matrix,
``max_path_type = arange(n_relations + 1)`` (hopwise counts its [PAD] relation) and, as hopwise's
KGGLM collector, ``max_path_length = 2H + 1``.

Install hopwise as in the docstring of benchmarks/hopwise_reference.py, then (nice, it is not CI):

    nice -n 10 python benchmarks/hopwise_explanation_check.py --data-path /work/shared/data \
        --hopwise-python /work/hopwise-venv/bin/python [--recommendations out/recommendations.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# ours key -> hopwise key (without "@k")
PAIRS = [("lir", "lir"), ("sep", "SEP"), ("lid", "LID"), ("sed", "SED"), ("ptd", "PTD"), ("ptc", "PTC"),
         ("ppt", "PPT"), ("fidelity", "Fidelity"), ("coverage", "itemcoverage"), ("novelty", "novelty"),
         ("serendipity", "serendipity"), ("ndcg", "ndcg")]


# ------------------------------------------------------------------------------- our side
def synthetic_lists(ds, k: int, walks_per_user: int, seed: int):
    """Random explained lists: first ``k`` distinct unseen items reached by 3-hop walks per user."""
    g = ds.graph
    rng = np.random.default_rng(seed)
    users = np.arange(ds.n_users, dtype=np.int64)
    start = np.repeat(users, walks_per_user)
    nodes, rels, ok = [start], [], g.degree(start) > 0
    cur = start
    for _ in range(3):
        deg = g.degree(cur)
        pick = g.indptr[cur] + np.floor(rng.random(len(cur)) * np.maximum(deg, 1)).astype(np.int64)
        ok &= deg > 0
        pick = np.minimum(pick, len(g.neighbor) - 1)
        cur = g.neighbor[pick]
        nodes.append(cur)
        rels.append(g.relation[pick])
    nodes, rels = np.stack(nodes, axis=1), np.stack(rels, axis=1)
    end_item = nodes[:, 3] - g.n_users
    ok &= (nodes[:, 3] >= g.n_users) & (nodes[:, 3] < g.entity_offset) & (nodes[:, 3] != nodes[:, 1])
    tr = ds.splits["train"]
    seen = np.sort(tr.users * ds.n_items + tr.items)
    key = start * ds.n_items + np.where(ok, end_item, 0)
    pos = np.minimum(np.searchsorted(seen, key), len(seen) - 1)
    ok &= seen[pos] != key
    idx = np.flatnonzero(ok)
    _, first = np.unique(key[idx], return_index=True)  # first walk reaching each (user, item)
    idx = np.sort(idx[first])  # walk order = random rank order
    u = start[idx]
    rank = np.arange(len(idx)) - np.searchsorted(u, u)  # position within the user's run
    keep = rank < k
    idx, u, rank = idx[keep], u[keep], rank[keep]
    items = np.full((ds.n_users, k), -1, dtype=np.int64)
    pn = np.full((ds.n_users, k, 4), -1, dtype=np.int64)
    pr = np.full((ds.n_users, k, 3), -1, dtype=np.int64)
    items[u, rank], pn[u, rank], pr[u, rank] = end_item[idx], nodes[idx], rels[idx]
    return users, items, pn, pr


def lists_from_jsonl(ds, path: str):
    """Explained lists from a ``write_recommendations`` export (path token ids -> node/relation ids)."""
    from kgglm.paths.vocab import RELATION_OFFSET, Vocabulary

    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    users = np.unique([r["user_index"] for r in rows]).astype(np.int64)
    k = max(r["rank"] for r in rows)
    hops = (len(rows[0]["path_token_ids"]) - 1) // 2
    row_of = {int(u): i for i, u in enumerate(users)}
    items = np.full((len(users), k), -1, dtype=np.int64)
    pn = np.full((len(users), k, hops + 1), -1, dtype=np.int64)
    pr = np.full((len(users), k, hops), -1, dtype=np.int64)
    for r in rows:  # export parsing, not a hot path
        i, j = row_of[r["user_index"]], r["rank"] - 1
        toks = np.asarray(r["path_token_ids"], dtype=np.int64)
        nodes, rels = toks[0::2] - vocab.node_offset, toks[1::2] - RELATION_OFFSET
        if (nodes >= 0).all() and (rels >= 0).all() and (toks[1::2] < vocab.node_offset).all():
            items[i, j], pn[i, j], pr[i, j] = r["item_index"], nodes, rels
    return users, items, pn, pr


def hopwise_pop_topk(counts: np.ndarray, users: np.ndarray, ds, k: int) -> np.ndarray:
    """Pop's lists built as hopwise's Serendipity does: counts, the user's training items zeroed,
    ``argsort(...)[::-1]`` (ties: higher item index first)."""
    pop = np.tile(counts.astype(np.float64), (len(users), 1))
    tr = ds.splits["train"]
    row = np.full(ds.n_users, -1)
    row[users] = np.arange(len(users))
    sel = row[tr.users] >= 0
    pop[row[tr.users[sel]], tr.items[sel]] = 0
    return np.argsort(pop, axis=1)[:, ::-1][:, :k]


def our_metrics(ds, users, items, pn, pr, k: int) -> tuple[dict, dict]:
    from kgglm.data.dataset import csr_rows
    from kgglm.evaluate.beyond_accuracy import coverage, ndcg_paper, novelty, serendipity
    from kgglm.evaluate.explanation import ExplanationTables, explanation_metrics
    from kgglm.evaluate.metrics import hit_matrix, topk_metrics

    t0 = time.perf_counter()
    tables = ExplanationTables.from_dataset(ds)
    t1 = time.perf_counter()
    out = explanation_metrics(ds, users, items, pn, pr, k=k, tables=tables)
    t2 = time.perf_counter()
    counts = np.bincount(ds.splits["train"].items, minlength=ds.n_items)
    rel = csr_rows(ds.split_items("test"), users)
    hits = hit_matrix(items, *rel)
    out["coverage"] = coverage(items, ds.n_items)
    out["novelty"] = novelty(items, counts)
    out["serendipity"] = serendipity(items, hopwise_pop_topk(counts, users, ds, k))
    has_rel = np.diff(rel[0]) > 0
    relevant = csr_rows(ds.split_items("test"), users[has_rel])
    out["ndcg"] = topk_metrics(items[has_rel], *relevant, (k,), ["ndcg"])[f"ndcg@{k}"]
    out["ndcg_paper"] = ndcg_paper(hits, k)
    timing = {"tables_s": t1 - t0, "metrics_s": t2 - t1}
    extra = {"hits": hits[has_rel], "pos_len": np.diff(rel[0])[has_rel], "counts": counts}
    return out, {"timing": timing, **extra}


# ------------------------------------------------------------------------------- hopwise side
def run_hopwise(npz_path: str) -> dict:
    """Runs inside hopwise's venv: feed hopwise's metric classes and return their results."""
    from collections import Counter

    if not hasattr(np, "int"):  # hopwise 0.9.1's Serendipity still uses np.int (removed in NumPy 1.24)
        np.int = int  # type: ignore[attr-defined]
    import torch
    from hopwise.evaluator import metrics as M

    d = np.load(npz_path, allow_pickle=False)
    k, n_users, n_items, hops = (int(d[x]) for x in ("k", "n_users", "n_items", "hops"))
    users, items, pn, pr = d["users"], d["items"], d["path_nodes"], d["path_rels"]
    kinds, ent_id = d["node_kind"], d["node_entity_id"]
    paths = []
    for r, c in zip(*np.nonzero((items >= 0) & (pn >= 0).all(axis=2) & (pr >= 0).all(axis=2))):
        nodes, rels = pn[r, c], pr[r, c]
        path = [("self_loop", "user", int(nodes[0]))]
        for h in range(hops):
            kind = ("user", "item", "entity")[kinds[nodes[h + 1]]]
            path.append((int(rels[h]), kind, int(ent_id[nodes[h + 1]])))
        paths.append((int(users[r]), int(items[r, c]), 0.0, path))
    ts = np.zeros((n_users, n_items))
    ts[d["train_users"], d["train_items"]] = d["train_ts"]
    degree = d["degree"]
    node_degree = {"user": {u: int(degree[u]) for u in range(n_users) if degree[u] > 0},
                   "entity": {int(ent_id[n]): int(degree[n]) for n in range(n_users, len(degree)) if degree[n] > 0}}
    counts = d["counts"]
    count_items = Counter({i: int(c) for i, c in enumerate(counts) if c > 0})
    history = np.stack([d["train_users"] + 1, d["train_items"]])  # hopwise user ids are 1-based
    hits, pos_len = d["hits"], d["pos_len"]
    data = {
        "rec.paths": paths, "data.timestamp": ts, "data.num_items": n_items, "data.num_users": n_users + 1,
        "data.node_degree": node_degree, "data.max_path_type": np.arange(len(d["relation_names"]) + 1),
        "data.max_path_length": 2 * hops + 1, "data.rid2relation": [str(x) for x in d["relation_names"]],
        "rec.items": torch.from_numpy(items), "data.count_items": count_items, "data.history_index": history,
        "rec.topk": torch.from_numpy(np.concatenate([hits[:, :k], pos_len[:, None]], axis=1).astype(np.int64)),
        "topk": [k],
    }

    class Data:  # the part of hopwise's DataStruct the metrics use
        def get(self, key):
            return data[key]

    config = {"topk": [k], "metric_decimal_place": 12}
    out, errors = {}, {}
    for name in ("LIR", "SEP", "LID", "SED", "PTD", "PTC", "PPT", "Fidelity", "ItemCoverage", "Novelty",
                 "Serendipity", "NDCG"):
        try:
            result = getattr(M, name)(config).calculate_metric(Data())
            out.update({key.split("@")[0]: float(v) for key, v in result.items()})
        except Exception as exc:  # noqa: BLE001 -- report and go on: one broken metric must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
    return {"metrics": out, "errors": errors, "n_paths": len(paths)}


def export_for_hopwise(ds, users, items, pn, pr, k, extra, path):
    g = ds.graph
    kind = g.node_kind(np.arange(g.n_nodes))
    ent_id = np.arange(g.n_nodes) - np.where(kind == 0, 0, g.n_users)  # items then entities, one id space
    tr = ds.splits["train"]
    np.savez(path, k=k, n_users=ds.n_users, n_items=ds.n_items, hops=pr.shape[2], users=users, items=items,
             path_nodes=pn, path_rels=pr, node_kind=kind, node_entity_id=ent_id, degree=g.degree(),
             train_users=tr.users, train_items=tr.items, train_ts=np.asarray(tr.timestamps, dtype=np.float64),
             counts=extra["counts"], hits=extra["hits"], pos_len=extra["pos_len"],
             relation_names=np.asarray(ds.relation_tokens).astype(str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--recommendations", default=None, help="a recommendations.jsonl export instead of random lists")
    ap.add_argument("--walks-per-user", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--untie-timestamps", action="store_true",
                    help="add a distinct sub-second offset to every training timestamp (both sides), to show "
                         "that LIR differs only through ties")
    ap.add_argument("--hopwise-python", default="/work/hopwise-venv/bin/python")
    ap.add_argument("--hopwise-side", default=None, help=argparse.SUPPRESS)  # internal: run in hopwise's venv
    args = ap.parse_args()
    if args.hopwise_side:
        print("HOPWISE " + json.dumps(run_hopwise(args.hopwise_side)))
        return

    from kgglm.data import load_dataset

    ds = load_dataset(args.dataset, data_path=args.data_path, download=False)
    if args.untie_timestamps:
        from kgglm.data.dataset import Interactions

        tr = ds.splits["train"]
        offset = np.random.default_rng(args.seed).permutation(len(tr)) / len(tr)  # distinct, < 1 s
        ds.splits["train"] = Interactions(tr.users, tr.items, np.asarray(tr.timestamps, np.float64) + offset)
    if args.recommendations:
        users, items, pn, pr = lists_from_jsonl(ds, args.recommendations)
    else:
        users, items, pn, pr = synthetic_lists(ds, args.topk, args.walks_per_user, args.seed)
    k = items.shape[1]
    ours, extra = our_metrics(ds, users, items, pn, pr, k)
    tr = ds.splits["train"]
    order = np.lexsort((tr.timestamps, tr.users))
    tied = (np.diff(tr.users[order]) == 0) & (np.diff(tr.timestamps[order]) == 0)
    print(f"{ds.name}: {len(users)} users, K={k}, explained entries {int((items >= 0).sum())}, "
          f"short lists {int(((items >= 0).sum(axis=1) < k).sum())}; training interactions sharing a "
          f"timestamp with the previous one of the same user: {tied.mean():.1%}")
    print(f"our timing: tables {extra['timing']['tables_s']:.3f}s, metrics {extra['timing']['metrics_s']:.3f}s")

    theirs: dict = {}
    note = ""
    if not os.path.exists(args.hopwise_python):
        note = f"hopwise python {args.hopwise_python} not found: install hopwise (see module docstring)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "lists.npz")
            export_for_hopwise(ds, users, items, pn, pr, k, extra, npz)
            proc = subprocess.run([args.hopwise_python, os.path.abspath(__file__), "--hopwise-side", npz],
                                  check=False, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("HOPWISE ")]
        if proc.returncode or not line:
            note = f"hopwise side failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
        else:
            res = json.loads(line[-1][len("HOPWISE "):])
            theirs = res["metrics"]
            for name, err in res["errors"].items():
                print(f"hopwise {name} raised {err}")
    print(f"\n{'metric':<20}{'ours':>12}{'hopwise':>12}{'diff':>12}")
    for ours_key, their_key in PAIRS:
        a, b = ours.get(ours_key), theirs.get(their_key)
        bs = f"{b:12.6f}" if b is not None else f"{'-':>12}"
        ds_ = f"{a - b:+12.6f}" if b is not None else f"{'':>12}"
        print(f"{ours_key + f'@{k}':<20}{a:12.6f}{bs}{ds_}")
    for key in ("etd", "path_faithfulness", "kg_share", "ndcg_paper"):
        print(f"{key + f'@{k}':<20}{ours[key]:12.6f}{'(ours only)':>12}")
    share = sorted(ours["relation_share"].items(), key=lambda kv: -kv[1])[:8]
    print("relation_share (top 8): " + ", ".join(f"{n} {v:.3f}" for n, v in share))
    if note:
        print("\n" + note)
        sys.exit(1)


if __name__ == "__main__":
    main()
