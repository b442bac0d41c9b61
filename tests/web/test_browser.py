"""End to end in real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium; no browser is downloaded): first start, log in, register a repository, queue a TODO
list, run the night with the scripted engine, review in the morning, accept one item (its
branch merged) and reject another. Screenshots of every page go to test-artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from jobs.patch.repo import git
from scheduler import session_scope
from scheduler.models import Task
from tests.conftest import require
from tests.jobs.patch_sample import FIXED, TEST_COMMAND, make_sample_repo, script, whole_file
from tests.scripted import run_patch_night

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "a long night ahead"


@pytest.fixture
def chrome():
    require(Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(),
            "Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions", "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _until(driver, check, what: str, timeout_s: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(lambda d: check(d), message=what)


def _submit(driver, element_id: str) -> None:
    """Click a submit button and wait until the next page has replaced this one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    _until(driver, expected_conditions.staleness_of(page), f"the page after clicking {element_id}")


def _fill(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def test_a_night_from_first_start_to_morning_review(web_server, chrome, tmp_path):
    from selenium.webdriver.common.by import By

    url, settings = web_server
    repo = make_sample_repo(tmp_path / "sample")
    code = (settings.data_dir / "setup-code").read_text().strip()

    # First start: choose the password, then log out and back in.
    chrome.get(f"{url}/setup?code={code}")
    _fill(chrome, "username", "admin")
    _fill(chrome, "password", PASSWORD)
    _fill(chrome, "confirm", PASSWORD)
    _shot(chrome, "01-setup")
    _submit(chrome, "setup")
    _submit(chrome, "logout")
    assert "/login" in chrome.current_url
    _fill(chrome, "username", "admin")
    _fill(chrome, "password", PASSWORD)
    _shot(chrome, "02-login")
    _submit(chrome, "login")

    # Evening: register the repository, queue two items.
    _fill(chrome, "repo-name", "sample")
    _fill(chrome, "repo-source", str(repo))
    _fill(chrome, "repo-test_command", TEST_COMMAND)
    _submit(chrome, "register-repo")
    assert chrome.find_element(By.ID, "added").text == "Repository sample registered."
    _fill(chrome, "text-sample", "- Fix add so that test_add passes\n- Make add work for negative numbers\n")
    _until(chrome, lambda d: "2 item(s)" in d.find_element(By.ID, "preview-1").text, "the htmx preview")
    _shot(chrome, "03-evening")
    _submit(chrome, "submit-todo-sample")
    assert "Queued task(s) 1,2" in chrome.find_element(By.ID, "queued").text
    _shot(chrome, "04-tonight-queued")

    # The night, with the scripted engine; the open Tonight page follows it without a reload.
    run_patch_night(settings, [1, 2], script(whole_file(FIXED)))
    _until(chrome, lambda d: "succeeded 2" in d.find_element(By.ID, "queue-counts").text, "live update")
    _shot(chrome, "05-tonight-done")

    # Morning: accept the first item into main, reject the second.
    chrome.get(f"{url}/review")
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#items a[href^='/review/']")) == 2
    _shot(chrome, "06-review")
    chrome.get(f"{url}/review/1")
    assert chrome.find_element(By.ID, "verdict").text == "fixed"
    assert chrome.find_elements(By.CSS_SELECTOR, "#diff .code .gi")  # highlighted added lines
    _shot(chrome, "07-item")
    _fill(chrome, "into", "main")
    _submit(chrome, "accept")
    assert "merged into main" in chrome.find_element(By.ID, "done").text
    _shot(chrome, "08-accepted")
    assert (repo / "calc.py").read_text() == FIXED
    assert "nightshift/" in git(repo, "log", "-1", "--format=%s", "main")
    chrome.get(f"{url}/review/2")
    _submit(chrome, "reject")
    assert chrome.find_element(By.ID, "review-state").text == "rejected"
    _shot(chrome, "09-rejected")

    chrome.get(f"{url}/nights")
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#timeline rect")) == 2
    _shot(chrome, "10-night-report")
    with session_scope(settings.database_url) as session:
        reviews = {t.id: (t.review.value, t.merged_into) for t in session.exec(select(Task))}
    assert reviews == {1: ("accepted", "main"), 2: ("rejected", None)}
    assert len(list(SHOTS.glob("*.png"))) >= 10
