"""The whole job on real ml-100k with the quick preset: KGGLM must rank above the Pop baseline.

This is the accuracy guard of the project (about 1-3 minutes on a 2-core CPU): pretrain on KG walks,
fine-tune on user paths with validation-driven early stopping, decode explanations for every test
user, and compare with Pop on the same split. The metrics are recomputed here from the exported
recommendations, independently of the evaluator.
"""

from __future__ import annotations

import json

import pytest

from cases import reference_metrics
from kgglm.data import load_dataset
from kgglm.quick_start import run_pipeline

pytestmark = pytest.mark.slow


def test_quick_preset_on_ml100k_beats_pop_with_valid_explanations(shared_data, tmp_path):
    result = run_pipeline("KGGLM", "ml-100k", preset="quick",
                          config_dict={"data_path": str(shared_data), "checkpoint_dir": str(tmp_path),
                                       "show_progress": False, "show_examples": 0})
    test, pop = result.test_result, result.baselines["Pop"]["test"]
    assert test["path_coverage"] == 1.0 and test["valid_paths"] == 1.0 and test["users_short"] == 0
    assert test["ndcg@10"] > pop["ndcg@10"] * 1.2, (test["ndcg@10"], pop["ndcg@10"])

    # independent check of the exported top-10 against the raw test split
    data = load_dataset("ml-100k", data_path=shared_data)
    test_split = data.splits["test"]
    relevant: dict[int, set[int]] = {}
    for u, i in zip(data.user_tokens[test_split.users], data.item_tokens[test_split.items]):
        relevant.setdefault(str(u), set()).add(str(i))
    recs: dict[str, list[str]] = {}
    train_pairs = set(zip(data.user_tokens[data.splits["train"].users].tolist(),
                          data.item_tokens[data.splits["train"].items].tolist()))
    with open(result.files["recommendations"]) as f:
        for line in f:
            row = json.loads(line)
            assert (str(row["user"]), str(row["item"])) not in train_pairs  # never a seen item
            recs.setdefault(str(row["user"]), []).append((row["rank"], str(row["item"])))
    recs = {u: [i for _, i in sorted(v)] for u, v in recs.items()}
    users = sorted(relevant)
    reference = reference_metrics([recs.get(u, []) for u in users], [relevant[u] for u in users], 10)
    assert reference["ndcg@10"] == pytest.approx(test["ndcg@10"], abs=1e-4)
    assert reference["recall@10"] == pytest.approx(test["recall@10"], abs=1e-4)
