"""``kgglm serve`` defends itself: malformed bodies get a 4xx, limits, Host check, token, headers,
and (on a real uvicorn over raw sockets) slow, idle and dripping clients are cut off.

The app runs on the tiny model of tests/test_serve.py (its session fixtures).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from test_serve import engine, serve_checkpoint  # noqa: F401  (shared session fixtures)

from kgglm.serve import commands
from kgglm.serve.app import create_app
from kgglm.serve.guard import MAX_BODY_BYTES
from kgglm.serve.server import running

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def client(engine):  # noqa: F811
    with TestClient(create_app(engine), base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def user(engine) -> str:  # noqa: F811
    return str(engine.data.user_tokens[0])


def post_raw(client, body: str):
    return client.post("/recommendations", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [
    '{"users": ["%s"], "k": NaN}', '{"users": ["%s"], "k": Infinity}', '{"users": ["%s"], "k": -Infinity}',
    '{"users": ["%s"], "k": 1e999}', '{"users": [NaN]}', '{"users": ["%s"], "explanation": NaN}',
    '{"users": ["%s"], "k": 1.5}', '{"users": "%s"}', '[1, 2]', '{"users": ["%s"]', "null", "",
])
def test_malformed_bodies_answer_422_with_a_message(client, user, body):
    r = post_raw(client, body.replace("%s", user))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail and all(d["msg"] and "input" not in d for d in detail)


def test_validation_errors_do_not_echo_the_input(client):
    users = ["x" * 150_000] * 4  # 600 kB of input under the 1 MiB limit: too long and too many ids
    r = client.post("/recommendations", json={"users": users + [1] * 300, "k": 10})
    assert r.status_code == 422 and len(r.content) < 20_000
    r = client.get("/users/" + "u" * 5000 + "/recommendations")
    assert r.status_code == 422 and len(r.content) < 2_000


def test_body_over_the_limit_answers_413(client, user):
    big = json.dumps({"users": [user], "k": 5, "pad": "x" * MAX_BODY_BYTES})
    r = post_raw(client, big)
    assert r.status_code == 413 and "request body over" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(20):
            yield b" " * 100_000
    r = client.post("/recommendations", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    ok = client.post("/recommendations", json={"users": [user] * 3, "k": 2})  # a normal batch still works
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_unknown_host_header_is_refused(client):
    assert client.get("/health").status_code == 200
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    r = client.get("/health", headers={"host": "evil.example:8000"})
    assert r.status_code == 400


def test_configured_hosts(engine):  # noqa: F811
    with TestClient(create_app(engine, allowed_hosts=["kgglm.example"]), base_url="http://kgglm.example") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "127.0.0.1"}).status_code == 400
    assert commands.allowed_hosts("10.0.0.5", None) == ["127.0.0.1", "localhost", "::1", "10.0.0.5"]
    assert commands.allowed_hosts("0.0.0.0", None) == ["*"]
    assert commands.allowed_hosts("127.0.0.1", "a.example, b.example") == ["a.example", "b.example"]


def test_api_key_guards_everything_but_health(engine, user):  # noqa: F811
    key = "s3cret-token"
    with TestClient(create_app(engine, api_key=key), base_url=BASE) as c:
        assert c.get("/health").status_code == 200
        for path in (f"/users/{user}/recommendations?k=2", "/users", "/openapi.json", "/"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert c.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"authorization": f"Basic {key}"}).status_code == 401
            assert c.get(path, headers={"authorization": f"Bearer {key}"}).status_code == 200, path
        r = c.post("/recommendations", json={"users": [user], "k": 2}, headers={"authorization": f"bearer {key}"})
        assert r.status_code == 200


def test_non_loopback_bind_needs_a_key_or_an_explicit_flag(serve_checkpoint, capsys, monkeypatch):  # noqa: F811
    monkeypatch.delenv(commands.API_KEY_ENV, raising=False)
    assert commands.serve_main(["--checkpoint", str(serve_checkpoint), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert commands.is_loopback("127.0.0.1") and commands.is_loopback("::1") and commands.is_loopback("localhost")
    assert not commands.is_loopback("0.0.0.0") and not commands.is_loopback("192.168.1.2")


def test_health_names_the_run_not_the_path_and_docs_are_off(client, engine):  # noqa: F811
    h = client.get("/health").json()
    assert not h["checkpoint"].startswith("/") and engine.checkpoint.endswith(h["checkpoint"])
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200  # the schema itself needs no CDN
    with TestClient(create_app(engine, docs=True), base_url=BASE) as c:
        assert c.get("/docs").status_code == 200


def test_security_headers_on_every_answer(client):
    for path in ("/", "/static/app.js", "/health", "/users/nobody/history", "/nothing"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------------- raw sockets
def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (reads until EOF), or None if still open after ``seconds``."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0
    return None


def test_slow_idle_and_dripping_clients_are_cut_off(engine):  # noqa: F811
    with running(create_app(engine), request_timeout=1.0, keep_alive=1) as url:
        idle = _connect(url)  # never sends anything
        drip = _connect(url)  # headers byte by byte, never finished
        stall = _connect(url)  # headers complete, body promised and never sent
        stall.sendall(b"POST /recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      b"content-length: 100\r\n\r\n{")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:  # dripping keeps sending: a timer reset per byte would never fire
            try:
                drip.send(b"G")
            except OSError:
                break
            time.sleep(0.05)
        assert _closed_within(idle, 2.0) is not None
        assert _closed_within(drip, 2.0) is not None
        assert _closed_within(stall, 2.0) is not None
        kept = _connect(url)  # after an answer, an idle keep-alive connection closes too
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _closed_within(kept, 3.0) is not None
        huge = _connect(url)
        huge.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nx-pad: " + b"a" * 70_000 + b"\r\n\r\n")
        huge.settimeout(3)
        assert huge.recv(100).startswith(b"HTTP/1.1 400")
        for s in (idle, drip, stall, kept, huge):
            s.close()
