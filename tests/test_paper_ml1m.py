"""ML1M from the paper's repository: a fixture of its exact layout (``data/ml1m/preprocessed/``), built
from known atomic rows, is converted (and downloaded from 127.0.0.1) and must give those rows back."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from download_helpers import (
    ATOMIC,
    ATOMIC_URL,
    KB4REC,
    KG_URL,
    assert_nothing_installed,
    closed_port_url,
    serve,
    write_zip,
)

from kgglm.data import DatasetError, fetch, load_dataset, paper_ml1m
from kgglm.data.download import CHECKSUM_FILE, resolve_dataset
from kgglm.data.paper_ml1m import DBPEDIA, SOURCES, convert_paper_ml1m

# the atomic rows the fixture encodes; entity and relation numbers are list positions
ENTITIES = ["Toy_Story", "Face/Off", "Off", "Tom_Hanks", "John_Woo", "Category:Films", "Heat_(1995_film)",
            "Al_Pacino"]  # "Face/Off" and "Off" share e_map.txt's name column ("Off"): the URI decides
RELATIONS = ["starred_by_actor", "directed_by_director", "belong_to_category"]
KG = [("Toy_Story", "starred_by_actor", "Tom_Hanks"), ("Face/Off", "directed_by_director", "John_Woo"),
      ("Heat_(1995_film)", "starred_by_actor", "Al_Pacino"), ("Face/Off", "belong_to_category", "Category:Films"),
      ("Heat_(1995_film)", "belong_to_category", "Off")]
KG_TRAIN, KG_TEST = KG[:4], KG[2:]  # overlapping, as upstream
ITEMS = [("1", "Toy Story (1995)", "Children's", "Toy_Story"), ("7", "Face/Off (1997)", "Action", "Face/Off"),
         ("6", "Heat (1995)", "Film-Noir", "Heat_(1995_film)")]
USERS = [("1", "F", "Under 18"), ("2", "M", "56+"), ("3", "M", "25-34")]
SPLITS = {"train": [("1", "1", "100"), ("1", "7", "101"), ("2", "6", "102"), ("3", "1", "103")],
          "valid": [("1", "6", "200"), ("2", "1", "201"), ("3", "7", "202")],
          "test": [("2", "7", "300"), ("3", "6", "301"), ("1", "1", "302")]}
USER_NUMBER = {"1": "2", "2": "0", "3": "1"}  # original id -> the repository's new_id
ITEM_NUMBER = {"1": "1", "7": "2", "6": "0"}


def tsv(header: list[str] | None, rows: list[tuple]) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in ([header] if header else []) + rows)


def paper_layout(folder: Path, *, item_number: dict[str, str] = ITEM_NUMBER) -> dict[str, str]:
    """Write the repository's files for the rows above in ``folder``; return their SHA-256 by path."""
    eid = {e: i for i, e in enumerate(ENTITIES)}
    rid = {r: i for i, r in enumerate(RELATIONS)}

    def kg(triples):
        rows = [(eid[h], rid[r], eid[t]) for h, r, t in triples]
        return tsv(["entity_head", "relation", "entity_tail"], rows[:2] + [rows[0]] + rows[2:])  # a duplicate

    def numbered(split):
        return tsv(None, [(USER_NUMBER[u], ITEM_NUMBER[i], 1, ts) for u, i, ts in SPLITS[split]])

    texts = {
        "e_map.txt": tsv(["eid", "name", "entity"], [(i, e.split("/")[-1], DBPEDIA + e) for e, i in eid.items()]),
        "r_map.txt": tsv(["id", "kb_relation", "name"], [(i, f"http://dbpedia.org/ontology/r{i}", r)
                                                         for r, i in rid.items()]),
        "kg_final.txt": kg(KG), "kg_train.txt": kg(KG_TRAIN), "kg_test.txt": kg(KG_TEST),
        "i2kg_map.txt": tsv(["eid", "pid", "name", "entity"], [(eid[e], p, e, DBPEDIA + e) for p, _, _, e in ITEMS]),
        "products.txt": tsv(["pid", "name", "provider_id", "genre", "pop_item", "pop_provider"],
                            [(p, t, 9, g, 0.5, 0.25) for p, t, g, _ in ITEMS]),
        "users.txt": tsv(["uid", "gender", "age"], USERS),
        "valid.txt": tsv(None, [(u, i, 1, ts) for u, i, ts in SPLITS["valid"]]),
        "test.txt": tsv(None, [(u, i, 1, ts) for u, i, ts in SPLITS["test"]]),
        "mapping/user.txt": tsv(["new_id", "rating_id"], [(n, u) for u, n in USER_NUMBER.items()]),
        "mapping/product.txt": tsv(["new_id", "rating_id"], [(n, i) for i, n in item_number.items()]),
    }
    for rel, text in texts.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    for split in SPLITS:
        (folder / "mapping" / f"{split}.txt.gz").write_bytes(gzip.compress(numbered(split).encode()))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(SOURCES)
    return {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in SOURCES}


