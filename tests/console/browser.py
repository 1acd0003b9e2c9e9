"""Headless Chromium for the console's tests: Debian's ``chromium`` and ``chromium-driver`` through Selenium.

No browser is downloaded at test time (Selenium Manager is never asked): the binaries come from the system, or
from ``CHROMIUM_BINARY`` and ``CHROMEDRIVER``. Screenshots are written to ``CONSOLE_SCREENSHOTS`` when it is set
(``make console-screenshots`` points it at docs/console), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

WIDTHS = {"desktop": (1280, 860, False), "phone": (390, 844, True)}
WAIT_S = 60.0


def _binary(variable: str, *names: str) -> str:
    found = os.environ.get(variable) or next((path for name in names if (path := shutil.which(name))), None)
    if found is None:
        pytest.fail(
            f"no {names[0]} found: install Debian's chromium and chromium-driver (apt-get install chromium "
            f"chromium-driver), or set {variable}"
        )
    return found


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("CHROMIUM_BINARY", "chromium", "chromium-browser", "google-chrome")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,860")
    driver = webdriver.Chrome(options=options, service=Service(_binary("CHROMEDRIVER", "chromedriver")))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], object], what: str) -> None:
    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=f"waited {WAIT_S} s for {what}")


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def images_loaded(driver: webdriver.Chrome, within: str) -> list[int]:
    """The natural widths of the images inside ``within`` (0 for one that did not load)."""
    widths: list[int] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' img')].map(i => i.complete ? i.naturalWidth : 0)",
        within,
    )
    return widths


def click_label_of(element: WebElement) -> None:
    """Click the label around a visually hidden input, as a user would."""
    element.find_element(By.XPATH, "./ancestor::label").click()


def screenshot_folder(fallback: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshots(driver: webdriver.Chrome, folder: Path, name: str) -> list[Path]:
    """The current page, whole, at a desktop's width and a phone's (emulated, so media queries apply)."""
    taken = []
    for device, (width, height, mobile) in WIDTHS.items():
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        full_height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(height, full_height)})
        path = folder / f"{name}-{device}.png"
        path.write_bytes(driver.get_screenshot_as_png())
        assert png_width(path) == width, f"{path.name} is {width} px wide"
        taken.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return taken


def png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is a PNG"
    width: int = struct.unpack(">I", header[16:20])[0]
    return width
