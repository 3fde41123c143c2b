"""The deployed shape, end to end: Chromium over HTTPS through Debian's nginx, configured as
docs/operations.md says, to `recvault serve` behind it (VAULT_PROXY_COUNT=1).

A teacher registers and uploads a recording, the director signs in with TOTP and issues an
order, and the person it names watches. Every form post and every script request is a
cookie-authenticated state change crossing the TLS proxy, with the CSRF token and the
browser's own Origin header.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.browser import sample_mp4
from tests.support.nginx import Proxy, nginx_in_front
from tests.support.people import PASSWORD, Person, add_person
from tests.support.processes import free_port, serving
from tests.support.recording_support import keep_year_open, riga_today
from vault.models import AccessOrder, Recording
from vault.services.runtime import Runtime
from vault.settings import Settings

# gunicorn, in another process, reads the machine's clock: so does this test's runtime.
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.machine_clock]


@dataclass(frozen=True)
class Deployment:
    proxy: Proxy
    app_port: int


@pytest.fixture
def deployed(settings: Settings, runtime: Runtime, tmp_path: Path) -> Iterator[Deployment]:
    app_port = free_port()
    with nginx_in_front(app_port, tmp_path / "nginx") as proxy:
        env = {
            **os.environ,
            "VAULT_INSTANCE_DIR": str(settings.instance_dir),
            "VAULT_DATABASE_URL": settings.database_url,
            "VAULT_STORAGE_URL": settings.storage_url,
            "VAULT_PROXY_COUNT": "1",
            "VAULT_BASE_URL": proxy.https_url,
        }
        recvault = [sys.executable, "-m", "vault.cli"]
        subprocess.run([*recvault, "init"], env=env, check=True, capture_output=True, timeout=120)
        command = [*recvault, "serve", "--port", str(app_port), "--workers", "1"]
        with serving(command, env, app_port):
            yield Deployment(proxy, app_port)


@pytest.fixture
def contexts(chromium: Browser) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def new_page(chromium: Browser, contexts: list[BrowserContext]) -> Page:
    """A separate browser profile (its own cookies) that accepts the test's certificate."""
    context = chromium.new_context(
        ignore_https_errors=True, locale="lv-LV", viewport={"width": 1280, "height": 900}
    )
    contexts.append(context)
    return context.new_page()


def sign_in(page: Page, base: str, person: Person) -> None:
    page.goto(f"{base}/login")
    page.fill('input[name="username"]', person.username)
    page.fill('input[name="password"]', PASSWORD)
    if person.totp_secret is not None:
        page.fill('input[name="totp"]', person.fresh_code())
    page.click('main form button[type="submit"]')
    page.wait_for_url(f"{base}/")


def test_sign_in_upload_order_and_watch_over_https_through_nginx(
    deployed: Deployment,
    runtime: Runtime,
    chromium: Browser,
    contexts: list[BrowserContext],
    tmp_path: Path,
) -> None:
    base = deployed.proxy.https_url
    keep_year_open(runtime)
    teacher = add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    director = add_person(runtime, "direktore", "director", name="Ilze Ozola")
    viewer = add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    today = riga_today(runtime).isoformat()
    video = sample_mp4(tmp_path / "lesson.mp4", seconds=6)

    # Plain HTTP is sent to HTTPS.
    plain = requests.get(f"{deployed.proxy.http_url}/login", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")

    # The teacher registers the lesson and uploads it through the page's tus client.
    page = new_page(chromium, contexts)
    sign_in(page, base, teacher)
    page.goto(f"{base}/recordings/new")
    page.fill('input[name="title"]', "Fotosintēze")
    page.fill('input[name="subject"]', "Bioloģija")
    page.fill('input[name="class_group"]', "9.b")
    page.fill('input[name="lesson_date"]', today)
    page.check('input[name="purpose"][value="quality_safety"]')
    page.fill('textarea[name="aim"]', "Pārskatīt stundas tempu.")
    page.check('input[name="visible"][value="teacher_only"]')
    page.fill('input[name="subjects_informed_method"]', "e-klase ziņa vecākiem")
    page.fill('input[name="subjects_informed_at"]', today)
    page.check('input[name="third_party_warning"]')
    page.check('input[name="device"][value="school"]')
    page.click('main form button[type="submit"]')
    page.wait_for_url(f"{base}/recordings/*/upload")
    recording_id = page.url.split("/recordings/")[1].split("/")[0]
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    expect(page.locator("dl.facts")).to_contain_text("pieejams")

    # The director signs in with TOTP and issues an order naming the staff member.
    page = new_page(chromium, contexts)
    sign_in(page, base, director)
    page.goto(f"{base}/orders/new")
    page.fill('input[name="number"]', "1-12/45")
    page.fill('input[name="issued_on"]', today)
    page.fill('textarea[name="purpose"]', "Stundas vērošana metodiskajā komisijā")
    page.check('input[name="grantees"][value="metodikis"]')
    page.check(f'input[name="recording_ids"][value="{recording_id}"]')
    page.fill('input[name="valid_from"]', today)
    page.fill('input[name="valid_until"]', today)
    page.click('main form button[type="submit"]')
    page.wait_for_url(f"{base}/orders/*")
    expect(page.locator("main")).to_contain_text("1-12/45")

    # The person named watches: the video plays.
    page = new_page(chromium, contexts)
    sign_in(page, base, viewer)
    page.goto(f"{base}/recordings/{recording_id}/watch")
    expect(page.locator("#watch")).to_have_attribute("data-state", "playing", timeout=15_000)
    page.evaluate("document.querySelector('video').play()")
    deadline = time.monotonic() + 20
    while float(page.evaluate("document.querySelector('video').currentTime")) < 1.0:
        assert time.monotonic() < deadline, "the video did not play"
        time.sleep(0.2)

    with runtime.sessions() as session:
        recording = session.get(Recording, uuid.UUID(recording_id))
        assert recording is not None and recording.status == "available"
        assert session.query(AccessOrder).count() == 1
    # Every request went through nginx, over HTTP/2.
    log = deployed.proxy.access_log.read_text(encoding="utf-8")
    assert "PATCH /api/v1/uploads/" in log and "HTTP/2.0" in log