INTER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
KG_COLS = ["head_id:token", "relation_id:token", "tail_id:token"]
EXPECTED = {
    "ml1m.kg": tsv(KG_COLS, KG), "ml1m.train.kg": tsv(KG_COLS, KG_TRAIN), "ml1m.test.kg": tsv(KG_COLS, KG_TEST),
    "ml1m.link": tsv(["item_id:token", "entity_id:token"], [(p, e) for p, _, _, e in ITEMS]),
    "ml1m.item": tsv(["item_id:token", "movie_title:token_seq", "genre:token"], [(p, t, g) for p, t, g, _ in ITEMS]),
    "ml1m.user": tsv(["user_id:token", "gender:token", "age:token"],
                     [(u, g, a.replace(" ", "_")) for u, g, a in USERS]),
    **{f"ml1m.{s}.inter": tsv(INTER, [(u, i, 1, ts) for u, i, ts in rows]) for s, rows in SPLITS.items()},
    "ml1m.inter": tsv(INTER, [(u, i, 1, ts) for s in ("train", "valid", "test") for u, i, ts in SPLITS[s]]),
}


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A per-test user cache, no data root; returns where ml1m lands."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KGGLM_DATASET_CACHE", "off")
    for var in ("KGGLM_DATA", "KGGLM_DOWNLOAD_URL", paper_ml1m.URL_ENV):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache" / "kgglm" / "ml1m"


@pytest.fixture()
def server(tmp_path, env, monkeypatch):
    """The repository's folder served from 127.0.0.1; the fixture's SHA-256 stand for the pinned ones."""
    www = tmp_path / "www"
    monkeypatch.setattr(paper_ml1m, "SOURCES", paper_layout(www / "preprocessed"))
    with serve(www) as (url, requests):
        monkeypatch.setenv(paper_ml1m.URL_ENV, f"{url}/preprocessed")
        yield www, requests


