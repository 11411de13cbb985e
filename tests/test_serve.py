"""``kgglm serve`` as a client sees it: a real uvicorn server on loopback, every endpoint over HTTP.

A tiny model is trained on a small atomic-file dataset (seconds); the server runs in a thread
(and once as ``python -m kgglm.serve`` in a subprocess). Recommendations must equal
``recommend_from_checkpoint`` for the same user and k, also when requests are batched together.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atomic_helpers import TINY, write_atomic_dataset

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from kgglm.quick_start import run_pipeline
from kgglm.serve.app import create_app
from kgglm.serve.batching import Batcher
from kgglm.serve.commands import serve_main
from kgglm.serve.engine import Engine
from kgglm.serve.server import running

_SHARED: dict = {}  # one tiny model per test session, also for tests/test_serve_page.py


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory):
    """A fine-tuned tiny model's run directory on the ``toy`` dataset (pretrain + finetune)."""
    if "checkpoint" not in _SHARED:
        root = write_atomic_dataset(tmp_path_factory.mktemp("serve-data"))
        saved = tmp_path_factory.mktemp("serve-saved")
        res = run_pipeline("KGGLM", "toy", config_dict={**TINY, "data_path": str(root), "checkpoint_dir": str(saved),
                                                        "path_generation_args": {"num_beams": 8},
                                                        "pretrain_epochs": 1, "epochs": 1})
        _SHARED["checkpoint"] = Path(res.run_dir)
    return _SHARED["checkpoint"]


@pytest.fixture(scope="session")
def engine(serve_checkpoint):
    if "engine" not in _SHARED:
        _SHARED["engine"] = Engine(serve_checkpoint)
    return _SHARED["engine"]


@pytest.fixture(scope="session")
def server(engine):
    with running(create_app(engine, max_batch=16, max_wait_ms=20)) as url:
        yield url


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def users_of(engine, n: int) -> list[str]:
    return [str(t) for t in engine.data.user_tokens[:n]]


def test_health_and_openapi(client, engine):
    h = client.get("/health").json()
    assert h["ready"] is True and h["model"] == "KGGLM" and h["dataset"] == "toy"
    assert engine.checkpoint.endswith(h["checkpoint"]) and h["n_users"] == engine.data.n_users
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/users", "/users/{user}/recommendations", "/recommendations",
                 "/users/{user}/history", "/items/{item}"):
        assert path in spec["paths"], path


def test_recommendations_equal_recommend_from_checkpoint(client, engine):
    users = users_of(engine, 3)
    reference = engine.reference(users, k=5)
    for user, ref in zip(users, reference):
        r = client.get(f"/users/{user}/recommendations", params={"k": 5})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["user"] == user == ref["user"] and got["k"] == 5 and got["explanation"] == "best"
        assert len(got["recommendations"]) == 5
        assert [x["item"] for x in got["recommendations"]] == [x["item"] for x in ref["recommendations"]]
        for g, e in zip(got["recommendations"], ref["recommendations"]):
            assert g["path"] == e["path"] and g["explanation"] == e["explanation"] and g["rank"] == e["rank"]
            assert g["score"] == pytest.approx(e["score"], abs=1e-5)
            assert g["title"] == e["title"]
            assert [n["id"] for n in g["nodes"]] == g["path"][0::2]
            assert g["relations"][0] == "watched" and len(g["relations"]) == engine.hop_length
            assert g["nodes"][0]["kind"] == "user" and g["nodes"][-1]["kind"] == "item"


