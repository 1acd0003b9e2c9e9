"""The console in a real browser: log in, upload, follow a job to done, fix a poison job, and what a key without
the admin role cannot see. Each page is photographed at a desktop's and a phone's width on the way."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.console.browser import click_label_of, images_loaded, screenshots, text_of, wait_until
from tests.console.conftest import Console
from tests.support.images import png_bytes

pytestmark = pytest.mark.integration


def log_in(browser: webdriver.Chrome, console: Console, key: str) -> None:
    browser.delete_all_cookies()
    browser.get(console.url("/console/jobs"))
    assert "/console/login" in browser.current_url, "a console page without a session asks to log in"
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(browser, lambda b: b.current_url.endswith("/console/jobs"), "the jobs page after logging in")


def status_is(expected: str):  # type: ignore[no-untyped-def]
    def check(browser: webdriver.Chrome) -> bool:
        return bool(browser.find_elements(By.CSS_SELECTOR, f"#job .status-{expected}"))

    return check


def test_upload_an_image_and_follow_it_to_done(browser: webdriver.Chrome, console: Console, tmp_path: Path) -> None:
    browser.get(console.url("/console/login"))
    screenshots(browser, console.screenshots, "login")
    log_in(browser, console, console.user_key)

    browser.get(console.url("/console/submit"))
    picture = tmp_path / "sunset.png"
    picture.write_bytes(png_bytes((320, 200), seed=3))
    browser.find_element(By.ID, "file").send_keys(str(picture))
    click_label_of(browser.find_element(By.CSS_SELECTOR, 'input[name="filter"][value="sepia"]'))
    wait_until(browser, lambda b: images_loaded(b, "#drop") == [320], "the chosen file's preview")
    assert all(images_loaded(browser, ".filters")), "every filter has its preview"
    screenshots(browser, console.screenshots, "submit")
    browser.find_element(By.ID, "submit-button").click()

    wait_until(browser, lambda b: "/console/jobs/" in b.current_url, "the job's page")
    wait_until(browser, status_is("done"), "the job to be done, followed live")
    assert images_loaded(browser, ".compare") == [320, 320], "the original and the result, at full size"
    assert text_of(browser, "#attempts") == "1"
    assert "Partition" in text_of(browser, "#job"), "the job's Kafka coordinates"
    screenshots(browser, console.screenshots, "job")

    job_id = browser.current_url.rsplit("/", 1)[1]
    browser.get(console.url("/console/jobs"))
    row = browser.find_element(By.CSS_SELECTOR, f'a[href="/console/jobs/{job_id}"]').find_element(
        By.XPATH, "./ancestor::tr"
    )
    widths: list[int] = browser.execute_script(
        "return [...arguments[0].querySelectorAll('.thumbs img')].map(image => image.naturalWidth)", row
    )
    assert len(widths) == 2, "a thumbnail of the original and one of the result"
    assert all(0 < width <= 256 for width in widths)
    screenshots(browser, console.screenshots, "jobs")


def test_a_key_without_admin_sees_no_operator_pages(browser: webdriver.Chrome, console: Console) -> None:
    log_in(browser, console, console.user_key)
    navigation = text_of(browser, "header nav")
    assert "Jobs" in navigation
    assert "Workers" not in navigation
    assert "Dead letters" not in navigation
    browser.get(console.url("/console/workers"))
    assert text_of(browser, "h1") == "Not allowed"

    session = {cookie["name"]: cookie["value"] for cookie in browser.get_cookies()}
    with httpx.Client(base_url=console.base_url, cookies=session, timeout=30) as client:
        for path in ("/console/workers", "/console/dead-letters"):
            assert client.get(path).status_code == 403
        bearer = {"Authorization": f"Bearer {console.user_key}"}
        for path in ("/admin/consumer-group", "/admin/dead-letters"):
            assert client.get(path, headers=bearer).status_code == 403
        assert client.post("/admin/dead-letters/redrive", json={}, headers=bearer).status_code == 403


def test_a_poison_job_is_redriven_once_its_cause_is_fixed(browser: webdriver.Chrome, console: Console) -> None:
    log_in(browser, console, console.admin_key)
    browser.get(console.url("/console/submit"))
    # With the keyboard only: the URL, Tab to the filters, arrows to blur, Tab to the button, Enter.
    url = browser.find_element(By.ID, "url")
    url.send_keys(console.images.url("/late/9.png"))
    ActionChains(browser).send_keys(Keys.TAB, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT).perform()
    chosen = browser.find_element(By.CSS_SELECTOR, 'input[name="filter"]:checked').get_attribute("value")
    assert chosen == "blur", "the filters are one radio group the arrow keys move through"
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "submit-button"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(browser, status_is("failed"), "the poison job to fail")
    job_id = browser.current_url.rsplit("/", 1)[1]

    browser.get(console.url("/console/dead-letters"))
    wait_until(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, f'#dead-letters tr[data-image-id="{job_id}"]'),
        "the dead letter listed",
    )
    code = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-image-id="{job_id}"]').get_attribute(
        "data-error-code"
    )
    assert code, "the dead letter shows its stable error code"
    assert browser.find_element(By.CSS_SELECTOR, f'#error-counts tr[data-error-code="{code}"]')
    screenshots(browser, console.screenshots, "dead-letters")

    console.images.release_late()  # the cause is fixed: the image is there now
    Select(browser.find_element(By.CSS_SELECTOR, '#redrive select[name="error_code"]')).select_by_value(code)
    browser.find_element(By.ID, "preview").click()
    wait_until(browser, lambda b: b.find_elements(By.ID, "redrive-preview"), "the dry run's preview")
    assert "1 would be redriven" in text_of(browser, "#redrive-preview")
    screenshots(browser, console.screenshots, "redrive-preview")
    browser.find_element(By.ID, "execute").click()
    wait_until(browser, lambda b: b.find_elements(By.ID, "redrive-result"), "the redrive's report")
    assert "1 redriven" in text_of(browser, "#redrive-result")

    browser.get(console.url(f"/console/jobs/{job_id}"))
    wait_until(browser, status_is("done"), "the redriven job to be done")

    browser.get(console.url("/console/workers"))
    assert text_of(browser, "#group-state") == "Stable"
    assert browser.find_elements(By.CSS_SELECTOR, "#members tbody tr"), "the worker is a member"
    partitions = browser.find_elements(By.CSS_SELECTOR, "#partitions tbody tr")
    assert len(partitions) == console.settings.topic_partitions
    screenshots(browser, console.screenshots, "workers")
