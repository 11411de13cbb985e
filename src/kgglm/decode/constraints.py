"""KG-constrained decoding: a ``LogitsProcessor``-style object that masks illegal path tokens.

A generated sequence is ``[BOS] U r1 n1 r2 n2 ... rH nH`` (prompt ``[BOS] U``). The next token's
body index ``b = T - 1`` (``T`` = current length) says what comes next: odd ``b`` is a relation,
even ``b`` a node. Legal tokens, per the collaborative graph built from *training* interactions:

* relation at hop ``h``: a relation leaving the current node (hop 1: only the user-item relation);
* node at hop ``h``: a neighbour of the previous node through the chosen relation;
* last node: an item the user has not interacted with in the excluded splits.

On top of legality the constraint prunes dead ends that are independent of the user: a relation
or node is only allowed when an item can still be reached in exactly the remaining hops
(``can_finish``). This never removes a complete legal path; it only stops beams from wasting
their slots on prefixes that cannot end on an item.

Everything runs as gathers over CSR arrays held as torch tensors on the model's device: for the
``B`` current rows we expand their CSR segments (``repeat_interleave`` of segment lengths) into
legal ``(row, token)`` pairs (:meth:`GraphConstraint.allowed_pairs`, used directly by the sparse
beam search) and, for the ``LogitsProcessor`` call, scatter them into a ``[B, V]`` boolean mask
built on the device. No Python loop per row and no host-side vocabulary-sized mask.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kgglm.data.dataset import items_csr
from kgglm.data.graph import UI_RELATION, CollaborativeGraph
from kgglm.paths.vocab import Vocabulary

NEG_INF = float("-inf")


def _expand(lo: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten per-row segments ``[lo, lo + count)``: returns (row index, position) per element."""
    rows = torch.repeat_interleave(torch.arange(lo.shape[0], device=lo.device), counts)
    starts = torch.cumsum(counts, 0) - counts  # where each row's block begins in the flat output
    pos = torch.arange(rows.shape[0], device=lo.device) - starts[rows] + lo[rows]
    return rows, pos


