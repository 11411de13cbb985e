"""load_dataset: id maps, linking, names, de-duplication, bad input, and the real datasets' sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kgglm.config import Config
from kgglm.data import DatasetError, load_dataset
from kgglm.settings import resolve

INTER = [("u1", "i1", 1), ("u1", "i2", 2), ("u2", "i2", 3), ("u1", "i1", 4),  # (u1, i1) again
         ("u2", "i3", 5), ("u3", "i1", 6)]
KG = [("e1", "directed_by", "d1"), ("e2", "starring", "a1"), ("e1", "starring", "a1"),
      ("e2", "starring", "a1"), ("a1", "born_in", "x9")]  # a duplicate triple
LINK = [("i1", "e1"), ("i2", "e2"), ("i9", "e9")]  # i9 is not an interacted item
ITEM = [("i1", "Toy  Story", "1995"), ("i3", "", "1990")]


def write_dataset(root, name="toy", inter=INTER, kg=KG, link=LINK, item=ITEM, **extra):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    headers = {
        "inter": "user_id:token\titem_id:token\ttimestamp:float",
        "kg": "head_id:token\trelation_id:token\ttail_id:token",
        "link": "item_id:token\tentity_id:token",
        "item": "item_id:token\tmovie_title:token_seq\trelease_year:token",
    }
    for suffix, content in {"inter": inter, "kg": kg, "link": link, "item": item, **extra}.items():
        if content is None:
            continue
        if isinstance(content, str):  # raw file text
            text = content
        else:
            text = headers[suffix] + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in content)
        (folder / f"{name}.{suffix}").write_text(text, encoding="utf-8")
    return folder


def test_toy_dataset_maps_and_graph(tmp_path):
    write_dataset(tmp_path)
    ds = load_dataset("toy", data_path=tmp_path, eval_args={"split": {"RS": [1.0, 0.0, 0.0]}})
    assert ds.user_tokens.tolist() == ["u1", "u2", "u3"]  # order of first appearance
    assert ds.item_tokens.tolist() == ["i1", "i2", "i3"]
    assert ds.entity_tokens.tolist() == ["d1", "a1", "x9"]  # e1, e2 are items; i9/e9 ignored
    assert ds.relation_tokens.tolist() == ["[UI-Relation]", "born_in", "directed_by", "starring"]
    assert ds.item_entity_tokens.tolist() == ["e1", "e2", ""]
    assert ds.item_names.tolist() == ["Toy Story", "i2", "i3"]  # empty title falls back to the token
    assert len(ds.splits["train"]) == 5  # duplicate (u1, i1) dropped
    assert ds.stats["triples"] == 4 and ds.stats["kg_entities"] == 5 and ds.stats["linked_items"] == 2
    # independent check: every triple, written with tokens, matches the raw file de-duplicated
    names = ds.node_tokens()
    ent_of_item = dict(zip(ds.item_tokens, ds.item_entity_tokens))
    as_kg = [ent_of_item.get(t) or t for t in names]
    got = {(as_kg[h], ds.relation_tokens[r], as_kg[t]) for h, r, t in zip(ds.kg_heads, ds.kg_relations, ds.kg_tails)}
    assert got == set(KG)
    n_u, n_i = ds.n_users, ds.n_items
    assert ds.graph.has_edge([0, n_u + 0], [0, 2], [n_u + 0, n_u + n_i + 0]).all()  # u1-i1, i1-directed-d1


def test_item_names_from_linked_entities(tmp_path):
    write_dataset(tmp_path)
    ds = load_dataset("toy", data_path=tmp_path, item_name="entity")
    assert ds.item_names.tolist() == ["e1", "e2", "i3"]  # unlinked i3: its title, here its token
    with pytest.raises(ValueError, match="item_name"):
        load_dataset("toy", data_path=tmp_path, item_name="label")


def test_custom_field_names_and_ui_relation(tmp_path):
    folder = write_dataset(tmp_path, item=None)
    text = (folder / "toy.inter").read_text().replace("user_id:token", "uid:token")
    (folder / "toy.inter").write_text(text)
    ds = load_dataset("toy", data_path=tmp_path, USER_ID_FIELD="uid", ui_relation="interacted")
    assert ds.relation_tokens[0] == "interacted" and ds.n_users == 3
    assert ds.item_names.tolist() == ds.item_tokens.tolist()  # no .item file: tokens


def test_data_path_may_be_the_dataset_folder(tmp_path):
    folder = write_dataset(tmp_path)
    assert load_dataset("toy", data_path=folder).n_items == 3


def test_load_from_resolved_settings(tmp_path):
    """A run's data section (resolved from the layered config) and the same options by hand read alike."""
    write_dataset(tmp_path)
    options = resolve(Config("KGGLM", "toy", config_dict={"data_path": str(tmp_path), "seed": 1})).data
    ds = load_dataset("toy", options, cache=False)
    by_hand = load_dataset("toy", data_path=str(tmp_path), seed=1, cache=False)
    assert ds.n_users == 3
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(ds.splits[part].items, by_hand.splits[part].items)
    assert load_dataset("toy", options, cache=False, seed=2).stats["dataset"] == "toy"  # a field replaced
    with pytest.raises(TypeError):
        load_dataset("toy", data_path=str(tmp_path), epochs=3)  # not a data option


