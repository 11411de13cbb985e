"""Dataset resolution by name and the download path, served from a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import zipfile
from functools import partial

import pytest

from kgglm.data import DatasetError, load_dataset
from kgglm.data.download import CHECKSUM_FILE, candidate_roots, resolve_dataset

FILES = {
    "ml-100k.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t5\n1\t20\t6\n2\t10\t7\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\n10\tToy Story\n",
    "ml-100k.user": "user_id:token\tage:token\n1\t20\n2\t30\n",
    "ml-100k.kg": "head_id:token\trelation_id:token\ttail_id:token\nm.1\tfilm.actor\tm.9\n",
    "ml-100k.link": "item_id:token\tentity_id:token\n10\tm.1\n",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 (http.server API)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """Serve RecBole's URL layout from a temp folder; interactions at the zip root, the KG one folder down."""
    www = tmp_path / "www"
    (www / "ProcessedDatasets" / "MovieLens").mkdir(parents=True)
    (www / "KGDatasets").mkdir(parents=True)
    write_zips(www)
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("KGGLM_DOWNLOAD_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KGGLM_DATA", raising=False)
    yield www, requests
    httpd.shutdown()
    httpd.server_close()


def write_zips(www, inter=FILES["ml-100k.inter"]):
    with zipfile.ZipFile(www / "ProcessedDatasets" / "MovieLens" / "ml-100k.zip", "w") as zf:
        for name in ("ml-100k.item", "ml-100k.user"):
            zf.writestr(name, FILES[name])
        zf.writestr("ml-100k.inter", inter)
    with zipfile.ZipFile(www / "KGDatasets" / "MovieLens-KG.zip", "w") as zf:
        for name in ("ml-100k.kg", "ml-100k.link"):
            zf.writestr(f"ml-100k/{name}", FILES[name])
        zf.writestr("ml-1m/ml-1m.kg", "not ours")  # other datasets in the same zip are skipped
        zf.writestr("a/b/ml-100k.link", "too deep, ignored")


def test_downloads_into_cache_with_checksums(server, tmp_path):
    _, requests = server
    folder = resolve_dataset("ml-100k", show_progress=False)
    assert folder == tmp_path / "cache" / "kgglm" / "ml-100k"
    for name, text in FILES.items():
        assert (folder / name).read_text() == text
    assert not (folder / "ml-1m.kg").exists()
    sums = json.loads((folder / CHECKSUM_FILE).read_text())
    assert set(sums["files"]) == set(FILES) and len(sums["zips"]) == 2
    assert len(requests) == 2
    ds = load_dataset("ml-100k")  # found in the cache now, no new request
    assert (ds.n_users, ds.n_items, ds.stats["linked_items"]) == (2, 2, 1)
    assert ds.item_names.tolist() == ["Toy Story", "20"]
    assert len(requests) == 2


def test_data_path_is_the_download_target(server, tmp_path):
    folder = resolve_dataset("ml-100k", data_path=tmp_path / "mine", show_progress=True)
    assert folder == tmp_path / "mine" / "ml-100k"


def test_redownload_is_verified_against_first_checksum(server):
    www, requests = server
    folder = resolve_dataset("ml-100k", show_progress=False)
    (folder / "ml-100k.inter").unlink()
    assert resolve_dataset("ml-100k", show_progress=False) == folder  # same zips: fine
    assert len(requests) == 4
    (folder / "ml-100k.inter").unlink()
    write_zips(www, inter=FILES["ml-100k.inter"] + "3\t10\t8\n")  # the server now sends another file
    with pytest.raises(DatasetError, match=r"ml-100k.zip: SHA-256 .* differs from .* recorded at the first"):
        resolve_dataset("ml-100k", show_progress=False)


def test_changed_file_fails_verification(server):
    folder = resolve_dataset("ml-100k", show_progress=False)
    with open(folder / "ml-100k.kg", "a") as f:
        f.write("m.2\tfilm.actor\tm.8\n")
    with pytest.raises(DatasetError, match=r"ml-100k.kg: SHA-256 differs"):
        resolve_dataset("ml-100k")


def test_offline_error_says_how_to_use_local_files(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KGGLM_DOWNLOAD_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KGGLM_DATA", raising=False)
    with pytest.raises(DatasetError) as err:
        resolve_dataset("ml-100k", show_progress=False)
    msg = str(err.value)
    assert "could not download ml-100k" in msg and "--data-path" in msg and "KGGLM_DATA" in msg


def test_missing_file_in_server_is_an_error(server):
    www, _ = server
    (www / "KGDatasets" / "MovieLens-KG.zip").unlink()
    with pytest.raises(DatasetError, match="could not download ml-100k .*MovieLens-KG.zip"):
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
