"""Dataset resolution by name, download and KB4Rec conversion, served from a real HTTP server on 127.0.0.1.

The fixture archives follow the real layouts: RecBole's ``ml-100k.zip`` holds atomic files, its
``MovieLens-KG.zip`` holds KB4Rec's raw headerless files (link.kg, relation.kg, hop1-3.kg, extra.kg).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from download_helpers import (
    ATOMIC,
    ATOMIC_URL,
    KB4REC,
    KG_HOP1,
    KG_URL,
    LINK,
    assert_nothing_installed,
    closed_port_url,
    serve,
    write_archives,
    write_zip,
)

from kgglm.data import DatasetError, load_dataset
from kgglm.data.download import CHECKSUM_FILE, candidate_roots, convert_kb4rec, download_dataset, resolve_dataset


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KGGLM_DATA", raising=False)
    monkeypatch.delenv("KGGLM_DOWNLOAD_URL", raising=False)
    return tmp_path / "cache" / "kgglm" / "ml-100k"


@pytest.fixture()
def server(tmp_path, env, monkeypatch):
    """Serve RecBole's URL layout from a temp folder on a free port of 127.0.0.1."""
    www = tmp_path / "www"
    write_archives(www)
    with serve(www) as (url, requests):
        monkeypatch.setenv("KGGLM_DOWNLOAD_URL", url)
        yield www, requests


def test_downloads_converts_into_cache_with_checksums(server, env):
    _, requests = server
    folder = resolve_dataset("ml-100k", show_progress=False)
    assert folder == env
    for name, text in ATOMIC.items():
        assert (folder / name).read_text() == text
    assert (folder / "ml-100k.link").read_text() == LINK
    assert (folder / "ml-100k.kg").read_text() == KG_HOP1
    assert sorted(p.name for p in folder.iterdir()) == sorted([*ATOMIC, "ml-100k.kg", "ml-100k.link", CHECKSUM_FILE])
    sums = json.loads((folder / CHECKSUM_FILE).read_text())
    assert set(sums["files"]) == {*ATOMIC, "ml-100k.kg", "ml-100k.link"} and set(sums["zips"]) == {ATOMIC_URL, KG_URL}
    assert sorted(requests) == sorted(["/" + ATOMIC_URL, "/" + KG_URL])
    ds = load_dataset("ml-100k")  # found in the cache now, no new request
    assert (ds.n_users, ds.n_items, ds.stats["linked_items"]) == (2, 3, 2)
    assert len(requests) == 2


def test_kg_files_one_folder_down_and_data_path_is_the_target(server, tmp_path):
    www, _ = server
    write_archives(www, kg_folder="MovieLens-KG/")
    folder = resolve_dataset("ml-100k", data_path=tmp_path / "mine", show_progress=True)
    assert folder == tmp_path / "mine" / "ml-100k"
    assert (folder / "ml-100k.kg").read_text() == KG_HOP1


def test_conversion_follows_hops(tmp_path):
    kg_zip = write_zip(tmp_path / "MovieLens-KG.zip", KB4REC)
    (tmp_path / "ml-100k.inter").write_text(ATOMIC["ml-100k.inter"])
    assert convert_kb4rec(kg_zip, tmp_path / "ml-100k.inter", tmp_path, "ml-100k", hop=2) == (2, 5)
    kg = (tmp_path / "ml-100k.kg").read_text().splitlines()
    assert kg[1:] == ["m.a\tfilm.film.actor\tm.actor1", "m.c\tfilm.film.genre\tm.b",  # hop 1
                      "m.actor1\tfilm.film.actor\tm.d",  # hop 2: seeded by hop 1's new entities only
                      "m.b\tfilm.film.genre\tm.g", "m.actor1\tfilm.film.genre\tm.h"]  # extra
    assert not list(tmp_path.glob(".*.tmp"))
    kg_zip = write_zip(tmp_path / "MovieLens-KG.zip", {**KB4REC, "extra.kg": ""})  # nothing extra
    assert convert_kb4rec(kg_zip, tmp_path / "ml-100k.inter", tmp_path, "ml-100k") == (2, 2)
    with pytest.raises(DatasetError, match="hop 4: expected 1, 2 or 3"):
        convert_kb4rec(kg_zip, tmp_path / "ml-100k.inter", tmp_path, "ml-100k", hop=4)


@pytest.mark.parametrize("files,match", [
    ({k: v for k, v in KB4REC.items() if k != "relation.kg"}, r"MovieLens-KG.zip: relation.kg missing"),
    ({**KB4REC, "hop1.kg": "m.a\tfilm.film.actor\n"}, r"MovieLens-KG.zip:hop1.kg: 2 tab-separated values"),
    ({**KB4REC, "hop1.kg": "m.a\tr\tm.b\nm.c\tr\n"}, r"MovieLens-KG.zip:hop1.kg: data row 2 has fewer than 3"),
    ({**KB4REC, "hop1.kg": "m.a\tr\tm.b\tm.c\n"},
     r"MovieLens-KG.zip:hop1.kg: 4 tab-separated values per line, expected 3"),
    ({**KB4REC, "hop1.kg": "m.a\tr\tm.b\nm.a\tr\tm.b\tm.c\n"}, r"MovieLens-KG.zip:hop1.kg: cannot parse"),
    ({**KB4REC, "link.kg": "77\tm.a\n"}, r"none of the 3 items of .*ml-100k.inter is in link.kg"),
])
def test_bad_kb4rec_archive(tmp_path, files, match):
    kg_zip = write_zip(tmp_path / "MovieLens-KG.zip", files)
    (tmp_path / "ml-100k.inter").write_text(ATOMIC["ml-100k.inter"])
    with pytest.raises(DatasetError, match=match):
        convert_kb4rec(kg_zip, tmp_path / "ml-100k.inter", tmp_path, "ml-100k")


