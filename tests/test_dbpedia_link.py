"""ml-100k-dbpedia: title matching rules on tiny tables, the build on tiny files, and the real build."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from kgglm.data import fetch
from kgglm.data.dbpedia_link import NAME, build_ml100k_dbpedia, match_titles, normalise
from kgglm.data.download import resolve_dataset
from kgglm.data.loader import load_dataset


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A per-test user cache: never find (or write) a data set in the real one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KGGLM_DATASET_CACHE", "off")
    monkeypatch.delenv("KGGLM_DATA", raising=False)


def frame(rows, key):
    return pd.DataFrame(rows, columns=[key, "title", "year"])


@pytest.mark.parametrize(("a", "b"), [
    ("Postino, Il", "Il Postino"), ("Professional, The", "The Professional"),
    ("Se7en!", "se7en"), ("Amélie", "Amelie"), ("In & Out", "In and Out"), ("Homme, L'", "L'Homme")])
def test_normalise_equates(a, b):
    assert normalise(a) == normalise(b)


def test_normalise_keeps_different_articles_apart():
    assert normalise("Boys, Les") != normalise("Boys, The")


def test_match_rules():
    items = frame([("1", "Postino, Il", 1994), ("2", "Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995),
                   ("3", "Star Wars", 1977), ("4", "Twins", 1988), ("5", "Heat", 1995),
                   ("6", "Chasing Amy", 1997), ("7", "Chasing Amy", 1997), ("8", "Fargo", 1996),
                   ("9", "Seven", 1995)], "item")
    movies = frame([("10", "Postino, Il", 1995), ("20", "Yao a yao yao dao waipo qiao", 1995),
                    ("30", "Star Wars: Episode IV - A New Hope", 1977), ("40", "Twins", 1988),
                    ("41", "Twins", 1988), ("50", "Heat", 1997), ("60", "Chasing Amy", 1997),
                    ("90", "Seven (Se7en)", 1995)], "movie")
    got = match_titles(items, movies).set_index("item")
    assert got.loc["1", "movie"] == "10"  # article moved back, year within one
    assert got.loc["2", "movie"] == "20"  # alternative title in parentheses
    assert got.loc["3", "movie"] == "30"  # series name before the colon
    assert got.loc["4", "status"] == "ambiguous" and got.loc["4", "movie"] == ""  # never guessed
    assert got.loc["4", "note"] == "candidates 40 41"
    assert got.loc["5", "status"] == "missing"  # two years apart
    assert (got.loc["6", "movie"], got.loc["7", "status"]) == ("60", "duplicate")  # lower id linked
    assert got.loc["7", "note"] == "same film as item 6"
    assert got.loc["8", "status"] == "missing"
    assert got.loc["9", "movie"] == "90"


def write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


@pytest.fixture()
def sources(tmp_path) -> Path:
    root = tmp_path / "data"
    write(root / "ml-100k" / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float",
          ["1\t1\t5\t10", "1\t2\t4\t11", "2\t1\t3\t12", "2\t3\t3\t13", "3\t2\t1\t14"])
    write(root / "ml-100k" / "ml-100k.item", "item_id:token\tmovie_title:token_seq\trelease_year:token",
          ["1\tProfessional, The\t1994", "2\tChasing Amy\t1997", "3\tFargo\t1996"])
    write(root / "ml1m" / "ml1m.inter", "user_id:token\titem_id:token", ["1\t7"])
    write(root / "ml1m" / "ml1m.item", "item_id:token\tmovie_title:token_seq", ["7\tProfessional, The (1994)",
          "8\tChasing Amy (1997)", "9\tOther (1990)"])
    write(root / "ml1m" / "ml1m.link", "item_id:token\tentity_id:token", ["7\tLeon_(film)", "8\tChasing_Amy",
          "9\tOther_(film)"])
    write(root / "ml1m" / "ml1m.kg", "head_id:token\trelation_id:token\ttail_id:token",
          ["Leon_(film)\tstarred_by_actor\tJean_Reno", "Chasing_Amy\tstarred_by_actor\tBen_Affleck",
           "Other_(film)\tstarred_by_actor\tBen_Affleck", "Other_(film)\tdirected_by_director\tNobody"])
    return root


def test_build_from_tiny_files(sources):
    folder = resolve_dataset(NAME, sources)
    assert folder == sources / NAME
    assert (folder / f"{NAME}.inter").read_bytes() == (sources / "ml-100k" / "ml-100k.inter").read_bytes()
    assert (folder / f"{NAME}.link").read_text().splitlines()[1:] == ["1\tLeon_(film)", "2\tChasing_Amy"]
    kg = (folder / f"{NAME}.kg").read_text().splitlines()[1:]
    # only triples touching a linked film: the unmatched ML1M film's triples are dropped
    assert sorted(kg) == ["Chasing_Amy\tstarred_by_actor\tBen_Affleck", "Leon_(film)\tstarred_by_actor\tJean_Reno"]
    report = json.loads((folder / f"{NAME}.report.json").read_text())
    assert (report["items_linked"], report["items_missing"], report["interactions_covered"]) == (2, 1, 0.8)
    assert "3\tFargo\t1996\tmissing" in (folder / f"{NAME}.unmatched.tsv").read_text()
    sums = json.loads((folder / ".kgglm-sha256.json").read_text())["files"]
    assert set(sums) == {p.name for p in folder.iterdir() if p.name.startswith(NAME)}
    assert not [p for p in folder.iterdir() if p.name.startswith(".build-")]
    data = load_dataset(NAME, data_path=sources, cache=False)
    assert data.stats["linked_items"] == 2


def test_read_only_root_builds_into_the_cache(sources, tmp_path, monkeypatch, caplog):
    for path in [sources, *sources.rglob("*")]:
        os.chmod(path, stat.S_IREAD | stat.S_IEXEC if path.is_dir() else stat.S_IREAD)
    try:
        if os.access(sources, os.W_OK) and os.geteuid() == 0:  # root ignores write bits: make it fail anyway
            real = fetch.writable_folder
            monkeypatch.setattr(fetch, "writable_folder", lambda f: None if sources in f.parents else real(f))
        with caplog.at_level("WARNING"):
            folder = build_ml100k_dbpedia(sources)
        assert folder == tmp_path / "cache" / "kgglm" / NAME
        assert "read-only" in caplog.text and str(folder) in caplog.text
        assert not (sources / NAME).exists()
        assert resolve_dataset(NAME, sources) == folder  # found there next time
    finally:
        for path in [sources, *sources.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def test_real_build(shared_data, tmp_path):
    if not (shared_data / "ml1m" / "ml1m.kg").is_file():
        pytest.skip("ml1m not found")
    folder = build_ml100k_dbpedia(shared_data, root=tmp_path)
    report = json.loads((folder / f"{NAME}.report.json").read_text())
    assert 1300 <= report["items_linked"] <= 1450
    assert report["items_linked"] + report["items_missing"] + report["items_ambiguous"] + \
        report["items_duplicate"] == 1682
    inter = pd.read_csv(folder / f"{NAME}.inter", sep="\t")
    assert inter.equals(pd.read_csv(shared_data / "ml-100k" / "ml-100k.inter", sep="\t"))
    link = pd.read_csv(folder / f"{NAME}.link", sep="\t", dtype=str)
    assert link.iloc[:, 1].is_unique and link.iloc[:, 0].is_unique
    ml1m = pd.read_csv(shared_data / "ml1m" / "ml1m.link", sep="\t", dtype=str)
    assert set(link.iloc[:, 1]) <= set(ml1m.iloc[:, 1])
    items = pd.read_csv(shared_data / "ml-100k" / "ml-100k.item", sep="\t", dtype=str).set_index("item_id:token")
    names = dict(zip(link.iloc[:, 0], link.iloc[:, 1], strict=True))
    assert names[items.index[items.iloc[:, 0] == "Star Wars"][0]] == "Star_Wars_(film)"
