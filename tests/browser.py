"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium, for the page tests.

Selenium is blocking: tests call it through `trio.to_thread.run_sync` so the server in the same process keeps
running. The browser gets a fake microphone fed from a WAV file and makes no network request of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MELVIN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MELVIN_CHROMEDRIVER", "/usr/bin/chromedriver")


def require_browser() -> None:
    """Skip on a developer machine without the browser; fail in CI, where `./dev test` installs it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(p))]
    if missing:
        message = f"headless Chromium needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def open_browser(profile: Path, fake_audio: Path | None = None) -> Iterator[object]:
    """A headless Chromium session (a selenium WebDriver) with its own profile directory; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1100,800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if fake_audio is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        # %noloop: the clip plays once, then the fake microphone gives silence.
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
