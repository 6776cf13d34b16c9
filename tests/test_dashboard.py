"""The dashboard in a real headless browser: Debian's chromium, driven by selenium.

A real worker and a real gunicorn serve ``tests.taskapp``; the page is loaded
in chromium and watched until it shows what happened. .ci/run installs
chromium and chromium-driver when they are missing; without them these tests
fail (they do not skip), so a CI machine cannot pass them by accident.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import http

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APP = "tests.taskapp"
WSGI = "asyncq.api:from_env()"


class Page:
    """The browser on the dashboard, with bounded waits that say what never happened."""

    def __init__(self, driver: WebDriver, artifacts: Path):
        self.driver = driver
        self.artifacts = artifacts

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def attr(self, css: str, name: str) -> str:
        return self.find(css).get_attribute(name) or ""

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 12.0) -> Any:
        def check(_: WebDriver) -> Any:
            try:
                return probe()
            except Exception:  # not on the page yet, or replaced while it was read
                return None

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check)
        except TimeoutException:
            shot = self.screenshot("timeout.png")
            status = self.driver.find_element(By.ID, "status").text
            raise AssertionError(f"the dashboard never showed {what} within {timeout}s "
                                 f"(status line: {status!r}; screenshot: {shot})") from None

    def present(self, css: str) -> Any:
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / name
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def severe_console_entries(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the dashboard tests need Debian's chromium "
                    "and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     "--window-size=1360,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager then downloads nothing.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield Page(driver, tmp_path)
    finally:
        driver.quit()


def submit(api: str, task: str, *args: Any, token: str | None = None) -> str:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, body = http("POST", f"{api}/tasks/{task}", json.dumps({"args": list(args)}),
                           headers)
    assert status == 202, body
    return body["task_id"]


def test_dashboard_shows_the_worker_new_tasks_their_detail_and_a_moving_chart(
        page, start_worker, start_gunicorn):
    # Given a running worker and the API, and the dashboard open in the browser
    worker = start_worker()
    worker_id = worker.wait_for(r"(\S+) ready\.$").group(1)
    api = start_gunicorn(WSGI, env={"ASYNCQ_APP": APP})
    page.driver.get(f"{api}/dashboard")

    # Then it shows the worker, alive, and a first chart with nothing done yet
    row = page.wait(f"worker {worker_id}",
                    lambda: page.present(f'#workers tr[data-worker-id="{worker_id}"]'))
    assert "celery" in row.text
    assert page.find("#tile-workers").text == "1 / 1"
    page.wait("a drawn chart", lambda: int(page.attr("#chart", "data-renders")) >= 1)
    assert page.attr("#chart", "data-points") == "120"  # 10 minutes of 5-second slices
    assert page.attr("#chart", "data-total") == "0"
    assert page.find("#status").get_attribute("data-state") == "ok"

    # When a task is submitted (its arguments are markup, which must show as text) and
    # another one fails
    task_id = submit(api, "tests.add", "<i>x</i>", "<b>y</b>")
    failed_id = submit(api, "tests.fail", "on purpose")

    # Then both appear in the recent tasks with their final state
    page.wait(f"task {task_id} in SUCCESS", lambda: page.present(
        f'#tasks tr[data-task-id="{task_id}"][data-state="SUCCESS"]'))
    page.wait(f"task {failed_id} in FAILURE", lambda: page.present(
        f'#tasks tr[data-task-id="{failed_id}"][data-state="FAILURE"]'))
    assert "tests.add" in page.find(f'#tasks tr[data-task-id="{task_id}"]').text
    # And the chart and the tiles count them
    page.wait("the chart counting both tasks",
              lambda: page.attr("#chart", "data-total") == "2")
    page.wait("the failed tile at 1", lambda: page.find("#tile-failed").text == "1")

    # When the task's id is clicked
    page.find(f'#tasks tr[data-task-id="{task_id}"] a[data-task-link]').click()

    # Then its detail opens, at an address of its own, with its args and result as text
    result = page.wait("the task's result in its detail",
                       lambda: page.present('#detail[open] [data-testid="detail-result"]'))
    assert page.driver.current_url.endswith(f"#task={task_id}")
    assert '"<i>x</i><b>y</b>"' in result.text
    args = page.find('[data-testid="detail-args"]').text
    assert '"<i>x</i>"' in args and '"<b>y</b>"' in args
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#detail i, #detail b")
    page.screenshot("dashboard-detail.png")

    # And the failed task's detail, opened by its address, shows the error and traceback
    page.driver.get(f"{api}/dashboard#task={failed_id}")
    error = page.wait("the failed task's error",
                      lambda: page.present('#detail[open] [data-testid="detail-error"]'))
    assert "ValueError: on purpose" in error.text and "Traceback" in error.text

    # When the detail is closed, the page is back at /dashboard
    page.find("#detail-close").click()
    page.wait("the detail closed", lambda: not page.present("#detail[open]"))
    page.wait("the address back at /dashboard",
              lambda: page.driver.current_url == f"{api}/dashboard")
    page.screenshot("dashboard.png")

    # And nothing went wrong in the page's console
    assert page.severe_console_entries() == []


def test_dashboard_asks_for_the_token_once_and_then_works(page, start_gunicorn):
    # Given an API that needs a token
    token = "dashboard-test-token"
    api = start_gunicorn(WSGI, env={"ASYNCQ_APP": APP, "ASYNCQ_API_TOKEN": token})

    # When the dashboard is opened, it asks for the token
    page.driver.get(f"{api}/dashboard")
    page.wait("the token form", lambda: page.present("#login[open]"))
    assert page.find("#status").get_attribute("data-state") == "auth"

    # And a wrong token is refused with a message, asking again
    page.find("#login-token").send_keys("not-the-token")
    page.find("#login-submit").click()
    page.wait("the wrong token refused",
              lambda: "not accepted" in page.find("#login-message").text
              and page.present("#login[open]"))

    # Then with the right token it shows data
    page.find("#login-token").send_keys(token)
    page.find("#login-submit").click()
    page.wait("data after the token was given",
              lambda: page.attr("#status", "data-state") == "ok"
              and int(page.attr("#chart", "data-renders")) >= 1)
    assert not page.present("#login[open]")

    # And after a reload it does not ask again (the token is kept for the tab)
    page.driver.refresh()
    page.wait("data after a reload", lambda: page.attr("#status", "data-state") == "ok")
    assert not page.present("#login[open]")

    # And the only console errors are refused requests' 401s
    severe = page.severe_console_entries()
    assert severe and all("401" in entry["message"] for entry in severe), severe
