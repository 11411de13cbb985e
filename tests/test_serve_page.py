"""The explorer page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

A person's steps: open the page, search a user, click them, read their history and recommendations,
see each explanation drawn as a graph, switch the explanation mode, open an item's facts; open the
run tab, read the metrics tables, open the run's report.html (every figure decodes and is not one
colour, under the report's own CSP). The screenshot is saved under the test's ``tmp_path``.
Skipped, saying why, when no browser is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install kgglm[test])")

from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from test_serve import engine, serve_checkpoint  # noqa: F401  (shared session fixtures)

from kgglm.serve.app import create_app
from kgglm.serve.server import running

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).exists()), shutil.which(name))


@pytest.fixture(scope="module")
def browser():
    chrome, driver = _first(CHROMIUM, "chromium"), _first(DRIVER, "chromedriver")
    if not chrome or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    opts = Options()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def page_server(engine):  # noqa: F811
    with running(create_app(engine, max_wait_ms=2)) as url:
        yield url


def _wait(drv, timeout: float = 60) -> WebDriverWait:
    return WebDriverWait(drv, timeout)


def test_user_recommendations_and_explanation_graphs(browser, page_server, engine, tmp_path):  # noqa: F811
    drv = browser
    drv.get(page_server + "/")
    _wait(drv).until(lambda d: "KGGLM on toy" in d.find_element(By.ID, "status").text)
    user = str(engine.data.user_tokens[4])
    search = drv.find_element(By.ID, "search")
    search.send_keys(user)
    _wait(drv).until(ec.presence_of_element_located((By.CSS_SELECTOR, f'#user-list[data-query="{user}"]')))
    listed = [b.get_attribute("data-user") for b in drv.find_elements(By.CSS_SELECTOR, "#user-list button")]
    assert listed and listed[0] == user and all(user in u for u in listed)  # the search filtered the list
    drv.find_element(By.CSS_SELECTOR, f'#user-list button[data-user="{user}"]').click()
    _wait(drv).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li.rec")) == 10)
    assert drv.find_element(By.ID, "user-name").text == user

    # the page shows what the API returns: same items, in order, with their explanation text
    expected = engine.recommend([engine.user_index(user)], 10, "best")[0]["recommendations"]
    cards = drv.find_elements(By.CSS_SELECTOR, "#recs li.rec")
    assert [c.get_attribute("data-item") for c in cards] == [r["item"] for r in expected]
    assert cards[0].find_element(By.CSS_SELECTOR, ".rec-title").text == expected[0]["title"]
    assert expected[0]["explanation"] in cards[0].find_element(By.CSS_SELECTOR, ".explanation").text

    # every card has a drawn path: H+1 nodes user -> ... -> item, H labelled edges, visible on screen
    hops = engine.hop_length
    for card, rec in zip(cards, expected):
        svg = card.find_element(By.CSS_SELECTOR, "svg.path-graph")
        assert svg.size["width"] > 300 and svg.size["height"] > 30
        nodes = svg.find_elements(By.CSS_SELECTOR, "g.node")
        assert len(nodes) == hops + 1
        assert [n.get_attribute("data-id") for n in nodes] == rec["path"][0::2]
        assert nodes[0].get_attribute("data-kind") == "user" and nodes[-1].get_attribute("data-kind") == "item"
        assert len(svg.find_elements(By.TAG_NAME, "line")) == hops
        rel_labels = [t.text for t in svg.find_elements(By.CSS_SELECTOR, "text.rel")]
        assert rel_labels[0] == "watched" and len(rel_labels) == hops

    # history lists the training items
    history = drv.find_elements(By.CSS_SELECTOR, "#history li button")
    assert len(history) == len(engine.history(user)["items"]) > 0
    drv.save_screenshot(str(tmp_path / "serve-page-best.png"))

    # switching the explanation mode decodes again in that mode
    drv.find_element(By.CSS_SELECTOR, "input[name=mode][value=knowledge]").click()
    _wait(drv).until(lambda d: "knowledge explanations" in d.find_element(By.ID, "rec-status").text)
    assert "explanation=knowledge" in drv.current_url
    knowledge = engine.recommend([engine.user_index(user)], 10, "knowledge")[0]["recommendations"]
    svgs = drv.find_elements(By.CSS_SELECTOR, "#recs li.rec svg.path-graph")
    assert [[n.get_attribute("data-id") for n in s.find_elements(By.CSS_SELECTOR, "g.node")] for s in svgs] == \
        [r["path"][0::2] for r in knowledge]

    # clicking a recommended item shows its KG facts
    drv.find_element(By.CSS_SELECTOR, "#recs li.rec .rec-title").click()
    _wait(drv).until(lambda d: d.find_element(By.ID, "item-panel").is_displayed()
                     and d.find_elements(By.CSS_SELECTOR, "#item-facts li"))
    assert drv.find_element(By.ID, "item-title").text == knowledge[0]["title"]
    shot = tmp_path / "serve-page.png"
    assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert not [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


def test_unknown_user_in_the_url_shows_an_error(browser, page_server):
    browser.get(page_server + "/?user=nobody-here")
    _wait(browser).until(lambda d: "nobody-here" in d.find_element(By.ID, "recs").text)
    assert "unknown user" in browser.find_element(By.ID, "recs").text


# JS run in the report page (WebDriver scripts are not subject to its CSP): each <img> drawn to a
# canvas, its size and the variance of its pixels' grey level.
IMAGE_STATS = """
return Array.from(document.images).map((img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!img.complete || !c.width || !c.height) return {alt: img.alt, w: c.width, h: c.height, variance: 0};
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0, sum = 0, sq = 0;
  for (let i = 0; i < px.length; i += 4) {
    const g = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
    n += 1; sum += g; sq += g * g;
  }
  const mean = sum / n;
  return {alt: img.alt, w: c.width, h: c.height, variance: sq / n - mean * mean};
});
"""


def _metric_text(v) -> str:
    """How the page writes a metric (app.js metricValue), computed here from result.json's value."""
    return str(int(v)) if float(v).is_integer() else f"{v:.4f}"


