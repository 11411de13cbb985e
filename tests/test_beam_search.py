"""Constrained beam search: legal paths, distinct unseen items, scores, widening, trained pattern."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cases import generation, make_model
from kgglm.data.dataset import build_graph
from kgglm.data.dataset import items_csr as excluded_items_csr
from kgglm.decode.beam_search import beam_search
from kgglm.decode.constraints import GraphConstraint
from kgglm.paths.vocab import BOS, PAD, RELATION_OFFSET, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset

H = 3


def tiny_model(vocab, seed=0, init=0.02, emb=32, layers=2):
    return make_model(vocab, n_positions=2 * H + 3, embedding_size=emb, num_layers=layers, initializer_range=init,
                      seed=seed).eval()


def reachable_unseen(graph, user: int, excluded: set, hops: int = H) -> set:
    """Items reachable from ``user`` in exactly ``hops`` hops, first hop UI (plain BFS over sets)."""
    frontier = {int(m) for m, r in zip(*graph.neighbors(user)) if r == 0}
    for _ in range(hops - 1):
        frontier = {int(m) for n in frontier for m in graph.neighbors(n)[0]}
    items = {n - graph.n_users for n in frontier if graph.n_users <= n < graph.n_users + graph.n_items}
    return items - excluded


def check_paths(out, graph, vocab, excl_csr):
    """Every returned path is legal (has_edge on every hop), starts at the user, ends on its unseen item."""
    items, paths = out.items.cpu().numpy(), out.paths.cpu().numpy()
    users = out.users.cpu().numpy()
    for row in range(len(users)):
        valid = items[row] >= 0
        assert len(set(items[row][valid].tolist())) == valid.sum()  # distinct
        assert (items[row][valid.sum():] == -1).all()  # missing entries only at the end
        p = paths[row][valid]
        nodes, rels = p[:, 0::2] - vocab.node_offset, p[:, 1::2] - RELATION_OFFSET
        assert (nodes[:, 0] == users[row]).all() and (rels[:, 0] == 0).all()
        assert graph.has_edge(nodes[:, :-1], rels, nodes[:, 1:]).all()
        assert (nodes[:, -1] == graph.n_users + items[row][valid]).all()
        seen = set(excl_csr[1][excl_csr[0][users[row]]:excl_csr[0][users[row] + 1]].tolist())
        assert not seen & set(items[row][valid].tolist())
        assert (paths[row][~valid] == PAD).all()


def path_log_probs(model, constraint, paths):
    """Sum of masked, renormalised token log-probs of full paths, recomputed without a cache."""
    ids = torch.cat([torch.full((paths.shape[0], 1), BOS), paths], dim=1)
    logits, _ = model(ids[:, :-1])
    total = torch.zeros(paths.shape[0])
    for t in range(1, ids.shape[1] - 1):  # positions: predict ids[:, t+1] from ids[:, :t+1]
        lp = F.log_softmax(constraint(ids[:, :t + 1], logits[:, t].float()), dim=-1)
        total += lp.gather(1, ids[:, t + 1:t + 2]).squeeze(1)
    return total


@pytest.fixture(scope="module")
def bigger():
    ds = make_synthetic_dataset(n_users=30, n_items=90, n_clusters=3, items_per_user=20, seed=1)
    vocab = Vocabulary.from_graph(ds.graph)
    excluded = [ds.splits["train"], ds.splits["valid"]]
    c = GraphConstraint(ds.graph, vocab, hop_length=H, excluded=excluded)
    csr = excluded_items_csr(ds.n_users, ds.n_items, excluded)
    return ds, vocab, c, csr


def test_paths_legal_distinct_unseen_and_k_items(bigger):
    ds, vocab, c, csr = bigger
    model = tiny_model(vocab, init=0.5)
    users = np.arange(ds.n_users)
    out = beam_search(model, c, users, generation(num_beams=8), n_return=10, return_item_scores=True)
    check_paths(out, ds.graph, vocab, csr)
    for row, u in enumerate(users):
        seen = set(csr[1][csr[0][u]:csr[0][u + 1]].tolist())
        reach = reachable_unseen(ds.graph, int(u), seen)
        assert (out.items[row] >= 0).sum().item() == min(10, len(reach))
        assert set(out.items[row][out.items[row] >= 0].tolist()) <= reach
    # the score matrix holds the returned scores, and nothing else beats the k-th item
    got = out.item_scores.gather(1, out.items.clamp(min=0))
    assert torch.allclose(got[out.items >= 0], out.scores[out.items >= 0])
    kth = out.scores[:, -1:]
    assert (out.item_scores <= kth + 1e-6).sum(1).ge(out.item_scores.shape[1] - 10).all()


def test_scores_equal_recomputed_path_log_probs(bigger):
    ds, vocab, c, _ = bigger
    model = tiny_model(vocab, init=0.5, seed=3)
    out = beam_search(model, c, np.arange(6), generation(num_beams=5), n_return=4)
    ok = out.items >= 0
    recomputed = path_log_probs(model, c, out.paths[ok])
    assert torch.allclose(recomputed, out.scores[ok], atol=1e-4)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()  # sorted best first
    cum = beam_search(model, c, np.arange(6), generation(num_beams=5, ranking="cumulative"), n_return=4)
    okc = cum.items >= 0
    assert ((cum.scores[okc] > 0) & (cum.scores[okc] <= 1)).all()


def test_sparse_and_dense_paths_agree(bigger):
    ds, vocab, c, _ = bigger
    model = tiny_model(vocab, init=0.5, seed=5)
    a = beam_search(model, c, np.arange(10), generation(num_beams=6), n_return=10, return_item_scores=True, sparse=True)
    b = beam_search(model, c, np.arange(10), generation(num_beams=6), n_return=10, return_item_scores=True,
                    sparse=False)
    assert torch.equal(a.items, b.items)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)
    fa, fb = torch.isfinite(a.item_scores), torch.isfinite(b.item_scores)
    assert torch.equal(fa, fb)


def test_sampling_gives_legal_paths(bigger):
    ds, vocab, c, csr = bigger
    model = tiny_model(vocab, init=0.5)
    gen = torch.Generator().manual_seed(0)
    sampling = generation(num_beams=6, do_sample=True, top_k=5, top_p=0.9, temperature=1.5)
    out = beam_search(model, c, np.arange(8), sampling, n_return=5, generator=gen)
    check_paths(out, ds.graph, vocab, csr)
    assert (out.items >= 0).all()


class HubModel(torch.nn.Module):
    """Stand-in model (same forward signature): fixed logits strongly preferring one hub entity."""

    class Cache:
        def __init__(self):
            self.length = 0

        def reorder(self, index):
            return self

    def __init__(self, vocab_size, favourite):
        super().__init__()
        self.bias = torch.zeros(vocab_size)
        self.bias[favourite] = 20.0

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        cache = past_key_values or self.Cache()
        cache.length += input_ids.shape[1]
        return self.bias.expand(input_ids.shape[0], input_ids.shape[1], -1).clone(), cache


def test_collapsed_beams_are_widened_to_k_distinct_items():
    # user 0 watched items 0..5; all of them link to hub entity E0, which links to one more item (6).
    # Items 7..16 hang off entity E1 (linked to item 0 only). With 2 beams both beams go to E0 and
    # can only end on item 6: the search must widen to return 5 distinct items.
    n_users, n_items, n_ent = 1, 17, 2
    heads = [n_users + i for i in range(7)] + [n_users + 0] + [n_users + i for i in range(7, 17)]
    tails = [n_users + n_items] * 7 + [n_users + n_items + 1] * 11
    rels = [1] * 7 + [2] * 11
    from kgglm.data.dataset import Interactions
    train = Interactions(np.zeros(6, np.int64), np.arange(6, dtype=np.int64))
    g = build_graph(n_users, n_items, n_ent, 3, train, np.array(heads), np.array(rels), np.array(tails))
    vocab = Vocabulary.from_graph(g)
    c = GraphConstraint(g, vocab, hop_length=H, excluded=[train])
    model = HubModel(vocab.size, vocab.node_offset + n_users + n_items)  # favours E0
    out = beam_search(model, c, [0], generation(num_beams=2), n_return=5)
    assert out.stats["widened_users"] >= 1
    csr = excluded_items_csr(n_users, n_items, [train])
    check_paths(out, g, vocab, csr)
    assert (out.items >= 0).sum() == 5
    # without widening the same search finds a single item: the collapse really happens
    narrow = beam_search(model, c, [0], generation(num_beams=2, max_num_beams=2), n_return=5)
    assert (narrow.items >= 0).sum() == 1


@pytest.fixture()
def one_thread():
    """Tiny models run faster on one thread, and far faster when other processes share the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_trained_model_recommends_the_pattern_first(one_thread):
    """Users like one cluster of items; the KG only has "shelf" entities holding one item of each cluster.

    The graph favours the shelf paths (few items per shelf, so high path probabilities under a
    near-uniform model) and those mix clusters, so an untrained model ranks items of all clusters;
    after a short training on user paths (which end on the users' own items, so they go through
    other users) the top recommendations are from the user's cluster.
    """
    from kgglm.paths.sampling import sample_user_paths

    base = make_synthetic_dataset(n_users=30, n_items=30, n_clusters=3, items_per_user=8, seed=2)
    n_shelves = base.n_items // 3
    kg_h, kg_r = base.n_users + np.arange(base.n_items), np.ones(base.n_items, np.int64)
    kg_t = base.n_users + base.n_items + np.arange(base.n_items) // 3  # items 3s, 3s+1, 3s+2: clusters 0, 1, 2
    graph = build_graph(base.n_users, base.n_items, n_shelves, 2, base.splits["train"], kg_h, kg_r, kg_t)
    ds = replace(base, entity_tokens=np.array([f"shelf{s}" for s in range(n_shelves)], dtype=object),
                 relation_tokens=np.array(["[UI-Relation]", "in_catalog"], dtype=object),
                 kg_heads=kg_h, kg_relations=kg_r, kg_tails=kg_t, graph=graph)
    vocab = Vocabulary.from_graph(graph)
    c = GraphConstraint(graph, vocab, hop_length=H, excluded=[ds.splits["train"]])
    users = np.arange(ds.n_users)
    user_cluster, item_cluster = users % 3, np.arange(ds.n_items) % 3

    def cluster_share(model):
        out = beam_search(model, c, users, generation(num_beams=10), n_return=3)
        items = out.items.numpy()
        assert (items >= 0).all()
        return float((item_cluster[items] == user_cluster[:, None]).mean())

    model = tiny_model(vocab, seed=0, emb=48, layers=2)
    before = cluster_share(model)
    paths = sample_user_paths(graph, ds.splits["train"], max_paths_per_user=60, hop_length=H, seed=0)
    tokens = torch.as_tensor(paths.tokens(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        batch = tokens[torch.randint(len(tokens), (64,), generator=gen)]
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = cluster_share(model)
    print("cluster share before", before, "after", after)
    assert after >= 0.9, (before, after)
    assert after > before + 0.2, (before, after)


def test_input_validation(bigger):
    ds, vocab, c, _ = bigger
    model = tiny_model(vocab)
    with pytest.raises(ValueError, match="user index"):
        beam_search(model, c, [ds.n_users], generation(), n_return=10)
    with pytest.raises(ValueError, match="ranking"):
        generation(ranking="nope")
    short = make_model(vocab, n_positions=4, embedding_size=16, num_layers=1)
    with pytest.raises(ValueError, match="n_positions"):
        beam_search(short, c, [0], generation(), n_return=10)