class GraphConstraint:
    """Mask tokens that would make the path illegal (transformers ``LogitsProcessor`` style).

    Args:
        graph: the collaborative graph (training interactions only).
        vocab: the token layout; its sizes must match the graph's.
        hop_length: number of hops of a generated path (``path_hop_length``).
        device: where the CSR tensors live (the model's device).
        excluded: ``(indptr, items)`` CSR of item indices per user, or a sequence of
            ``Interactions`` (e.g. ``[train]``, or ``[train, valid]`` when evaluating on test),
            or ``None`` to exclude nothing.
        prune_dead_ends: also forbid prefixes from which no item is reachable in the remaining hops.
        knowledge_only: forbid user nodes after the first hop, so every path goes user -> item -> KG
            ... -> item (explanations through knowledge only).
        forbidden_relations: relation ids no path may use (e.g. a vague ``related_to_wikipage``).
    """

    def __init__(self, graph: CollaborativeGraph, vocab: Vocabulary, *, hop_length: int,
                 device: torch.device | str = "cpu", excluded=None, prune_dead_ends: bool = True,
                 knowledge_only: bool = False, forbidden_relations: Sequence[int] = ()) -> None:
        if (vocab.n_users, vocab.n_items, vocab.n_entities, vocab.n_relations) != (
                graph.n_users, graph.n_items, graph.n_entities, graph.n_relations):
            raise ValueError(
                "GraphConstraint: vocabulary sizes (users, items, entities, relations) = "
                f"{(vocab.n_users, vocab.n_items, vocab.n_entities, vocab.n_relations)} do not match the "
                f"graph's {(graph.n_users, graph.n_items, graph.n_entities, graph.n_relations)}")
        if int(hop_length) < 1:
            raise ValueError(f"GraphConstraint: hop_length must be >= 1, got {hop_length}")
        self.graph, self.vocab = graph, vocab
        self.hop_length = h = int(hop_length)
        self.device = torch.device(device)
        self.vocab_size = vocab.size
        n, r = graph.n_nodes, graph.n_relations

        # (node, relation) groups: rows are sorted by (relation, neighbor), so each group is a
        # contiguous run of edges; key = node * R + relation is sorted over all edges.
        src = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
        keys = src * r + graph.relation
        # edges a path may use after its first (user -> item) hop: the knowledge-only mode drops
        # edges into users, a relation preference drops whole relations
        edge_ok = ~np.isin(graph.relation, np.asarray(list(forbidden_relations), dtype=np.int64))
        if knowledge_only:
            edge_ok &= graph.neighbor >= graph.n_users
        self.knowledge_only = bool(knowledge_only)
        self.forbidden_relations = tuple(int(x) for x in forbidden_relations)
        is_start = np.ones(keys.shape[0], dtype=bool)
        is_start[1:] = keys[1:] != keys[:-1]
        g_start = np.flatnonzero(is_start)
        g_end = np.append(g_start[1:], keys.shape[0]).astype(np.int64)
        g_keys = keys[g_start]
        g_node = g_keys // r
        g_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(g_node, minlength=n), out=g_indptr[1:])
        edge_group = np.cumsum(is_start) - 1

        # can_finish[k, v]: an item is reachable from v in exactly k more hops (ignoring exclusions)
        can_finish = np.zeros((h, n), dtype=bool)
        can_finish[0, graph.n_users:graph.n_users + graph.n_items] = True
        for k in range(1, h):  # loop over hops, not rows
            can_finish[k] = np.bincount(src, weights=can_finish[k - 1][graph.neighbor] & edge_ok, minlength=n) > 0
        if not prune_dead_ends:
            can_finish[1:] = True
        group_ok = np.stack([np.bincount(edge_group, weights=can_finish[k][graph.neighbor] & edge_ok,
                                         minlength=g_keys.shape[0]) > 0 for k in range(h)]) \
            if g_keys.size else np.zeros((h, 0), dtype=bool)

        if excluded is None:
            ex_indptr, ex_items = np.zeros(graph.n_users + 1, np.int64), np.zeros(0, np.int64)
        elif isinstance(excluded, tuple) and len(excluded) == 2 and isinstance(excluded[0], np.ndarray):
            ex_indptr, ex_items = (np.asarray(a, dtype=np.int64) for a in excluded)
            if ex_indptr.shape != (graph.n_users + 1,) or ex_indptr[-1] != ex_items.shape[0]:
                raise ValueError(f"GraphConstraint: excluded indptr must have shape ({graph.n_users + 1},) "
                                 f"and end at len(items)={ex_items.shape[0]}")
            if ex_items.size and (ex_items.min() < 0 or ex_items.max() >= graph.n_items):
                raise ValueError(f"GraphConstraint: excluded item index out of range [0, {graph.n_items})")
        else:
            ex_indptr, ex_items = items_csr(graph.n_users, graph.n_items, excluded)

        t = lambda a, dt=torch.long: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=self.device)  # noqa: E731
        self._neighbor = t(graph.neighbor)
        self._edge_ok = t(edge_ok, torch.bool)
        self._g_indptr, self._g_keys, self._g_rel = t(g_indptr), t(g_keys), t(g_keys % r)
        self._g_start, self._g_end = t(g_start), t(g_end)
        self._can_finish, self._group_ok = t(can_finish, torch.bool), t(group_ok, torch.bool)
        ex_users = np.repeat(np.arange(graph.n_users, dtype=np.int64), np.diff(ex_indptr))
        ex_keys = np.sort(ex_users * graph.n_items + ex_items)
        self._ex_keys = t(ex_keys)  # sorted (user, item) keys
        # A path that comes back to its own user one hop before the end can only finish on one of
        # that user's graph items; when all of those are excluded (the usual case: the graph holds
        # the training items and training items are excluded) it is a dead end, so forbid it.
        ui = graph.relation == UI_RELATION
        ui_users = src[ui & (src < graph.n_users)]
        ui_keys = ui_users * graph.n_items + (graph.neighbor[ui & (src < graph.n_users)] - graph.n_users)
        self._start_user_dead_end = bool(prune_dead_ends and h >= 2 and np.isin(ui_keys, ex_keys).all())

    # ------------------------------------------------------------------------------ helpers
    @property
    def body_length(self) -> int:
        """Tokens of a complete path including the user: ``2 * hop_length + 1``."""
        return 2 * self.hop_length + 1

    def _nodes(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        node = self.vocab.token_node(tokens)
        valid = node >= 0
        return torch.where(valid, node, torch.zeros_like(node)), valid

    # ------------------------------------------------------------------------------ masks
    def allowed_pairs(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Legal next tokens as pairs ``(row, token)`` (rows ascending) for ``input_ids [B, T]``."""
        t = input_ids.shape[1]
        body = t - 1  # body index of the token to generate (the user is body index 0)
        if not 1 <= body <= 2 * self.hop_length:
            raise ValueError(f"GraphConstraint: input length {t} is outside [2, {2 * self.hop_length + 1}] "
                             f"for hop_length={self.hop_length} (prompt is [BOS] U<user>)")
        input_ids = input_ids.to(self.device)
        if body % 2 == 1:  # relation of hop `hop`
            hop = (body + 1) // 2
            cur, valid = self._nodes(input_ids[:, -1])
            lo = self._g_indptr[cur]
            counts = torch.where(valid, self._g_indptr[cur + 1] - lo, torch.zeros_like(lo))
            rows, g = _expand(lo, counts)
            ok = self._group_ok[self.hop_length - hop, g]
            if hop == 1:
                ok &= self._g_rel[g] == UI_RELATION
            return rows[ok], self.vocab.relation_token(self._g_rel[g[ok]])
        hop = body // 2  # node of hop `hop`
        prev, valid = self._nodes(input_ids[:, -2])
        rel = self.vocab.token_relation(input_ids[:, -1])
        valid &= rel >= 0
        key = prev * self.graph.n_relations + torch.where(valid, rel, torch.zeros_like(rel))
        n_groups = self._g_keys.shape[0]
        if n_groups == 0:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return empty, empty
        g = torch.searchsorted(self._g_keys, key).clamp_(max=n_groups - 1)
        valid &= self._g_keys[g] == key
        lo = self._g_start[g]
        counts = torch.where(valid, self._g_end[g] - lo, torch.zeros_like(lo))
        rows, e = _expand(lo, counts)
        dst = self._neighbor[e]
        ok = self._can_finish[self.hop_length - hop, dst]
        if hop > 1:  # the first hop is the user's own interaction; later hops obey the path options
            ok &= self._edge_ok[e]
        if hop == self.hop_length - 1 and self._start_user_dead_end:
            ok &= dst != self.vocab.token_node(input_ids[:, 1])[rows]
        if hop == self.hop_length and self._ex_keys.numel():
            # drop items the user has seen: membership of (user, item) keys in the sorted excluded keys
            user = self.vocab.token_node(input_ids[:, 1])
            ex_key = user[rows] * self.graph.n_items + (dst - self.graph.n_users)
            pos = torch.searchsorted(self._ex_keys, ex_key).clamp_(max=self._ex_keys.shape[0] - 1)
            ok &= self._ex_keys[pos] != ex_key
        return rows[ok], self.vocab.node_token(dst[ok])

    def allowed_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, V]`` mask of the legal next tokens for each row of ``input_ids [B, T]``."""
        rows, tokens = self.allowed_pairs(input_ids)
        mask = torch.zeros(input_ids.shape[0], self.vocab_size, dtype=torch.bool, device=self.device)
        mask[rows, tokens] = True
        return mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Return ``scores [B, V]`` with every illegal next token set to ``-inf``."""
        if scores.shape != (input_ids.shape[0], self.vocab_size):
            raise ValueError(f"GraphConstraint: scores must have shape ({input_ids.shape[0]}, {self.vocab_size}), "
                             f"got {tuple(scores.shape)}")
        mask = self.allowed_mask(input_ids)
        return scores.masked_fill(~mask.to(scores.device), NEG_INF)