def test_run_tab_shows_the_metrics_and_opens_the_report(browser, page_server, serve_checkpoint):  # noqa: F811
    drv = browser
    result = json.loads((serve_checkpoint / "result.json").read_text())
    drv.get_log("browser")  # drains the log of the tests before
    drv.get(page_server + "/")
    _wait(drv).until(lambda d: "KGGLM on toy" in d.find_element(By.ID, "status").text)
    drv.find_element(By.ID, "tab-run").click()
    _wait(drv).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run-metrics table.metrics"))
    assert drv.find_element(By.ID, "run-view").is_displayed() and "view=run" in drv.current_url
    assert drv.find_element(By.ID, "run-name").text == serve_checkpoint.name
    assert not drv.find_element(By.ID, "intro").is_displayed()

    # the test and valid tables hold result.json's numbers: the model's and every baseline's
    baselines = result.get("baselines") or {}
    for split, own in (("test", result["test_result"]), ("valid", result["best_valid_result"])):
        table = drv.find_element(By.CSS_SELECTOR, f'table.metrics[data-split="{split}"]')
        heads = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        assert heads == ["metric", "KGGLM", *baselines]
        columns = {"KGGLM": own, **{n: b[split] for n, b in baselines.items()}}
        for metric in ("ndcg@5", "recall@5", "n_users"):
            row = table.find_element(By.CSS_SELECTOR, f'tr[data-metric="{metric}"]')
            cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            assert cells == [_metric_text(col[metric]) for col in columns.values()], (split, metric)

    # the report link opens report.html, served from the run directory, in a new tab
    link = drv.find_element(By.ID, "report-link")
    assert link.is_displayed() and link.get_attribute("href") == page_server + "/run/report"
    page = drv.current_window_handle
    link.click()
    _wait(drv).until(lambda d: len(d.window_handles) == 2)
    drv.switch_to.window(next(h for h in drv.window_handles if h != page))
    try:
        _wait(drv).until(lambda d: d.current_url.endswith("/run/report")
                         and d.execute_script("return document.readyState") == "complete")
        assert drv.title == "KGGLM on toy (pretrain+finetune)"
        assert drv.execute_script("return getComputedStyle(document.body).fontFamily") == "sans-serif"  # its style
        stats = drv.execute_script(IMAGE_STATS)
        assert [s["alt"] for s in stats] == ["training", "metrics", "explanations", "paths"]
        for s in stats:  # every figure decodes and is not one colour
            assert s["w"] > 300 and s["h"] > 100 and s["variance"] > 10, s
        assert not [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]  # no CSP violation
    finally:
        drv.close()
        drv.switch_to.window(page)
    drv.find_element(By.ID, "tab-explore").click()
    assert drv.find_element(By.ID, "intro").is_displayed() and not drv.find_element(By.ID, "run-view").is_displayed()
