"""The page at `/`: its JSON routes over real HTTP, and the page itself in a real browser (Debian's
chromium driven by selenium through chromium-driver, both started by the test). The browser test
is skipped where Chromium is absent (README, Serving: how to install it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from batchrec_dagster.localstack.processes import children, is_running
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.api.schemas import MAX_BODY_BYTES
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.raw_http import chunked_upload
from tests.harness.serving import NAMES, ServerThread, Serving, publish

STARRED = [1003, 1004, 1011]
K = 20  # of the 37 repositories left: the two top-20s share at least 3, so overlap is shown


@pytest.fixture
def page(mongo_db, gcs_store) -> Iterator[Serving]:
    """Three fresh models (the best serves, the second is the challenger) and a user with stars."""
    models = [publish(mongo_db, gcs_store, score=s, seed=i) for i, s in enumerate((0.2, 0.3, 0.4))]
    now = datetime.now(UTC)
    mongo_db["users"].insert_one({"_id": 1, "login": "demo-user-0"})
    mongo_db["stars"].insert_many([{"user_id": 1, "repo_id": r, "starred_at": now - timedelta(minutes=i)}
                                   for i, r in enumerate(STARRED)])
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None, load_challenger=True)
    assert manager.refresh_now().entry_id == str(models[2]["_id"])
    assert manager.challenger is not None and manager.challenger.summary["id"] == str(models[1]["_id"])
    with ServerThread(create_app(manager, mongo_db)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        serving = Serving(server.url, http, manager, mongo_db, gcs_store, clock=None)  # type: ignore[arg-type]
        serving.models = models  # type: ignore[attr-defined]
        yield serving


def test_compare_by_login_marks_the_overlap(page: Serving) -> None:
    body = page.http.post("/page/compare", json={"login": "demo-user-0", "k": K}).json()
    champion, challenger = body["champion"], body["challenger"]
    assert champion["model"]["id"] == str(page.models[2]["_id"])
    assert challenger["model"]["id"] == str(page.models[1]["_id"])
    assert champion["model"]["age_hours"] is not None and champion["model"]["age_hours"] < 2
    assert sorted(body["input"]["repo_ids"]) == STARRED
    # the same recommendations as the API gives for these stars
    direct = page.http.get("/users/demo-user-0/recommendations", params={"k": K}).json()
    assert [r["repo_id"] for r in champion["recommendations"]] == [
        r["repo_id"] for r in direct["recommendations"]]
    ids = [{r["repo_id"] for r in side["recommendations"]} for side in (champion, challenger)]
    both = ids[0] & ids[1]
    assert body["overlap"] == len(both) >= 3
    for side in (champion, challenger):
        for rec in side["recommendations"]:
            assert rec["in_both"] == (rec["repo_id"] in both)
            assert rec["url"] == f"https://github.com/{rec['name']}" and rec["repo_id"] not in STARRED


def test_compare_by_pasted_repositories(page: Serving) -> None:
    text = f"{NAMES[3]}, https://github.com/{NAMES[4].upper()}\n1011 nobody/nothing not-a-name"
    body = page.http.post("/page/compare", json={"repos": text, "k": 5}).json()
    assert body["input"]["repo_ids"] == STARRED
    assert body["input"]["unknown_tokens"] == ["nobody/nothing", "not-a-name"]
    by_login = page.http.post("/page/compare", json={"login": "demo-user-0", "k": 5}).json()
    assert body["champion"]["recommendations"] == by_login["champion"]["recommendations"]
    for bad in ({}, {"login": "a", "repos": "b"}, {"login": "a", "k": 0}, {"repos": "x", "extra": 1}):
        assert page.http.post("/page/compare", json=bad).status_code == 422
    assert page.http.post("/page/compare", json={"login": "nobody"}).status_code == 404


def test_history_and_the_page_itself(page: Serving) -> None:
    history = page.http.get("/page/history").json()
    assert history["served"] == [] and history["champions"] == []  # no evaluation window yet
    entries = history["entries"]
    assert [e["score"] for e in entries] == [0.4, 0.3, 0.2]  # newest first
    assert all(e["comparable_score"] is None for e in entries)
    assert [(e["served"], e["challenger"]) for e in entries] == [(True, False), (False, True), (False, False)]
    html = page.http.get("/")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in html.headers["content-security-policy"]
    # nothing is loaded from elsewhere: no external scripts, styles, images or fonts
    assert "<link" not in html.text and " src=" not in html.text and "@import" not in html.text


def _browser(tmp_path: Path):  # noqa: ANN202 - selenium's WebDriver, imported only when present
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    return webdriver.Chrome(options=options, service=service), service


def test_the_page_in_a_real_browser(page: Serving, tmp_path: Path) -> None:
    browser, service = _browser(tmp_path)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    processes = [service.process.pid, *children(service.process.pid)]
    try:
        browser.get(page.url + "/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.05)
        wait.until(lambda b: str(page.models[2]["_id"]) in b.find_element(By.ID, "served").text)
        browser.find_element(By.ID, "login").send_keys("demo-user-0")
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys(str(K))
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: b.find_element(By.ID, "message").get_attribute("data-done") == "1")
        expected = page.http.post("/page/compare", json={"login": "demo-user-0", "k": K}).json()
        assert expected["overlap"] >= 3
        for side in ("champion", "challenger"):
            items = browser.find_elements(By.CSS_SELECTOR, f"#{side}-list li")
            shown = [(li.find_element(By.TAG_NAME, "a").text, li.get_attribute("class") == "overlap")
                     for li in items]
            assert shown == [(r["name"], r["in_both"]) for r in expected[side]["recommendations"]]
            links = [li.find_element(By.TAG_NAME, "a").get_attribute("href") for li in items]
            assert links == [r["url"] for r in expected[side]["recommendations"]]
        assert f"{expected['overlap']} recommended by both" in browser.find_element(By.ID, "message").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
        assert len(rows) == 3 and "served" in rows[0].text
        browser.save_screenshot(str(tmp_path / "page.png"))  # a test artifact, under pytest's tmp dir
        assert (tmp_path / "page.png").stat().st_size > 10_000
        processes += children(service.process.pid)
    finally:
        browser.quit()
    # the browser and its driver, started by this test, are gone
    assert service.process.poll() is not None
    assert not [pid for pid in processes if is_running(pid)]


def test_compare_refuses_a_large_body_as_it_arrives(page: Serving) -> None:
    """D6: the page's route buffered any body before validating it (200 MB: +800 MiB RSS, 7 s).
    A chunked upload of 64 MiB must be refused with 413 after about the 1 MiB limit, not after
    the server has read it all; a declared Content-Length over the limit is refused at once."""
    upload = chunked_upload(page_port(page), "/page/compare", 64 << 20)
    assert upload.status == 413
    assert upload.sent_bytes < 16 << 20, f"the server read {upload.sent_bytes} bytes before refusing"
    response = page.http.post("/page/compare", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                              headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert page.http.post("/page/compare", json={"repos": "1003", "k": 3}).status_code == 200


def page_port(page: Serving) -> int:
    return int(page.url.rsplit(":", 1)[1])
