"""GraphConstraint: legal-token masks against a brute-force enumeration on small graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgglm.data.dataset import items_csr as excluded_items_csr
from kgglm.decode.constraints import GraphConstraint
from kgglm.paths.vocab import BOS, RELATION_OFFSET, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset


def brute_reach(graph, node: int, hops: int) -> bool:
    """Can an item be reached from ``node`` in exactly ``hops`` hops? (plain recursion)"""
    if hops == 0:
        return graph.n_users <= node < graph.n_users + graph.n_items
    nbrs, _ = graph.neighbors(node)
    return any(brute_reach(graph, int(m), hops - 1) for m in set(nbrs.tolist()))


def brute_legal(graph, vocab, prefix_nodes, prefix_rels, hop_length, excluded: set) -> set:
    """Legal next tokens after a prefix, by direct enumeration of neighbours (independent of CSR tricks)."""
    hop = len(prefix_rels) + (1 if len(prefix_nodes) == len(prefix_rels) + 1 else 0)
    cur = prefix_nodes[-1]
    nbrs, rels = graph.neighbors(cur)
    out = set()
    if len(prefix_nodes) == len(prefix_rels) + 1:  # next is a relation of hop `hop`
        for m, r in zip(nbrs.tolist(), rels.tolist()):
            if hop == 1 and r != 0:
                continue
            if brute_reach(graph, m, hop_length - hop):
                out.add(RELATION_OFFSET + r)
        return out
    r = prefix_rels[-1]
    hop = len(prefix_rels)
    for m, rr in zip(nbrs.tolist(), rels.tolist()):
        if rr != r:
            continue
        if hop == hop_length:
            is_item = graph.n_users <= m < graph.n_users + graph.n_items
            if is_item and (m - graph.n_users) not in excluded:
                out.add(vocab.node_offset + m)
        elif brute_reach(graph, m, hop_length - hop):
            # back at the start user one hop before the end: only its own (excluded) items follow
            user_items = {int(i) - graph.n_users for i, rr2 in zip(*graph.neighbors(prefix_nodes[0])) if rr2 == 0}
            if hop == hop_length - 1 and m == prefix_nodes[0] and user_items <= excluded:
                continue
            out.add(vocab.node_offset + m)
    return out


def random_prefixes(graph, rng, n: int, length: int):
    """Random walks U -0-> ... with ``length`` body tokens after the user (nodes and relations)."""
    out = []
    while len(out) < n:
        u = int(rng.integers(graph.n_users))
        nodes, rels = [u], []
        ok = True
        while len(nodes) + len(rels) - 1 < length:
            nbrs, rr = graph.neighbors(nodes[-1])
            if len(rels) == 0:
                nbrs, rr = nbrs[rr == 0], rr[rr == 0]
            if len(nbrs) == 0:
                ok = False
                break
            j = int(rng.integers(len(nbrs)))
            rels.append(int(rr[j]))
            if len(nodes) + len(rels) - 1 < length:
                nodes.append(int(nbrs[j]))
        if ok:
            out.append((nodes, rels))
    return out


def tokens_of(vocab, nodes, rels):
    toks = [BOS, vocab.node_offset + nodes[0]]
    for i, r in enumerate(rels):
        toks.append(RELATION_OFFSET + r)
        if i + 1 < len(nodes):
            toks.append(vocab.node_offset + nodes[i + 1])
    return toks


@pytest.mark.parametrize("hop_length", [2, 3])
def test_mask_matches_brute_force(hop_length):
    ds = make_synthetic_dataset(n_users=12, n_items=15, n_clusters=3, items_per_user=5, seed=3)
    g = ds.graph
    vocab = Vocabulary.from_graph(g)
    excl_i, excl_x = excluded_items_csr(g.n_users, g.n_items, [ds.splits["train"], ds.splits["valid"]])
    c = GraphConstraint(g, vocab, hop_length=hop_length, excluded=[ds.splits["train"], ds.splits["valid"]])
    rng = np.random.default_rng(0)
    checked = 0
    for length in range(0, 2 * hop_length):
        prefixes = random_prefixes(g, rng, 12, length)
        ids = torch.tensor([tokens_of(vocab, n, r) for n, r in prefixes])
        mask = c.allowed_mask(ids).numpy()
        for row, (nodes, rels) in enumerate(prefixes):
            user = nodes[0]
            excluded = set(excl_x[excl_i[user]:excl_i[user + 1]].tolist())
            expected = brute_legal(g, vocab, nodes, rels, hop_length, excluded)
            assert set(np.flatnonzero(mask[row]).tolist()) == expected, (length, nodes, rels)
            checked += 1
    assert checked == 12 * 2 * hop_length


def test_call_sets_illegal_to_minus_inf_and_keeps_legal_scores():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph)
    c = GraphConstraint(ds.graph, vocab, hop_length=3)
    ids = torch.tensor([[BOS, vocab.node_offset + 0], [BOS, vocab.node_offset + 5]])
    scores = torch.randn(2, vocab.size)
    out = c(ids, scores)
    legal = torch.isfinite(out)
    assert legal.sum(1).tolist() == [1, 1]  # only the user-item relation after the user
    assert legal[:, RELATION_OFFSET].all()
    assert torch.equal(out[legal], scores[legal])


def test_last_step_excludes_seen_items_and_non_items():
    ds = make_synthetic_dataset()
    g = ds.graph
    vocab = Vocabulary.from_graph(g)
    train = ds.splits["train"]
    c = GraphConstraint(g, vocab, hop_length=1, excluded=[train])
    users = np.arange(g.n_users)
    ids = torch.tensor([[BOS, vocab.node_offset + u, RELATION_OFFSET] for u in users])
    mask = c.allowed_mask(ids).numpy()
    # 1 hop from a user through the UI relation reaches only its training items, all excluded
    assert not mask.any()
    c0 = GraphConstraint(g, vocab, hop_length=1)
    mask0 = c0.allowed_mask(ids).numpy()
    for u in users[:5]:
        expected = vocab.node_offset + g.n_users + np.unique(train.items[train.users == u])
        assert set(np.flatnonzero(mask0[u]).tolist()) == set(expected.tolist())


def test_dead_rows_and_padding_get_no_legal_token():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph)
    c = GraphConstraint(ds.graph, vocab, hop_length=3)
    ids = torch.tensor([[BOS, vocab.node_offset, RELATION_OFFSET, 0]])  # [PAD] as the current node
    assert not c.allowed_mask(ids).any()


def test_constructor_validation():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph)
    with pytest.raises(ValueError, match="vocabulary sizes"):
        GraphConstraint(ds.graph, Vocabulary(1, 2, 3, 4), hop_length=3)
    with pytest.raises(ValueError, match="hop_length"):
        GraphConstraint(ds.graph, vocab, hop_length=0)
    with pytest.raises(ValueError, match="indptr"):
        GraphConstraint(ds.graph, vocab, hop_length=3, excluded=(np.zeros(3, np.int64), np.zeros(0, np.int64)))
    c = GraphConstraint(ds.graph, vocab, hop_length=3)
    with pytest.raises(ValueError, match="outside"):
        c.allowed_mask(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="scores must have shape"):
        c(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_runs_on_gpu():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph)
    c = GraphConstraint(ds.graph, vocab, hop_length=3, device="cuda", excluded=[ds.splits["train"]])
    ids = torch.tensor([[BOS, vocab.node_offset + 1]], device="cuda")
    out = c(ids, torch.zeros(1, vocab.size, device="cuda"))
    assert out.device.type == "cuda" and torch.isfinite(out).sum() == 1