def test_wrong_checksum_leaves_nothing(server, env):
    with pytest.raises(DatasetError, match=r"MovieLens-KG.zip: SHA256 hash of downloaded file .* does not match"):
        download_dataset("ml-100k", env.parent, hashes={"MovieLens-KG.zip": "0" * 64}, show_progress=False)
    assert_nothing_installed(env)
    assert resolve_dataset("ml-100k", show_progress=False) == env  # the right file goes through


@pytest.mark.parametrize("url", [ATOMIC_URL, KG_URL])
def test_corrupted_download_leaves_nothing(server, env, url):
    www, _ = server
    data = (www / url).read_bytes()
    (www / url).write_bytes(data[: len(data) // 2])  # a truncated transfer
    with pytest.raises(DatasetError, match=r"not a valid zip"):
        resolve_dataset("ml-100k", show_progress=False)
    assert_nothing_installed(env)


def test_redownload_is_verified_against_first_checksum(server, env):
    www, requests = server
    folder = resolve_dataset("ml-100k", show_progress=False)
    (folder / "ml-100k.inter").unlink()
    assert resolve_dataset("ml-100k", show_progress=False) == folder  # same zips: fine
    assert len(requests) == 4
    (folder / "ml-100k.inter").unlink()
    write_archives(www, inter=ATOMIC["ml-100k.inter"] + "3\t10\t1\t9\n")  # the server now sends another file
    with pytest.raises(DatasetError, match=r"ml-100k.zip: SHA256 hash .* does not match .* recorded at the first"):
        resolve_dataset("ml-100k", show_progress=False)
    assert not (folder / "ml-100k.inter").exists()


def test_changed_file_fails_verification(server):
    folder = resolve_dataset("ml-100k", show_progress=False)
    with open(folder / "ml-100k.kg", "a") as f:
        f.write("m.2\tfilm.film.actor\tm.8\n")
    with pytest.raises(DatasetError, match=r"ml-100k.kg: SHA-256 differs"):
        resolve_dataset("ml-100k")


def test_offline_error_says_what_to_fetch_and_where(env, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("KGGLM_DOWNLOAD_URL", url)
    with pytest.raises(DatasetError) as err:
        resolve_dataset("ml-100k", show_progress=False)
    msg = str(err.value)
    assert "could not download ml-100k" in msg and f"{url}/{ATOMIC_URL} and {url}/{KG_URL}" in msg
    assert f"in {env}/" in msg and "--data-path" in msg and "KGGLM_DATA" in msg
    assert_nothing_installed(env)


def test_zips_put_by_hand_are_converted_offline(env, monkeypatch, tmp_path):
    monkeypatch.setenv("KGGLM_DOWNLOAD_URL", closed_port_url())
    write_archives(tmp_path / "www")
    env.mkdir(parents=True)
    for url in (ATOMIC_URL, KG_URL):
        (env / Path(url).name).write_bytes((tmp_path / "www" / url).read_bytes())
    assert resolve_dataset("ml-100k", show_progress=False) == env
    assert (env / "ml-100k.link").read_text() == LINK and (env / "MovieLens-KG.zip").is_file()
    (env / "ml-100k.inter").unlink()
    write_zip(env / "ml-100k.zip", {**ATOMIC, "ml-100k.user": "user_id:token\n1\n"})  # not the first one
    with pytest.raises(DatasetError, match=r"ml-100k.zip: SHA-256 .* differs from the expected"):
        resolve_dataset("ml-100k", show_progress=False)


def test_missing_file_on_server_is_an_error(server):
    www, _ = server
    (www / KG_URL).unlink()
    with pytest.raises(DatasetError, match="could not download ml-100k .*MovieLens-KG.zip .*404"):
        resolve_dataset("ml-100k", show_progress=False)


def test_resolution_order(tmp_path, monkeypatch):
    def make(root):
        (root / "toy").mkdir(parents=True)
        (root / "toy" / "toy.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
        return root / "toy"

    arg, env, cache = make(tmp_path / "arg"), make(tmp_path / "env"), make(tmp_path / "cache" / "kgglm")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KGGLM_DATA", str(tmp_path / "env"))
    assert resolve_dataset("toy", tmp_path / "arg") == arg
    assert resolve_dataset("toy", arg) == arg  # the dataset folder itself
    assert resolve_dataset("toy") == env
    monkeypatch.delenv("KGGLM_DATA")
    assert resolve_dataset("toy") == cache
    assert candidate_roots(tmp_path / "x")[0] == tmp_path / "x"
    with pytest.raises(DatasetError, match=r"dataset 'other': other.inter not found in .*--data-path"):
        resolve_dataset("other", tmp_path / "arg")
