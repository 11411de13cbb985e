"""Users/s of KG-constrained beam-search evaluation on ml-100k test users (optionally after brief training).

    python benchmarks/bench_eval.py                       # all ml-100k test users, num_beams 20, 256/4/3
    python benchmarks/bench_eval.py --hopwise-style 64    # + side-by-side with a hopwise-0.9.1-style mask
    python benchmarks/bench_eval.py --train-steps 600     # brief training first, then metrics vs Pop

``--device auto`` picks CUDA when available, so the same command runs on a GPU unchanged.

``--hopwise-style`` re-implements the way hopwise 0.9.1's ``ConstrainedBeamLogitsProcessorWordLevel``
builds its mask (Python loop over the unique rows, dict-of-sets graph, a dense NumPy boolean row of
vocabulary size per key, cached) and runs it through this package's dense beam search with the same
model: an emulation for a like-for-like comparison, not hopwise itself.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict

import numpy as np
import torch

from kgglm.baselines import get_baseline
from kgglm.config import Config
from kgglm.data import load_dataset
from kgglm.decode import GraphConstraint, beam_search, recommend
from kgglm.evaluate import EvalConfig
from kgglm.settings import resolve
from kgglm.tasks.models import ModelBuilder
from kgglm.tasks.ranking import evaluate_model


class HopwiseStyleProcessor:
    """hopwise-0.9.1-style constraint: per-row Python loop and dense NumPy masks (for comparison)."""

    def __init__(self, constraint, dataset, vocab, excluded_csr) -> None:
        self.c = constraint
        g = dataset.graph
        src = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
        self.kg = defaultdict(lambda: defaultdict(set))  # tokenized_kg[head][rel] = {tails}
        for s, r, d in zip(vocab.node_token(src).tolist(), vocab.relation_token(g.relation).tolist(),
                           vocab.node_token(g.neighbor).tolist()):
            self.kg[s][r].add(d)
        ind, items = excluded_csr
        self.used = {int(vocab.node_token(u)): set(vocab.node_token(items[ind[u]:ind[u + 1]] + g.n_users).tolist())
                     for u in range(g.n_users)}
        self.first_relation = int(vocab.relation_token(0))  # the user-item interaction relation
        self.mask_cache: dict = {}
        self.vocab_size = constraint.vocab_size

    def __getattr__(self, name):  # everything but __call__ comes from the real constraint
        return getattr(self.c, name)

    def __call__(self, input_ids, scores):
        cur_len = input_ids.shape[1]
        ids = input_ids.cpu().numpy()
        entity_next = cur_len % 2 == 1  # [BOS] U r n ...: odd length -> a node comes next
        last = ids[:, -2:] if entity_next else ids[:, -1:]
        _, first, inv = np.unique(last, axis=0, return_index=True, return_inverse=True)
        final = cur_len == 2 * self.c.hop_length + 1
        if final:  # the user matters at the last step
            _, first, inv = np.unique(ids[:, [1, -2, -1]], axis=0, return_index=True, return_inverse=True)
        full = np.zeros((len(first), self.vocab_size), dtype=bool)
        for i, row in enumerate(first.tolist()):  # hopwise: Python loop over unique rows
            key = tuple(ids[row, [1, -2, -1]]) if final else tuple(ids[row, -2:] if entity_next else ids[row, -1:])
            banned = self.mask_cache.get(key)
            if banned is None:
                if entity_next:
                    cands = set(self.kg[key[-2]].get(key[-1], set()))
                    if final:
                        cands -= self.used.get(key[0], set())
                else:
                    cands = set(self.kg[key[0]].keys())
                    if cur_len == 2:
                        cands &= {self.first_relation}
                banned = np.ones(self.vocab_size, dtype=bool)
                banned[list(cands)] = False
                self.mask_cache[key] = banned
            full[i] = banned
        scores = scores.clone()
        scores[torch.from_numpy(full[inv.reshape(-1)]).to(scores.device)] = -math.inf
        return scores


def brief_training(model, dataset, vocab, steps: int, batch: int, device, lr: float = 1e-3) -> float:
    """Plain AdamW on user paths (the trainer lives in kgglm.train; this keeps the benchmark standalone)."""
    from kgglm.paths.sampling import sample_user_paths

    paths = sample_user_paths(dataset.graph, dataset.splits["train"], max_paths_per_user=250, hop_length=3, seed=0)
    tokens = torch.as_tensor(paths.tokens(vocab), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator(device="cpu").manual_seed(0)
    model.train()
    t0, loss = time.perf_counter(), float("nan")
    for step in range(steps):
        idx = torch.randint(len(tokens), (batch,), generator=gen).to(device)
        loss_t = model.loss(tokens[idx])
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            loss = float(loss_t.detach())
            print(f"  step {step} loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    model.eval()
    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-path", default="/work/shared/data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-beams", type=int, default=20)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--embedding-size", type=int, default=256)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--num-layers", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="users per beam-search batch")
    ap.add_argument("--users", type=int, default=0, help="limit to the first N test users (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--hopwise-style", type=int, default=0, metavar="N",
                    help="also time the hopwise-style mask on the first N users (same model, dense path)")
    ap.add_argument("--train-steps", type=int, default=0, help="brief training first, then metrics vs Pop")
    ap.add_argument("--train-batch", type=int, default=256)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    ds = load_dataset(args.dataset, data_path=args.data_path)
    config = Config(config_dict={"embedding_size": args.embedding_size, "num_heads": args.num_heads,
                                 "num_layers": args.num_layers, "dropout": 0.1, "use_kg_token_types": True,
                                 "path_generation_args": {"num_beams": args.num_beams}})
    resolved = resolve(config)
    builder = ModelBuilder.for_dataset(ds, resolved.model)
    vocab = builder.vocab
    torch.manual_seed(0)
    model = builder.fresh(9, device=device).eval()
    users = ds.eval_users("test")
    if args.users:
        users = users[:args.users]
    print(f"{ds.name}: {len(users)} test users, vocab {vocab.size}, device {device}, "
          f"threads {torch.get_num_threads()}, model {args.embedding_size}/{args.num_heads}/{args.num_layers}")
    if args.train_steps:
        brief_training(model, ds, vocab, args.train_steps, args.train_batch, device)

    gen = resolved.generation
    settings = EvalConfig(topk=(args.topk,), metrics=("Recall", "MRR", "NDCG", "Hit", "Precision"),
                          valid_metric=f"NDCG@{args.topk}", eval_batch_size=args.batch_size)
    recommend(model, ds, users[:4], vocab=vocab, generation=gen, n_return=args.topk, split="test",
              batch_size=args.batch_size)  # warm-up
    res = evaluate_model(model, ds, "test", settings, vocab=vocab, generation=gen, users=users).metrics
    pop = evaluate_model(_pop(ds), ds, "test", settings, users=users).metrics
    print(f"kgglm: {res['users_per_second']:.1f} users/s ({res['n_users']} users in {res['seconds']:.1f}s), "
          f"valid paths {res['valid_paths']:.1%}, coverage {res['path_coverage']:.1%}, "
          f"{res['relation_patterns']} relation patterns, users short of {args.topk}: {res['users_short']}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    k = args.topk
    print(f"NDCG@{k}: kgglm {res[f'ndcg@{k}']:.4f} vs Pop {pop[f'ndcg@{k}']:.4f} "
          f"(x{res[f'ndcg@{k}'] / max(pop[f'ndcg@{k}'], 1e-12):.2f})")

    if args.hopwise_style:
        sub = users[:args.hopwise_style]
        bs = min(args.batch_size, len(sub))
        timings = {}
        excl = ds.seen_items("test")
        constraint = GraphConstraint(ds.graph, vocab, hop_length=gen.path_hop_length, device=device, excluded=excl)
        hop = HopwiseStyleProcessor(constraint, ds, vocab, excl)
        for name, kwargs in (("sparse (default)", dict(constraint=constraint, sparse=True)),
                             ("dense vectorised mask", dict(constraint=constraint, sparse=False)),
                             ("hopwise-style mask", dict(constraint=hop, sparse=False))):
            t0 = time.perf_counter()
            outs = [beam_search(model, kwargs["constraint"], sub[i:i + bs], gen, n_return=args.topk,
                                sparse=kwargs["sparse"]) for i in range(0, len(sub), bs)]
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[name] = len(sub) / (time.perf_counter() - t0)
            timings[name + " items"] = torch.cat([o.items for o in outs]).cpu()
        same = bool(torch.equal(timings["sparse (default) items"], timings["hopwise-style mask items"]))
        for name in ("sparse (default)", "dense vectorised mask", "hopwise-style mask"):
            print(f"{name:>24}: {timings[name]:8.1f} users/s")
        print(f"speed-up vs hopwise-style: x{timings['sparse (default)'] / timings['hopwise-style mask']:.1f} "
              f"(same top-{args.topk} items: {same}; first {len(sub)} users; hopwise-style mask cache warm-up "
              "included as in a single evaluation run)")


def _pop(ds):
    pop = get_baseline("Pop")()
    pop.fit(ds, resolve(Config("Pop", ds.name)).baseline)
    return pop


if __name__ == "__main__":
    main()
