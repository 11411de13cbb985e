"""A synthetic data set of Amazon-book's size and shape, for scale benchmarks (``benchmarks/bench_scale.py``).

KGAT's Amazon-book has about 70k users, 25k items, 850k interactions, 89k KG entities (the items
included), 39 relations and 2.5M triples, with long-tailed degrees everywhere. This module makes a
data set with those counts (``scale=1.0``) or proportionally smaller ones (``scale=0.01`` for tests):

* **User degrees** are a Pareto tail above a minimum of 5 (so every user can be split 80/10/10),
  rescaled so they sum to the interaction count; **item popularity** is Zipf (rank^-0.9). Each user's
  items are distinct, drawn by popularity.
* **KG**: every item is linked to a KG entity of its own (``NAME.link``); the other entities are split
  into one block per relation (the relation's value type, e.g. authors, genres). A triple's relation
  is Zipf over relations, its tail is Zipf inside the relation's block (hub entities), its head an
  item (60%, KG degree Zipf over items) or an entity (40%, Zipf: the 2-hop part of the KG). Every
  item and every entity is in at least one triple, so the entity count is exact.
* **Timestamps** are seconds: a random start per user, then exponential gaps (mean 30 days).

Everything is vectorised NumPy driven by one seeded ``Generator`` (same seed, same files). Tokens
are integers like KGAT's remapped files: users ``0..U-1``, items ``0..I-1``, item ``i`` is linked
to entity ``i``, other entities are ``I..``; relations are ``r00..``. Written as RecBole atomic
files ``OUT/NAME/NAME.{inter,kg,link}``; load with ``load_dataset(NAME, data_path=OUT)``.

    python -m kgglm.synthetic.large --out /tmp/scale [--scale 1.0] [--seed 0] [--name amazon-book-synth]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kgglm import durable

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
KG_HEADER = "head_id:token\trelation_id:token\ttail_id:token"
LINK_HEADER = "item_id:token\tentity_id:token"
DEFAULT_NAME = "amazon-book-synth"


@dataclass(frozen=True)
class LargeSpec:
    """Counts and shape parameters; the defaults are Amazon-book's (KGAT version), rounded."""

    n_users: int = 70_000
    n_items: int = 25_000
    n_interactions: int = 850_000
    n_kg_entities: int = 89_000  # KG entities including the 25k linked items, as Amazon-book counts them
    n_triples: int = 2_500_000
    n_relations: int = 39
    min_user_degree: int = 5  # every user can give 80/10/10 at least one item each
    user_tail: float = 1.7  # Pareto index of user degrees (mean ~ min * tail / (tail - 1) before rescaling)
    item_zipf: float = 1.0  # item popularity ~ (rank + item_offset)^-item_zipf
    item_offset: float = 0.002  # times n_items: flattens the head (at full size the top item gets
    # ~0.3% of the interactions instead of ~5%; Amazon-book is 10-core filtered, its head is flat)
    relation_zipf: float = 1.0  # relation frequency ~ rank^-relation_zipf
    tail_zipf: float = 1.0  # tail popularity inside a relation's block
    head_item_zipf: float = 0.6  # KG degree of items as heads
    head_entity_zipf: float = 1.0  # KG degree of entities as heads
    item_head_share: float = 0.6  # share of triples whose head is an item

    def scaled(self, scale: float) -> "LargeSpec":
        """The same shape with every count multiplied by ``scale`` (relations and minima kept)."""
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        n_users = max(int(round(self.n_users * scale)), 10)
        n_items = max(int(round(self.n_items * scale)), 10)
        n_kg = max(int(round(self.n_kg_entities * scale)), n_items + self.n_relations)
        n_inter = max(int(round(self.n_interactions * scale)), n_users * self.min_user_degree)
        return replace(self, n_users=n_users, n_items=n_items, n_interactions=n_inter, n_kg_entities=n_kg,
                       n_triples=max(int(round(self.n_triples * scale)), n_kg), )

    @property
    def n_entities(self) -> int:
        """KG entities that are not items."""
        return self.n_kg_entities - self.n_items


