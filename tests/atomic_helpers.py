"""Write a small synthetic dataset as RecBole atomic files, for end-to-end tests of the user surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgglm.synthetic.small import make_synthetic_dataset

# A tiny model and corpus: each stage trains in about a second on a busy 2-core CPU.
TINY = {
    "embedding_size": 32, "num_heads": 2, "num_layers": 1, "dropout": 0.0,
    "pretrain_epochs": 2, "epochs": 2, "train_batch_size": 64, "eval_batch_size": 64,
    "learning_rate": 3e-3, "warmup_steps": 5, "save_step": 1000, "MAX_PATHS_PER_USER": 20,
    "topk": [5], "valid_metric": "NDCG@5", "show_progress": False, "stopping_step": 3,
    "path_generation_args": {"num_beams": 5}, "show_examples": 2, "use_gpu": False,
}


def write_atomic_dataset(root: Path, name: str = "toy", **kwargs) -> Path:
    """Write ``root/name/name.{inter,kg,link,item}`` from :func:`make_synthetic_dataset`; return ``root``."""
    ds = make_synthetic_dataset(**{"n_users": 45, "n_items": 60, "items_per_user": 10, **kwargs})
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    users = np.concatenate([ds.splits[s].users for s in ("train", "valid", "test")])
    items = np.concatenate([ds.splits[s].items for s in ("train", "valid", "test")])
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{ds.user_tokens[u]}\t{ds.item_tokens[i]}\t1\t{t}" for t, (u, i) in enumerate(zip(users, items))]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    node_token = np.concatenate([ds.user_tokens, ds.item_entity_tokens, ds.entity_tokens])
    lines = ["head_id:token\trelation_id:token\ttail_id:token"]
    lines += [f"{node_token[h]}\t{ds.relation_tokens[r]}\t{node_token[t]}"
              for h, r, t in zip(ds.kg_heads, ds.kg_relations, ds.kg_tails)]
    (folder / f"{name}.kg").write_text("\n".join(lines) + "\n")
    lines = ["item_id:token\tentity_id:token"]
    lines += [f"{i}\t{e}" for i, e in zip(ds.item_tokens, ds.item_entity_tokens)]
    (folder / f"{name}.link").write_text("\n".join(lines) + "\n")
    lines = ["item_id:token\tmovie_title:token_seq"]
    lines += [f"{i}\t{n}" for i, n in zip(ds.item_tokens, ds.item_names)]
    (folder / f"{name}.item").write_text("\n".join(lines) + "\n")
    return Path(root)
