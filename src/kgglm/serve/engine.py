"""The serving engine: everything the server asks of kgglm's internals, in one file.

:class:`Engine` loads a checkpoint once (model, vocabulary, dataset with its training graph, and the
decoding constraint with the seen-item masks), then answers plain-Python questions: recommendations
for a batch of user indices (one batched, constrained beam search), a user's training history, the
KG facts around an item, and a user search. Every call into ``kgglm.tasks`` / ``kgglm.decode`` is
here, so a change of those internals is adapted in this file alone; ``app.py`` only sees dicts.

Decoding uses the checkpoint's own settings (its saved config resolved by
:func:`kgglm.settings.resolve`: ``settings.generation``) and the
``test`` split's exclusions (train and valid items are never recommended), exactly as
:func:`kgglm.tasks.recommendation.recommend_from_checkpoint` does, so both give the same items, scores and paths.

Explanation modes are the decoder's (``path_generation_args.explanation``): ``best`` shows the
item's most probable decoded path; ``knowledge`` the most probable path the model decodes to it
through KG entities only, when one exists (same ranking). ``explanation_source`` says whether the
shown path goes through the knowledge graph or through other users.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

EXPLANATION_MODES = ("best", "knowledge")


class NotFound(LookupError):
    """An unknown user or item id; the message names it."""


@dataclass(frozen=True)
class EngineInfo:
    model: str
    dataset: str
    checkpoint: str
    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    hop_length: int
    num_beams: int
    load_seconds: float


class Engine:
    """A loaded checkpoint ready to answer recommendation and exploration queries.

    ``decode`` is thread-safe (one search at a time); lookups are read-only and need no lock.
    """

    def __init__(self, checkpoint: str | os.PathLike, *, data_path: str | None = None,
                 cmd_args: Iterable[str] | None = None, threads: int | None = None) -> None:
        from kgglm.decode.explain import NODE_KINDS, UI_LABEL
        from kgglm.decode.recommend import make_constraint, model_device
        from kgglm.tasks.recommendation import load_for_inference, resolve_model_checkpoint

        t0 = time.perf_counter()
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.checkpoint = str(resolve_model_checkpoint(checkpoint))
        self.model, self.vocab, self.data, self.settings = load_for_inference(checkpoint, data_path=data_path,
                                                                              cmd_args=list(cmd_args or []))
        self.model.eval()
        self.generation = self.settings.generation
        self.hop_length = int(self.generation.path_hop_length)
        self.batch_size = self.settings.eval.eval_batch_size
        self.constraint = make_constraint(self.data, self.vocab, split="test", hop_length=self.hop_length,
                                          device=model_device(self.model))
        data = self.data
        self._node_tokens = data.node_tokens()
        self._node_names = data.node_names()
        self._entity_offset = data.graph.entity_offset
        self._user_ids = {str(t): i for i, t in enumerate(data.user_tokens.tolist())}
        self._item_ids = {str(t): i for i, t in enumerate(data.item_tokens.tolist())}
        train = data.splits["train"]
        order = np.argsort(train.users, kind="stable")
        self._train_items = train.items[order]
        self._train_ptr = np.searchsorted(train.users[order], np.arange(data.n_users + 1))
        self._ui_label, self._kinds = UI_LABEL, NODE_KINDS  # as explanations read them
        self._lock = threading.Lock()
        self.timing = {"search_seconds": 0.0, "explain_seconds": 0.0, "users": 0}  # for /health and benchmarks
        self.info = EngineInfo(model=self.settings.run.model, dataset=data.name, checkpoint=self.checkpoint,
                               n_users=data.n_users, n_items=data.n_items, n_entities=data.n_entities,
                               n_relations=data.n_relations, hop_length=self.hop_length,
                               num_beams=int(self.generation.num_beams),
                               load_seconds=round(time.perf_counter() - t0, 3))
        logger.info("engine ready in %.2fs: %s", self.info.load_seconds, self.checkpoint)

    # ------------------------------------------------------------------------------ lookups
    def user_index(self, user: str) -> int:
        try:
            return self._user_ids[str(user)]
        except KeyError:
            raise NotFound(f"unknown user id {str(user)[:200]!r} in dataset {self.data.name}") from None

    def item_index(self, item: str) -> int:
        try:
            return self._item_ids[str(item)]
        except KeyError:
            raise NotFound(f"unknown item id {str(item)[:200]!r} in dataset {self.data.name}") from None

    def _node(self, node: int) -> dict:
        kind = self._kinds[(node >= self.data.n_users) + (node >= self._entity_offset)]  # graph.node_kind
        return {"id": str(self._node_tokens[node]), "name": str(self._node_names[node]), "kind": kind}

    def _relation(self, rel: int) -> str:
        return self._ui_label if rel == 0 else str(self.data.relation_tokens[rel])

    def search_users(self, query: str = "", limit: int = 20) -> list[dict]:
        """Users whose id contains ``query`` (ids that start with it first), with their history size."""
        q = query.strip().lower()
        tokens = self.data.user_tokens
        if q:
            hits = [i for i, t in enumerate(tokens.tolist()) if q in str(t).lower()]
            hits.sort(key=lambda i: (not str(tokens[i]).lower().startswith(q), len(str(tokens[i])), i))
        else:
            hits = list(range(len(tokens)))
        return [{"user": str(tokens[i]), "n_history": int(self._train_ptr[i + 1] - self._train_ptr[i])}
                for i in hits[:limit]]

    def history(self, user: str) -> dict:
        """The user's training items (the ones the graph and the model know), in dataset order."""
        u = self.user_index(user)
        items = self._train_items[self._train_ptr[u]:self._train_ptr[u + 1]]
        return {"user": str(self.data.user_tokens[u]), "n_items": len(items),
                "items": [{"item": str(self.data.item_tokens[i]), "title": str(self.data.item_names[i])}
                          for i in items.tolist()]}

    def item(self, item: str, limit: int = 100) -> dict:
        """An item's title and the KG facts around it (non-user neighbours with relation names)."""
        i = self.item_index(item)
        graph = self.data.graph
        nbr, rel = graph.neighbors(int(graph.item_node(i)))
        is_user = nbr < graph.n_users
        facts = [{"relation": self._relation(int(r)), **self._node(int(n))}
                 for n, r in zip(nbr[~is_user][:limit].tolist(), rel[~is_user][:limit].tolist())]
        return {"item": str(self.data.item_tokens[i]), "title": str(self.data.item_names[i]),
                "n_users": int(is_user.sum()), "n_facts": int((~is_user).sum()), "facts": facts}

    # ------------------------------------------------------------------------------ decoding
    def decode(self, users: Sequence[int], k: int, explanation: str = "best") -> object:
        """One batched constrained beam search for user indices (kgglm ``Recommendations``); with
        ``explanation='knowledge'`` the decoder also picks each item's knowledge path."""
        from kgglm.decode.recommend import recommend

        users = np.asarray(users, dtype=np.int64)
        with self._lock:
            _set_threads(self.threads)  # per call: the thread count is per calling thread in OpenMP
            return recommend(self.model, self.data, users, vocab=self.vocab,
                             generation=self.generation.replace(explanation=explanation), n_return=int(k),
                             split="test", batch_size=max(len(users), 1), constraint=self.constraint)

    def recommend(self, users: Sequence[int], k: int, explanation: str = "best") -> list[dict]:
        """Top-``k`` explained recommendations for user indices, one dict per user (input order):
        ``{"user", "explanation", "recommendations"}``, each recommendation an
        :class:`~kgglm.decode.explain.ExplainedRecommendation` dict."""
        from kgglm.decode.explain import explained_records

        if explanation not in EXPLANATION_MODES:
            raise ValueError(f"explanation must be one of {EXPLANATION_MODES}, got {explanation!r}")
        t0 = time.perf_counter()
        recs = self.decode(users, k, explanation)
        t1 = time.perf_counter()
        lists = explained_records(recs, self.data, self.vocab, phrases=self.settings.output.relation_phrases)
        out = [{"user": x.user, "explanation": explanation, "recommendations": [r.to_dict() for r in x.recommendations]}
               for x in lists]
        self.timing["search_seconds"] += t1 - t0
        self.timing["explain_seconds"] += time.perf_counter() - t1
        self.timing["users"] += len(out)
        return out

    # ------------------------------------------------------------------------------ reference
    def reference(self, users: Sequence[str], k: int) -> list[dict]:
        """The same users through ``recommend_from_checkpoint`` (tests, benchmarks)."""
        from kgglm.tasks.recommendation import recommend_from_checkpoint

        return recommend_from_checkpoint(self.checkpoint, list(users), k=int(k),
                                         data_path=self.settings.data.data_path)

    def offline_users_per_second(self, users: Sequence[int], k: int) -> float:
        """Users/s of one offline ``recommend`` over ``users`` with the config's batch size."""
        from kgglm.decode.recommend import recommend

        t0 = time.perf_counter()
        with self._lock:
            _set_threads(self.threads)
            recommend(self.model, self.data, np.asarray(users, dtype=np.int64), vocab=self.vocab,
                      generation=self.generation, n_return=int(k), split="test", batch_size=self.batch_size,
                      constraint=self.constraint)
        return len(users) / (time.perf_counter() - t0)


def default_threads() -> int:
    """Intra-op threads for decoding: every core but one, which the server's event loop (HTTP, JSON)
    keeps; 1 on a 2-core machine."""
    return max(1, (os.cpu_count() or 2) - 1)


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