@dataclass
class LargeData:
    """The generated tables as integer arrays (tokens are the integers themselves, see module docstring)."""

    spec: LargeSpec
    users: np.ndarray  # int64 [n_interactions]
    items: np.ndarray  # int64
    ratings: np.ndarray  # int8, 1..5
    timestamps: np.ndarray  # int64 seconds
    heads: np.ndarray  # int64 entity ids: item i is entity i, other entities n_items..
    relations: np.ndarray  # int64 0..n_relations-1
    tails: np.ndarray  # int64 entity ids


# ----------------------------------------------------------------------------------------- sampling
def _zipf_cdf(n: int, exponent: float, offset: float = 0.0) -> np.ndarray:
    """CDF of the Zipf-Mandelbrot law ``(rank + offset) ** -exponent`` over ranks ``1..n``."""
    w = (np.arange(1, n + 1, dtype=np.float64) + offset) ** -exponent
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


def _unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values by sort + adjacent compare: NumPy >= 2.3's hash-based ``np.unique``
    (and ``np.isin``, built on it) took most of a 2-minute run at full size."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def _first_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct values of ``keys`` in order of first occurrence."""
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    first = order[np.concatenate(([True], s[1:] != s[:-1]))] if keys.size else order
    return keys[np.sort(first)]


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_keys)`` by binary search in already-sorted keys."""
    if sorted_keys.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), sorted_keys.size - 1)
    return sorted_keys[pos] == values


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """``size`` iid ranks from a distribution given by its CDF (inverse transform, vectorised)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1).astype(np.int64)


def _apportion(rng: np.random.Generator, weights: np.ndarray, total: int, minimum: int, cap: int) -> np.ndarray:
    """Integers ``>= minimum`` and ``<= cap`` proportional to ``weights`` above the minimum, summing to
    ``total`` (when the cap allows): floor the shares, then hand the remainder out one by one."""
    n = len(weights)
    extra = total - n * minimum
    share = weights / weights.sum() * extra
    out = np.minimum(minimum + np.floor(share).astype(np.int64), cap)
    for _ in range(8):  # a few passes: capped rows push their remainder onto the others
        left = total - int(out.sum())
        room = np.flatnonzero(out < cap)
        if left <= 0 or room.size == 0:
            break
        take = rng.choice(room, size=min(left, room.size), replace=False)
        out[take] += 1
    return out


