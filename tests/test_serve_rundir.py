"""``GET /run`` and ``GET /run/report``: the served run's metrics and report, read-only, from fixed paths.

The app runs on the tiny model of tests/test_serve.py (its session fixtures); other run directories
(no report, no or broken ``result.json``, a report that links out) are built in ``tmp_path``.
"""

from __future__ import annotations

import http.client
import json
import math
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from test_serve import engine, serve_checkpoint  # noqa: F401  (shared session fixtures)

from kgglm.serve.app import create_app
from kgglm.serve.rundir import REPORT_CSP, RunFiles, find_run_dir
from kgglm.serve.server import running

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def client(engine):  # noqa: F811
    with TestClient(create_app(engine), base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def result(serve_checkpoint) -> dict:  # noqa: F811
    return json.loads((serve_checkpoint / "result.json").read_text())


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if type(v) in (int, float)}


def _app_on(engine, run_dir, **kwargs) -> TestClient:  # noqa: F811
    return TestClient(create_app(engine, run_dir=run_dir, **kwargs), base_url=BASE)


def test_the_run_is_found_from_its_checkpoint(serve_checkpoint, engine, tmp_path):  # noqa: F811
    assert find_run_dir(engine.info.checkpoint) == serve_checkpoint.resolve()
    assert find_run_dir(serve_checkpoint) == serve_checkpoint.resolve()
    (tmp_path / "a" / "b" / "c" / "d").mkdir(parents=True)
    (tmp_path / "result.json").write_text("{}")
    assert find_run_dir(tmp_path / "a" / "b") == tmp_path.resolve()
    assert find_run_dir(tmp_path / "a" / "b" / "c" / "d") is None  # further than three folders up
    none = RunFiles(None)
    assert none.summary() is None and none.report() is None and "no result.json" in none.error


def test_run_metrics_are_the_saved_results(client, serve_checkpoint, result):  # noqa: F811
    r = client.get("/run")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    run = r.json()
    assert run["run"] == serve_checkpoint.name and not run["run"].startswith("/")  # the run, not the path
    assert (run["model"], run["dataset"], run["report"]) == ("KGGLM", "toy", True)
    baselines = result.get("baselines") or {}
    assert run["metrics"]["test"] == {"KGGLM": _numbers(result["test_result"]),
                                      **{n: _numbers(b["test"]) for n, b in baselines.items()}}
    assert run["metrics"]["valid"] == {"KGGLM": _numbers(result["best_valid_result"]),
                                       **{n: _numbers(b["valid"]) for n, b in baselines.items()}}
    assert run["metrics"]["test"]["KGGLM"]["ndcg@5"] == pytest.approx(result["test_result"]["ndcg@5"])


def test_report_is_the_runs_file_with_its_own_policy(client, serve_checkpoint):  # noqa: F811
    r = client.get("/run/report")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == (serve_checkpoint / "report.html").read_bytes()
    assert r.headers["content-security-policy"] == REPORT_CSP  # not the page's: no script at all
    assert "script-src 'none'" in REPORT_CSP and "frame-ancestors 'none'" in REPORT_CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert client.head("/run/report").status_code in (200, 405)  # never a 500
    assert client.post("/run/report").status_code == 405


def test_missing_report_answers_404_json(engine, serve_checkpoint, tmp_path):  # noqa: F811
    shutil.copy(serve_checkpoint / "result.json", tmp_path / "result.json")
    with _app_on(engine, tmp_path) as c:
        r = c.get("/run/report")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json()["detail"] == f"run {tmp_path.name} has no report.html (write it with: kgglm report RUN_DIR)"
        assert c.get("/run").json()["report"] is False
        (tmp_path / "report.html").mkdir()  # a folder of that name is no report either
        assert c.get("/run/report").status_code == 404


def test_a_report_that_links_out_of_the_run_is_refused(engine, serve_checkpoint, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(serve_checkpoint / "result.json", run / "result.json")
    secret = tmp_path / "secret.html"
    secret.write_text("<p>not the run's</p>")
    (run / "report.html").symlink_to(secret)
    with _app_on(engine, run) as c:
        r = c.get("/run/report")
        assert r.status_code == 404 and "not the run" not in r.text


@pytest.mark.parametrize(("content", "message"), [
    (None, "no result.json"), ("{not json", "line 1: not valid JSON"), ("[1, 2]", "expected a JSON object"),
])
def test_unreadable_results_answer_404_naming_the_run_not_the_path(engine, tmp_path, content, message):  # noqa: F811
    if content is not None:
        (tmp_path / "result.json").write_text(content)
    with _app_on(engine, tmp_path) as c:
        r = c.get("/run")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        detail = r.json()["detail"]
        assert message in detail and tmp_path.name in detail and str(tmp_path.parent) not in detail
        assert c.get("/run/report").status_code == 404
        assert c.get("/health").status_code == 200  # the rest of the server works without a run


def test_non_finite_metrics_are_written_as_null(engine, tmp_path):  # noqa: F811
    result = {"model": "KGGLM", "dataset": "toy", "test_result": {"ndcg@5": math.nan, "hit@5": 0.5, "ok": True},
              "baselines": {"Pop": {"test": {"ndcg@5": math.inf}, "valid": {"ndcg@5": 0.25}}}}
    (tmp_path / "result.json").write_text(json.dumps(result))  # Python writes NaN and Infinity
    with _app_on(engine, tmp_path) as c:
        metrics = c.get("/run").json()["metrics"]
    assert metrics == {"test": {"KGGLM": {"ndcg@5": None, "hit@5": 0.5}, "Pop": {"ndcg@5": None}},
                       "valid": {"Pop": {"ndcg@5": 0.25}}}


def test_api_key_and_host_check_guard_the_run(engine, serve_checkpoint):  # noqa: F811
    key = "run-token"
    with _app_on(engine, serve_checkpoint, api_key=key) as c:
        for path in ("/run", "/run/report"):
            r = c.get(path)
            assert r.status_code == 401 and "API key" in r.json()["detail"], path
            assert c.get(path, headers={"authorization": f"Bearer {key}"}).status_code == 200, path
            assert c.get(path, headers={"host": "evil.example", "authorization": f"Bearer {key}"}).status_code == 400


TRAVERSALS = [
    "/run/report/../result.json", "/run/../run/result.json", "/run/..%2Fresult.json", "/run/report%2F..%2Fresult.json",
    "/run/%2e%2e/result.json", "/run/report/..%5cresult.json", "/static/..%2F..%2F..%2Fresult.json",
    "/static/../../config.yaml", "/run/result.json", "/run/config.yaml", "/run/checkpoint/best/config.json",
    "/run/report.html", "/static/%2e%2e%2fapp.py", "//run/report/../../etc/passwd",
]


def test_no_path_reaches_another_file(engine, serve_checkpoint):  # noqa: F811
    """Raw request targets (http.client sends them as written, no client-side normalisation)."""
    secret = (serve_checkpoint / "result.json").read_text()[:60]
    with running(create_app(engine)) as url:
        host, port = url.removeprefix("http://").split(":")
        for target in TRAVERSALS:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", target)
            r = conn.getresponse()
            body = r.read().decode("utf-8", "replace")
            conn.close()
            assert r.status == 404, (target, r.status)
            assert r.getheader("content-type") == "application/json", target
            assert secret not in body and "train_stats" not in body and "root:" not in body, target
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/run/report?path=../result.json")  # a query names no file either
        r = conn.getresponse()
        assert r.status == 200 and r.read() == (serve_checkpoint / "report.html").read_bytes()
        conn.close()
