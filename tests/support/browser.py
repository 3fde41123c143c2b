"""Debian's Chromium driven by Playwright (no browser download: the system binary)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.backends import missing_backend
from tests.support.people import PASSWORD, Person

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium reaches for Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        missing_backend(f"Chromium at {CHROMIUM} (Debian package chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(locale="lv-LV", viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def sample_mp4(path: Path, seconds: int = 3) -> Path:
    """A real, playable H.264 MP4 made by ffmpeg (Debian package ffmpeg)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        missing_backend("ffmpeg (Debian package ffmpeg), to make a test video")
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=duration={seconds}:size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def sign_in_with_the_form(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('main form button[type="submit"]')
    page.wait_for_url(f"{base}/")


def sign_in_with_a_code(page: Page, base: str, person: Person) -> None:
    """Sign in through the form as a person whose role needs a one-time code."""
    page.goto(f"{base}/login")
    page.fill('input[name="username"]', person.username)
    page.fill('input[name="password"]', person.password)
    page.fill('input[name="totp"]', person.fresh_code())
    page.click('main form button[type="submit"]')
    page.wait_for_url(f"{base}/")
