"""The explorer page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

A person's steps: open the page, search a user, click them, read their history and recommendations,
see each explanation drawn as a graph, switch the explanation mode, open an item's facts. The
screenshot is saved under the test's ``tmp_path``. Skipped, saying why, when no browser is installed.
"""

from __future__ import annotations

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