@pytest.mark.parametrize("kwargs,pattern", [
    ({"link": [("i1", "e1"), ("i2", "e2"), ("i1", "e7")]},
     r"toy.link line 4, field 'item_id': item 'i1' is linked to entity 'e7' but line 2"),
    ({"link": [("i1", "e1"), ("i2", "e1")]},
     r"toy.link line 3, field 'entity_id': entity 'e1' is linked to item 'i2' but line 2"),
    ({"inter": []}, r"toy.inter line 2: no data rows"),
    ({"inter": [("u1", "i1", 1), ("", "i2", 2)]}, r"toy.inter line 3, field 'user_id': empty value"),
    ({"inter": [("u1", "i1", "x")]}, r"toy.inter line 2, field 'timestamp': 'x' is not a number"),
    ({"kg": [("e1", "r", "d1"), ("e1", "r")]}, r"toy.kg line 3: found 2 .*expected 3"),
    ({"kg": None}, r"toy.kg: file not found"),
    ({"link": None}, r"toy.link: file not found"),
    ({"kg": "head_id:token\trelation:token\ttail_id:token\ne1\tr\td1\n"},
     r"toy.kg line 1: header lacks required field 'relation_id'"),
    ({"kg": [("e1", "[UI-Relation]", "d1")]}, r"toy.kg: KG relation '\[UI-Relation\]'"),
])
def test_bad_input_errors(tmp_path, kwargs, pattern):
    write_dataset(tmp_path, **kwargs)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset("toy", data_path=tmp_path)


def test_repeated_identical_link_is_fine(tmp_path):
    write_dataset(tmp_path, link=LINK + [("i1", "e1")])
    assert load_dataset("toy", data_path=tmp_path).item_entity_tokens[0] == "e1"


def test_benchmark_files(tmp_path):
    folder = write_dataset(tmp_path)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    (folder / "toy.tr.inter").write_text(header + "u1\ti1\t1\nu2\ti2\t2\n")
    (folder / "toy.va.inter").write_text(header + "u1\ti2\t3\n")
    (folder / "toy.te.inter").write_text(header + "u2\ti3\t4\nu2\ti2\t5\n")  # (u2, i2) already in train
    ds = load_dataset("toy", data_path=tmp_path, benchmark_filename=["tr", "va", "te"])
    assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [2, 1, 1]
    with pytest.raises(DatasetError, match="toy.missing.inter: file not found"):
        load_dataset("toy", data_path=tmp_path, benchmark_filename=["tr", "va", "missing"])


def test_ml100k_sizes(shared_data):
    ds = load_dataset("ml-100k", data_path=shared_data)
    s = ds.stats
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    assert (s["triples"], s["kg_relations"], s["kg_entities"], s["linked_items"]) == (91_631, 24, 34_628, 1_598)
    assert ds.n_entities == 34_628 - 1_598 and ds.n_relations == 25
    assert sum(len(v) for v in ds.splits.values()) == 100_000
    assert ds.item_names[ds.item_index(["1"])[0]] == "Toy Story"
    # reproducible across runs, different across seeds
    again = load_dataset("ml-100k", data_path=shared_data)
    other = load_dataset("ml-100k", data_path=shared_data, seed=1)
    np.testing.assert_array_equal(ds.splits["test"].items, again.splits["test"].items)
    assert not np.array_equal(ds.splits["test"].items, other.splits["test"].items)


def test_ml1m_dataset_config_names_items_by_dbpedia_entity(shared_data):
    config = Config("KGGLM", "ml1m", config_dict={"data_path": str(shared_data)})
    assert config["item_name"] == "entity"
    ds = load_dataset("ml1m", resolve(config).data)
    k = int(np.flatnonzero(ds.item_entity_tokens == "Back_to_the_Future")[0])
    assert ds.item_names[k] == "Back_to_the_Future"


def test_ml1m_sizes_with_benchmark_files(shared_data):
    ds = load_dataset("ml1m", data_path=shared_data, benchmark_filename=["train", "valid", "test"])
    s = ds.stats
    assert (s["users"], s["items"], s["interactions"]) == (6040, 2983, 932_293)
    assert (s["triples"], s["kg_relations"]) == (193_089, 11)
    assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [556_989, 190_063, 185_241]
    assert ds.item_names[ds.item_index(["2"])[0]] == "Jumanji (1995)"


def test_cli_data_command(tmp_path, capsys):
    from kgglm.cli import main

    write_dataset(tmp_path)
    assert main(["data", "--dataset", "toy", "--data-path", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["triples"], stats["linked_items"]) == (3, 3, 4, 2)
    assert main(["data", "--dataset", "toy", "--data-path", str(tmp_path)]) == 0
    assert "CSR edges" in capsys.readouterr().out
    write_dataset(tmp_path, link=[("i1", "e1"), ("i1", "e2")])
    assert main(["data", "--dataset", "toy", "--data-path", str(tmp_path)]) != 0
    assert "toy.link line 3" in capsys.readouterr().err