def test_conversion_gives_back_the_atomic_rows(tmp_path):
    paper_layout(tmp_path / "src")
    counts = convert_paper_ml1m(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(EXPECTED)
    for name, text in EXPECTED.items():
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == text, name
    assert counts["ml1m.inter"] == 10 and counts["kg_final.txt duplicates dropped"] == 1


def test_download_into_the_cache(server, env):
    _, requests = server
    folder = resolve_dataset("ml1m", show_progress=False)
    assert folder == env
    assert sorted(p.name for p in folder.iterdir()) == sorted([*EXPECTED, CHECKSUM_FILE])
    for name, text in EXPECTED.items():
        assert (folder / name).read_text(encoding="utf-8") == text, name
    sums = json.loads((folder / CHECKSUM_FILE).read_text())
    assert set(sums["files"]) == set(EXPECTED)
    assert sums["zips"] == {f"preprocessed/{k}": v for k, v in paper_ml1m.SOURCES.items()}
    assert sorted(requests) == sorted(f"/preprocessed/{rel}" for rel in SOURCES)
    data = load_dataset("ml1m", benchmark_filename=["train", "valid", "test"], cache=False)
    assert (data.n_users, data.n_items, len(data.splits["valid"].users)) == (3, 3, 3)
    assert resolve_dataset("ml1m") == folder and len(requests) == len(SOURCES)  # found: no new request


def test_pinned_checksums_refuse_other_files(tmp_path, env, monkeypatch):
    www = tmp_path / "www"
    paper_layout(www / "preprocessed")  # not the paper's files: the pinned SHA-256 of SOURCES do not match
    with serve(www) as (url, _):
        monkeypatch.setenv(paper_ml1m.URL_ENV, f"{url}/preprocessed")
        with pytest.raises(DatasetError, match=r"e_map.txt: SHA256 hash of downloaded file .* does not match .*"
                                               r"paper_ml1m.SOURCES"):
            resolve_dataset("ml1m", show_progress=False)
    assert_nothing_installed(env)
    assert not (tmp_path / "cache").exists()


def test_file_changed_on_the_server_leaves_nothing(server, env):
    www, requests = server
    (www / "preprocessed" / "mapping" / "test.txt.gz").write_bytes(gzip.compress(b"0\t0\t1\t5\n"))  # the last one
    with pytest.raises(DatasetError, match=r"mapping/test.txt.gz: SHA256 hash of downloaded file"):
        resolve_dataset("ml1m", show_progress=False)
    assert len(requests) == len(SOURCES)  # all fetched, none kept
    assert_nothing_installed(env)


def test_wrong_mapping_fails_after_staging_and_leaves_nothing(tmp_path, env, monkeypatch):
    www = tmp_path / "www"
    swapped = {"1": "1", "7": "0", "6": "2"}  # products 6 and 7 swapped: train would be rebuilt wrongly
    monkeypatch.setattr(paper_ml1m, "SOURCES", paper_layout(www / "preprocessed", item_number=swapped))
    with serve(www) as (url, _):
        monkeypatch.setenv(paper_ml1m.URL_ENV, f"{url}/preprocessed")
        with pytest.raises(DatasetError, match=r"valid.txt.gz mapped back .* differs from .*valid.txt at data row 1"):
            resolve_dataset("ml1m", show_progress=False)
    assert_nothing_installed(env)


@pytest.mark.parametrize(("file", "text", "match"), [
    ("kg_final.txt", "entity_head\trelation\tentity_tail\n0\t0\t3\n0\t0\t99\n",
     r"kg_final.txt:3: entity_tail '99' is not a known e_map.txt eid"),
    ("kg_test.txt", "entity_head\trelation\tentity_tail\n0\t7\t3\n", r"kg_test.txt:2: relation '7' is not a known"),
    ("e_map.txt", "eid\tname\n0\tToy_Story\n", r"e_map.txt: header lacks entity; expected columns eid, entity"),
    ("e_map.txt", "eid\tname\tentity\n0\tx\thttp://example.org/x\n", r"e_map.txt:2: entity .*expected a URI"),
    ("mapping/product.txt", "new_id\trating_id\n1\t1\n1\t7\n", r"product.txt:3: new_id '1' is listed twice"),
    ("valid.txt", "1\t6\t1\n", r"valid.txt: 3 tab-separated values per line, expected 4"),
])
def test_bad_files_name_file_line_and_field(tmp_path, file, text, match):
    paper_layout(tmp_path / "src")
    (tmp_path / "src" / file).write_text(text)
    with pytest.raises(DatasetError, match=match):
        convert_paper_ml1m(tmp_path / "src", tmp_path / "out")


def test_missing_file_is_named(tmp_path):
    paper_layout(tmp_path / "src")
    (tmp_path / "src" / "mapping" / "train.txt.gz").unlink()
    with pytest.raises(DatasetError, match=r"train.txt.gz: missing"):
        convert_paper_ml1m(tmp_path / "src", tmp_path / "out")


def test_offline_files_put_by_hand(tmp_path, env, monkeypatch):
    monkeypatch.setenv(paper_ml1m.URL_ENV, closed_port_url())
    with pytest.raises(DatasetError) as err:
        resolve_dataset("ml1m", show_progress=False)
    msg = str(err.value)
    assert "could not download ml1m" in msg and f"{env / 'preprocessed'}/" in msg and "--data-path" in msg
    assert_nothing_installed(env)
    monkeypatch.setattr(paper_ml1m, "SOURCES", paper_layout(env / "preprocessed"))
    assert resolve_dataset("ml1m", show_progress=False) == env
    assert (env / "ml1m.train.inter").read_text() == EXPECTED["ml1m.train.inter"]
    (env / "ml1m.inter").unlink()
    (env / "preprocessed" / "users.txt").write_text("uid\tgender\tage\n1\tF\t1\n")
    with pytest.raises(DatasetError, match=r"users.txt: SHA-256 .* differs from the expected"):
        resolve_dataset("ml1m", show_progress=False)


def test_read_only_root_downloads_into_the_cache(server, env, tmp_path, monkeypatch, caplog):
    root = tmp_path / "readonly"
    real = fetch.writable_folder
    monkeypatch.setattr(fetch, "writable_folder", lambda f: None if root in f.parents else real(f))
    with caplog.at_level("WARNING"):
        assert resolve_dataset("ml1m", root, show_progress=False) == env
    assert "read-only" in caplog.text and not root.exists()


def test_ml100k_dbpedia_from_the_two_downloads(server, env, tmp_path, monkeypatch):
    www, requests = server
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\n10\tToy Story\t1995\n20\tFace/Off\t1997\n"
    write_zip(www / ATOMIC_URL, {**ATOMIC, "ml-100k.item": item})
    write_zip(www / KG_URL, KB4REC)
    monkeypatch.setenv("KGGLM_DOWNLOAD_URL", paper_ml1m.ml1m_url().rsplit("/", 1)[0])  # the same server
    root = tmp_path / "data"  # absent: everything comes from the server
    folder = resolve_dataset("ml-100k-dbpedia", root, show_progress=False)
    assert folder == root / "ml-100k-dbpedia" and (root / "ml1m" / "ml1m.inter").is_file()
    assert (folder / "ml-100k-dbpedia.inter").read_text() == ATOMIC["ml-100k.inter"]
    assert (folder / "ml-100k-dbpedia.link").read_text().splitlines()[1:] == ["10\tToy_Story", "20\tFace/Off"]
    kg = sorted((folder / "ml-100k-dbpedia.kg").read_text().splitlines()[1:])
    assert kg == sorted("\t".join(t) for t in KG if t[0] in ("Toy_Story", "Face/Off"))
    assert sorted(requests) == sorted([f"/preprocessed/{rel}" for rel in SOURCES] + [f"/{ATOMIC_URL}", f"/{KG_URL}"])
    shutil.rmtree(folder)
    assert resolve_dataset("ml-100k-dbpedia", root, show_progress=False) == folder  # rebuilt from the two on disk
    assert len(requests) == len(SOURCES) + 2


def test_no_download_when_downloading_is_off(server):
    _, requests = server
    with pytest.raises(DatasetError, match=r"dataset 'ml1m': not found in .* and downloading is off"):
        resolve_dataset("ml1m", download=False)
    assert requests == []
