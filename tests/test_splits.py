"""Splits: RecBole's per-user counts, orders, reproducibility and per-user seeding."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.data.atomic import DatasetError
from kgglm.data.splits import normalize_eval_args, split_indices


def recbole_split_ids(tot: int, ratios: list[float]) -> list[int]:
    """RecBole's Dataset._calcu_split_ids, copied as the independent reference."""
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def make_users(sizes, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(len(sizes)), sizes)
    return users[rng.permutation(len(users))]  # interleaved like a real file


def counts(users, parts, n_users):
    return {k: np.bincount(users[v], minlength=n_users) for k, v in parts.items()}


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.7, 0.3, 0.0], [8, 1, 1]])
def test_ratio_counts_match_recbole(ratios):
    sizes = np.arange(1, 60)
    users = make_users(sizes)
    parts = split_indices(users, eval_args={"split": {"RS": ratios}}, seed=1)
    got = counts(users, parts, len(sizes))
    norm = [r / sum(ratios) for r in ratios]
    for u, size in enumerate(sizes):
        assert [got["train"][u], got["valid"][u], got["test"][u]] == recbole_split_ids(int(size), norm), size


def test_parts_partition_all_rows_and_users_with_one_interaction_stay_in_train():
    sizes = [1, 1, 2, 3, 10, 25]
    users = make_users(sizes)
    parts = split_indices(users)
    allrows = np.concatenate(list(parts.values()))
    assert sorted(allrows.tolist()) == list(range(len(users)))
    got = counts(users, parts, len(sizes))
    assert got["train"][0] == got["train"][1] == 1 and got["valid"][0] == got["test"][0] == 0


def test_overall_ratio_close_to_requested():
    users = make_users(np.full(200, 50))
    parts = split_indices(users, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}})
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [8000, 1000, 1000]


def test_reproducible_and_seed_dependent():
    users = make_users(np.full(30, 20))
    a = split_indices(users, seed=7)
    b = split_indices(users, seed=7)
    c = split_indices(users, seed=8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], c["test"])


def test_random_order_is_seeded_per_user():
    """A user's split depends on the seed and its own rows only, not on the other users."""
    users = make_users([20, 20, 20])
    full = split_indices(users, seed=3)
    keep = np.flatnonzero(users != 1)  # drop user 1, keep the file order of the others
    sub = split_indices(users[keep], seed=3)
    for k in full:
        expected = full[k][users[full[k]] != 1]
        np.testing.assert_array_equal(keep[sub[k]], expected)


def test_random_order_actually_shuffles():
    users = np.zeros(100, dtype=np.int64)
    parts = split_indices(users, seed=0)
    assert not np.array_equal(np.sort(parts["test"]), np.arange(90, 100))


def test_time_order_puts_latest_in_test():
    rng = np.random.default_rng(0)
    users = make_users([15, 30, 7])
    times = rng.permutation(len(users)).astype(float)
    parts = split_indices(users, eval_args={"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO"}, timestamps=times)
    for u in range(3):
        tr, va, te = (times[parts[k][users[parts[k]] == u]] for k in ("train", "valid", "test"))
        assert tr.max() < va.min() and va.max() < te.min()
        assert (np.diff(tr) > 0).all()  # rows kept in time order within a part


def test_time_order_ties_break_by_file_order():
    users = np.zeros(10, dtype=np.int64)
    parts = split_indices(users, eval_args={"order": "TO"}, timestamps=np.zeros(10))
    assert parts["train"].tolist() == list(range(8)) and parts["test"].tolist() == [9]


def test_leave_one_out():
    users = make_users([1, 2, 3, 6])
    times = np.arange(len(users), dtype=float)
    parts = split_indices(users, eval_args={"split": {"LS": "valid_and_test"}, "order": "TO"}, timestamps=times)
    got = counts(users, parts, 4)
    assert got["train"].tolist() == [1, 1, 1, 4]
    assert got["valid"].tolist() == [0, 0, 1, 1]
    assert got["test"].tolist() == [0, 1, 1, 1]
    for u in range(4):  # the test item is the user's latest
        te = parts["test"][users[parts["test"]] == u]
        if len(te):
            assert times[te[0]] == times[users == u].max()
    only = split_indices(users, eval_args={"split": {"LS": "test_only"}, "order": "TO"}, timestamps=times)
    assert len(only["valid"]) == 0 and len(only["test"]) == 3


def test_group_by_none_splits_globally():
    users = make_users([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    parts = split_indices(users, eval_args={"group_by": None})
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [8, 1, 1]


def test_bad_eval_args():
    with pytest.raises(DatasetError, match="eval_args.split"):
        normalize_eval_args({"split": {"XX": [1]}})
    with pytest.raises(DatasetError, match="eval_args.split.LS"):
        normalize_eval_args({"split": {"LS": "nope"}})
    with pytest.raises(DatasetError, match="eval_args.order"):
        normalize_eval_args({"order": "XO"})
    with pytest.raises(DatasetError, match="timestamp"):
        split_indices(np.zeros(3, dtype=np.int64), eval_args={"order": "TO"})
    assert normalize_eval_args({"order": "to"})["order"] == "TO"