def test_batch_endpoint_matches_single_requests(client, engine):
    users = users_of(engine, 6)
    r = client.post("/recommendations", json={"users": users, "k": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user"] for x in results] == users
    for user, res in zip(users, results):
        single = client.get(f"/users/{user}/recommendations", params={"k": 4}).json()
        assert [x["item"] for x in res["recommendations"]] == [x["item"] for x in single["recommendations"]]
        assert [x["path"] for x in res["recommendations"]] == [x["path"] for x in single["recommendations"]]


def test_concurrent_requests_are_batched_and_correct(server, engine):
    users = users_of(engine, 24)
    expected = {u: [x["item"] for x in r["recommendations"]] for u, r in
                zip(users, engine.recommend([engine.user_index(u) for u in users], 5))}
    before = httpx.get(f"{server}/health").json()["batching"]

    async def go():
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            return await asyncio.gather(*(c.get(f"/users/{u}/recommendations", params={"k": 5})
                                          for u in users + users[:8]))

    responses = asyncio.run(go())
    assert all(r.status_code == 200 for r in responses)
    for r in responses:
        body = r.json()
        assert [x["item"] for x in body["recommendations"]] == expected[body["user"]]
    after = httpx.get(f"{server}/health").json()["batching"]
    assert after["requests"] - before["requests"] == len(responses)
    assert after["batches"] - before["batches"] < len(responses)  # some requests shared a decode
    assert after["largest_batch"] > 1


def test_knowledge_mode_paths_are_graph_paths(client, engine):
    user = users_of(engine, 1)[0]
    body = client.get(f"/users/{user}/recommendations", params={"k": 5, "explanation": "knowledge"}).json()
    assert body["explanation"] == "knowledge" and len(body["recommendations"]) == 5
    graph, node_ids = engine.data.graph, {str(t): i for i, t in enumerate(engine.data.node_tokens())}
    for rec in body["recommendations"]:
        nodes = [node_ids[n["id"]] for n in rec["nodes"]]
        rels = [0 if r == "watched" else list(engine.data.relation_tokens).index(r) for r in rec["relations"]]
        assert rec["nodes"][0]["id"] == user and rec["nodes"][-1]["id"] == rec["item"]
        assert graph.has_edge(nodes[:-1], rels, nodes[1:]).all(), rec
        if rec["explanation_source"] == "knowledge":
            assert any(n["kind"] == "entity" for n in rec["nodes"][2:-1])
    # the same ranking as the best-path mode; most items explained through the knowledge graph
    best = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    assert [r["item"] for r in best["recommendations"]] == [r["item"] for r in body["recommendations"]]
    assert sum(r["explanation_source"] == "knowledge" for r in body["recommendations"]) >= 3


def test_history_items_and_search(client, engine):
    ds = engine.data
    user = users_of(engine, 2)[1]
    u = engine.user_index(user)
    h = client.get(f"/users/{user}/history").json()
    train = ds.splits["train"]
    expected = sorted(str(ds.item_tokens[i]) for i in train.items[train.users == u])
    assert sorted(x["item"] for x in h["items"]) == expected
    assert h["n_items"] == len(h["items"]) > 0
    item = h["items"][0]["item"]
    info = client.get(f"/items/{item}").json()
    assert info["item"] == item and info["title"] == h["items"][0]["title"]
    assert info["n_users"] >= 1 and info["facts"] and info["n_facts"] == len(info["facts"])
    node = ds.graph.item_node(engine.item_index(item))
    nbr, _ = ds.graph.neighbors(node)
    assert {f["id"] for f in info["facts"]} == {str(ds.node_tokens()[n]) for n in nbr if n >= ds.n_users}
    assert all(f["relation"] in ds.relation_tokens for f in info["facts"])
    found = client.get("/users", params={"query": user}).json()["users"]
    assert found[0]["user"] == user and all(user in x["user"] for x in found)
    assert len(client.get("/users", params={"limit": 7}).json()["users"]) == 7


@pytest.mark.parametrize("url,params", [
    ("/users/{u}/recommendations", {"k": 0}), ("/users/{u}/recommendations", {"k": 101}),
    ("/users/{u}/recommendations", {"k": "ten"}), ("/users/{u}/recommendations", {"explanation": "magic"}),
    ("/users", {"limit": 0}), ("/items/{i}", {"limit": -1}),
])
def test_bad_parameters_are_422(client, engine, url, params):
    url = url.format(u=users_of(engine, 1)[0], i=str(engine.data.item_tokens[0]))
    r = client.get(url, params=params)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_unknown_ids_and_hostile_input(client, engine):
    r = client.get("/users/no-such-user/recommendations")
    assert r.status_code == 404 and "no-such-user" in r.json()["detail"]
    r = client.get("/users/ghost/history")
    assert r.status_code == 404 and "ghost" in r.json()["detail"]
    r = client.get("/items/nothing-here")
    assert r.status_code == 404 and "nothing-here" in r.json()["detail"]
    r = client.post("/recommendations", json={"users": [users_of(engine, 1)[0], "intruder"], "k": 3})
    assert r.status_code == 404 and "intruder" in r.json()["detail"]
    for body in ({"users": []}, {"users": ["1"] * 300}, {"users": "1"}, {"users": ["1"], "k": -3}, [1, 2]):
        assert client.post("/recommendations", json=body).status_code == 422, body
    assert client.post("/recommendations", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    for path in ("/static/../pyproject.toml", "/static/%2e%2e%2fengine.py", "/static/engine.py",
                 "/users/..%2F..%2Fetc%2Fpasswd/history", "/items/%00"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "def " not in r.text and "root:" not in r.text
    assert client.get("/users/" + "x" * 5000 + "/history").status_code in (404, 422)
    assert client.get("/health").json()["ready"] is True  # still alive


def test_page_and_assets_are_served_without_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.text) > 500
        assert "https://" not in r.text and "http://" not in r.text.replace("http://www.w3.org", "")
    assert "https://" not in page.text


def test_batcher_survives_a_failing_decode():
    calls = []

    def decode(users, k, mode):
        calls.append(list(users))
        if 13 in users:
            raise ValueError("boom")
        return [{"user": u, "k": k, "mode": mode} for u in users]

    async def go():
        b = Batcher(decode, max_batch=4, max_wait_ms=30)
        await b.start()
        try:
            ok = await b.submit_many([1, 2, 2, 3], 5, "best")
            bad = await asyncio.gather(b.submit(13, 5), return_exceptions=True)
            again = await b.submit(4, 7, "knowledge")
        finally:
            await b.stop()
        return ok, bad, again, b.stats

    ok, bad, again, stats = asyncio.run(go())
    assert [r["user"] for r in ok] == [1, 2, 2, 3] and calls[0] == [1, 2, 3]  # one decode, distinct users
    assert isinstance(bad[0], ValueError) and again == {"user": 4, "k": 7, "mode": "knowledge"}
    assert stats.errors == 1 and stats.largest_batch == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_in_a_subprocess(serve_checkpoint, engine):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kgglm.serve", "--checkpoint", str(serve_checkpoint),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health and health["ready"], proc.stdout.read() if proc.poll() is not None else "no answer"
        user = users_of(engine, 1)[0]
        r = httpx.get(f"http://127.0.0.1:{port}/users/{user}/recommendations", params={"k": 3}, timeout=30)
        expected = engine.recommend([engine.user_index(user)], 3)[0]
        assert [x["item"] for x in r.json()["recommendations"]] == [x["item"] for x in expected["recommendations"]]
    finally:
        proc.terminate()
        proc.wait(30)
    assert np.isfinite(health["load_seconds"])


def test_serve_main_reports_a_missing_checkpoint(capsys):
    assert serve_main(["--checkpoint", "/nonexistent/ckpt", "--port", "0"]) == 2
    assert "kgglm serve: error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_main(["--port", "80"])  # --checkpoint is required