def _distinct_per_owner(rng: np.random.Generator, degree: np.ndarray, cdf: np.ndarray, perm: np.ndarray,
                        rounds: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """For each owner ``o``, ``degree[o]`` distinct values ``perm[rank]`` with rank drawn from ``cdf``.

    Rounds of oversampled draws with replacement for every owner still short, de-duplicated on
    ``(owner, value)``; surplus is cut at random (a random priority, so no value is favoured).
    """
    m = len(perm)
    keys = np.zeros(0, dtype=np.int64)
    have = np.zeros(len(degree), dtype=np.int64)
    for _ in range(rounds):
        short = np.flatnonzero(have < degree)
        if short.size == 0:
            break
        need = degree[short] - have[short]
        owner = np.repeat(short, np.ceil(need * 1.25).astype(np.int64) + 2)
        new = owner * m + perm[_draw(rng, cdf, owner.size)]
        keys = _unique(np.concatenate([keys, new]))
        prio = rng.random(keys.size)
        order = np.lexsort((prio, keys // m))  # by owner, random inside
        keys = keys[order]
        own = keys // m
        count = np.bincount(own, minlength=len(degree))
        rank = np.arange(keys.size) - np.repeat(np.cumsum(count) - count, count)
        keys = np.sort(keys[rank < degree[own]])
        have = np.minimum(count, degree)
    return keys // m, keys % m


def _cover(rng: np.random.Generator, items: np.ndarray, n_items: int) -> np.ndarray:
    """Give every item at least one interaction: an item nobody drew takes over one random row of an
    item with two or more (one row per donor and round, so no donor drops to zero). The row's user
    cannot already have the item, since nobody has it."""
    items = items.copy()
    for _ in range(16):
        count = np.bincount(items, minlength=n_items)
        missing = np.flatnonzero(count == 0)
        if missing.size == 0:
            break
        rows = rng.permutation(np.flatnonzero(count[items] >= 2))
        rows = rows[np.sort(np.unique(items[rows], return_index=True)[1])]  # first row of each donor item
        take = min(missing.size, rows.size)
        items[rows[:take]] = rng.permutation(missing)[:take]
    return items


def make_large_data(scale: float = 1.0, seed: int = 0, spec: LargeSpec | None = None) -> LargeData:
    """Generate the interactions and the KG (see module docstring) as integer arrays."""
    spec = (spec or LargeSpec()).scaled(scale)
    rng = np.random.default_rng(seed)
    nu, ni, ne, nr = spec.n_users, spec.n_items, spec.n_entities, spec.n_relations

    # ---- interactions: Pareto user degrees, Zipf item popularity over a random item order
    weights = rng.pareto(spec.user_tail, nu)
    cap = max(ni // 4, spec.min_user_degree)  # a user reads at most a quarter of the catalogue
    degree = _apportion(rng, weights, spec.n_interactions, spec.min_user_degree, cap=cap)
    users, items = _distinct_per_owner(rng, degree, _zipf_cdf(ni, spec.item_zipf, spec.item_offset * ni),
                                        rng.permutation(ni))
    items = _cover(rng, items, ni)
    # timestamps: per-user start + cumulative exponential gaps, computed as one global cumsum
    count = np.bincount(users, minlength=nu)
    gaps = rng.exponential(30 * 86400.0, users.size)
    csum = np.cumsum(gaps)
    seg_start = np.repeat(np.cumsum(count) - count, count)
    within = csum - (csum[seg_start] - gaps[seg_start])  # time since the user's first interaction
    start = rng.uniform(1.0e9, 1.45e9, nu)
    # rows are sorted by (user, item); shuffle items inside each user (``within`` stays increasing
    # along the rows), so the time order of a user's items does not follow item ids
    perm = np.lexsort((rng.random(users.size), users))
    users, items = users[perm], items[perm]
    timestamps = (start[users] + within).astype(np.int64)
    ratings = (1 + _draw(rng, np.cumsum([0.05, 0.07, 0.18, 0.33, 0.37]), users.size)).astype(np.int8)

    # ---- KG: one block of entities per relation (its value type), Zipf everywhere
    rel_cdf = _zipf_cdf(nr, spec.relation_zipf)
    rel_weight = np.diff(np.concatenate([[0.0], rel_cdf]))
    block = _apportion(rng, np.sqrt(rel_weight), ne, 1, cap=ne)  # bigger relations, bigger value sets
    block_start = ni + np.cumsum(block) - block
    ent_rel = np.repeat(np.arange(nr), block)  # relation whose block holds each entity
    head_item_perm, head_ent_perm = rng.permutation(ni), ni + rng.permutation(ne)

    def tails_of(rel: np.ndarray) -> np.ndarray:
        # Zipf rank inside the block, ranks beyond the block size folded back (small blocks stay legal)
        rank = _draw(rng, _zipf_cdf(int(block.max()), spec.tail_zipf), rel.size)
        return block_start[rel] + rank % block[rel]

    def heads_of(size: int) -> np.ndarray:
        is_item = rng.random(size) < spec.item_head_share
        h = head_ent_perm[_draw(rng, _zipf_cdf(ne, spec.head_entity_zipf), size)]
        h[is_item] = head_item_perm[_draw(rng, _zipf_cdf(ni, spec.head_item_zipf), int(is_item.sum()))]
        return h

    # coverage: one triple per item (as head) and one per entity (as tail of its block's relation)
    cov_rel = np.concatenate([_draw(rng, rel_cdf, ni), ent_rel])
    cov_head = np.concatenate([np.arange(ni), head_item_perm[_draw(rng, _zipf_cdf(ni, spec.head_item_zipf), ne)]])
    cov_tail = np.concatenate([tails_of(cov_rel[:ni]), np.arange(ni, ni + ne)])
    cov_keys = (cov_head * nr + cov_rel) * (ni + ne) + cov_tail
    keys = _first_unique(cov_keys)
    for _ in range(20):  # top up with random triples until the count is reached
        short = spec.n_triples - keys.size
        if short <= 0:
            break
        size = int(short * 1.1) + 16
        rel = _draw(rng, rel_cdf, size)
        head, tail = heads_of(size), tails_of(rel)
        new = (head * nr + rel) * (ni + ne) + tail
        new = new[head != tail]
        new = _first_unique(new)
        new = new[~_isin_sorted(new, np.sort(keys))][:short]  # keeps earlier triples, drops repeats
        keys = np.concatenate([keys, new])
    heads, rest = keys // ((ni + ne) * nr), keys % ((ni + ne) * nr)
    relations, tails = rest // (ni + ne), rest % (ni + ne)
    return LargeData(spec, users, items, ratings, timestamps, heads, relations, tails)


# ----------------------------------------------------------------------------------------- writing
def _write(path: Path, header: str, columns: dict[str, np.ndarray]) -> None:
    """Tab-separated file with an atomic header; written durably (:mod:`kgglm.durable`)."""
    with durable.open_atomic(path, "w", newline="\n") as f:
        f.write(header + "\n")
        pd.DataFrame(columns).to_csv(f, sep="\t", header=False, index=False, lineterminator="\n")


def write_large_synthetic(out: str | Path, *, scale: float = 1.0, seed: int = 0, name: str = DEFAULT_NAME,
                          spec: LargeSpec | None = None) -> Path:
    """Generate and write ``OUT/NAME/NAME.{inter,kg,link}``; return that folder.

    Load it with ``kgglm.data.load_dataset(NAME, data_path=OUT)``. ``.inter`` is written last: the
    loader looks for it, so an interrupted write leaves nothing that looks complete.
    """
    data = make_large_data(scale, seed, spec)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    rel_names = np.array([f"r{k:02d}" for k in range(data.spec.n_relations)], dtype=object)
    _write(folder / f"{name}.kg", KG_HEADER, {"h": data.heads, "r": rel_names[data.relations], "t": data.tails})
    _write(folder / f"{name}.link", LINK_HEADER, {"i": np.arange(data.spec.n_items), "e": np.arange(data.spec.n_items)})
    _write(folder / f"{name}.inter", INTER_HEADER,
           {"u": data.users, "i": data.items, "r": data.ratings, "t": data.timestamps})
    return folder


def main(argv: list[str] | None = None) -> Path:
    """``python -m kgglm.synthetic.large --out DIR [--scale S] [--seed N] [--name NAME]``."""
    parser = argparse.ArgumentParser(prog="python -m kgglm.synthetic.large", description=(
        "Write an Amazon-book-sized synthetic data set as atomic files in OUT/NAME/; load it with "
        "kgglm.data.load_dataset(NAME, data_path=OUT) or kgglm run --dataset NAME --data-path OUT"))
    parser.add_argument("--out", required=True, help="folder that receives NAME/ (the data path to use)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every count (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--name", default=DEFAULT_NAME, help="default: %(default)s")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    folder = write_large_synthetic(args.out, scale=args.scale, seed=args.seed, name=args.name)
    spec = LargeSpec().scaled(args.scale)
    print(f"wrote {args.name} (scale {args.scale:g}): {spec.n_users} users, {spec.n_items} items, "
          f"~{spec.n_interactions} interactions, {spec.n_kg_entities} KG entities, {spec.n_triples} triples, "
          f"{spec.n_relations} relations -> {folder} in {time.perf_counter() - t0:.1f} s")
    return folder


if __name__ == "__main__":
    main()
