"""The upload page in a real browser: a generated MP4 goes up through tus and becomes
available; a refused file is followed by a new upload on the same registration; an
unfinished upload is offered again after a reload and continues where it stopped; a 423
from the server is waited out."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect
from sqlalchemy import select

from tests.support.browser import sample_mp4, sign_in_with_the_form
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import register
from vault.models import AuditEvent, Recording, Upload
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MIB = 1024 * 1024
STATUS = '[data-field="status"]'
PERCENT = '[data-field="percent"]'
# The page's messages, in Latvian (the browser's language).
NOT_MEDIA = (
    "Fails nav video vai audio ieraksts. Izvēlieties ieraksta failu un augšupielādējiet vēlreiz."
)
PAUSING = "Aptur…"
PAUSED = "Apturēts."
WAITING = "Serveris vēl pabeidz iepriekšējo pieprasījumu. Gaida…"
DANGER = "rgb(161, 26, 26)"  # --danger in style.css

# Hands each status the page shows, with its classes, to the test as it appears.
REPORT_STATUS = """() => {
  const element = document.querySelector('[data-field="status"]');
  new MutationObserver(() => window.statusShown(element.className + " " + element.textContent))
    .observe(element, { attributes: true, childList: true, characterData: true, subtree: true });
}"""
REPORT_PERCENT = """() => {
  const element = document.querySelector('[data-field="percent"]');
  new MutationObserver(() => window.statusShown(element.textContent))
    .observe(element, { childList: true, characterData: true, subtree: true });
}"""


def reported(page: Page) -> list[str]:
    """What the page hands to ``window.statusShown``, in order (see REPORT_STATUS)."""
    texts: list[str] = []

    def keep(text: str) -> None:
        texts.append(text)

    page.expose_function("statusShown", keep)
    return texts


def percent_shown(offset: int, size: int) -> str:
    """The share the page shows for ``offset`` (rounded down, Latvian decimal comma)."""
    return f"{int(1000 * offset / size) / 10:.1f} %".replace(".", ",")


def recording(runtime: Runtime, recording_id: object) -> Recording:
    with runtime.sessions() as session:
        row = session.get(Recording, recording_id)
        assert row is not None
        return row


def audit_actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def upload_throttle(page: Page) -> Callable[[int], None]:
    """Sets the browser's upload speed in bytes a second (-1: unlimited), so that an upload
    is still under way when the test pauses it."""
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")

    def upload_speed(bytes_per_second: int) -> None:
        conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
        network.send(
            "Network.emulateNetworkConditions",
            {**conditions, "uploadThroughput": bytes_per_second},
        )

    return upload_speed


def open_upload_page(page: Page, base: str, runtime: Runtime, **registration: Any) -> uuid.UUID:
    """A teacher's new registration, and its upload page open in the teacher's browser."""
    add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    recording_id = register(runtime, "skolotaja", **registration)
    sign_in_with_the_form(page, base, "skolotaja")
    page.goto(f"{base}/recordings/{recording_id}/upload")
    return recording_id


def start_then_pause(
    page: Page, video: Path, upload_speed: Callable[[int], None], seconds: float
) -> None:
    """Start sending ``video`` slowly and pause it ``seconds`` later, part of it sent."""
    upload_speed(512 * 1024)
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_timeout(seconds * 1000)
    page.click('[data-action="pause"]')
    expect(page.locator(STATUS)).to_have_text(PAUSED)


def padded_mp4(path: Path, size: int) -> Path:
    """A real MP4 followed by random bytes up to ``size``: long enough to pause."""
    sample_mp4(path)
    with path.open("ab") as handle:
        handle.write(os.urandom(size - path.stat().st_size))
    return path


def test_a_teacher_uploads_through_the_page(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    video = sample_mp4(tmp_path / "lesson.mp4")
    base = live_server.url
    recording_id = open_upload_page(page, base, runtime)
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    expect(page.locator("dl.facts")).to_contain_text("pieejams")
    row = recording(runtime, recording_id)
    assert row.status == "available"
    assert row.size_bytes == video.stat().st_size
    assert row.content_type == "video/mp4"


def test_after_a_refused_file_the_teacher_uploads_again_without_registering(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    not_video = tmp_path / "lesson.mp4"
    not_video.write_bytes(b"PK\x03\x04" + os.urandom(200_000))
    video = sample_mp4(tmp_path / "lesson-real.mp4")
    base = live_server.url
    recording_id = open_upload_page(page, base, runtime, title="Fotosintēze")
    upload_link = f'a[href="/recordings/{recording_id}/upload"]'
    page.set_input_files('input[type="file"]', str(not_video))
    page.click('[data-action="start"]')
    status = page.locator(STATUS)
    expect(status).to_have_text(NOT_MEDIA)
    expect(status).to_have_class(re.compile(r"\bupload-status--error\b"))
    assert status.evaluate("element => getComputedStyle(element).color") == DANGER
    assert recording(runtime, recording_id).status == "failed"

    # The home page and the recording's page both lead to a new upload.
    page.goto(f"{base}/")
    expect(page.locator(f".landing {upload_link}")).to_have_text("Augšupielādēt vēlreiz")
    page.goto(f"{base}/recordings/{recording_id}")
    page.locator(upload_link).click()
    page.wait_for_url(f"{base}/recordings/{recording_id}/upload")
    expect(page.locator(".flash.error")).to_contain_text("neizdevās")
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    expect(page.locator("dl.facts")).to_contain_text("pieejams")
    row = recording(runtime, recording_id)
    assert (row.status, row.title, row.size_bytes) == (
        "available",
        "Fotosintēze",
        video.stat().st_size,
    )
    assert audit_actions(runtime).count("upload:created") == 2


def test_an_unfinished_upload_is_offered_after_a_reload_and_continues(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    size = 6 * MIB
    video = padded_mp4(tmp_path / "long-lesson.mp4", size)
    base = live_server.url
    upload_speed = upload_throttle(page)
    shown = reported(page)
    recording_id = open_upload_page(page, base, runtime)
    expect(page.locator('[data-field="offer"]')).to_be_hidden()
    page.evaluate(REPORT_STATUS)
    start_then_pause(page, video, upload_speed, 3)
    # "Pausing…" stood until the request under way had stopped and the server had kept
    # what arrived; then "Paused." with the share the server holds.
    assert [text.split(" ", 1)[1] for text in shown[-2:]] == [PAUSING, PAUSED]
    with runtime.sessions() as session:
        committed = session.scalars(
            select(Upload.offset).where(Upload.recording_id == recording_id)
        ).one()
    assert 0 < committed < size
    held = percent_shown(committed, size)
    expect(page.locator(PERCENT)).to_have_text(held)

    # After a reload, before any file is chosen: the offer, with the share and the file.
    upload_speed(-1)
    page.reload()
    offer = page.locator('[data-field="offer"]')
    expect(offer).to_be_visible()
    expect(offer).to_contain_text(f"({held})")
    expect(offer).to_contain_text("long-lesson.mp4 (6.0 MiB)")
    expect(page.locator(PERCENT)).to_have_text(held)
    assert float(page.locator("progress").evaluate("bar => bar.value")) > 0

    shown.clear()
    page.evaluate(REPORT_PERCENT)
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="resume"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    row = recording(runtime, recording_id)
    assert row.status == "available" and row.size_bytes == size
    # From the resumed request on, the share never fell back to 0 %.
    assert shown and percent_shown(0, size) not in shown
    # One upload from start to end: the reload continued it rather than starting anew.
    assert audit_actions(runtime).count("upload:created") == 1


def test_a_locked_upload_is_waited_for_and_not_counted_as_a_failure(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    video = sample_mp4(tmp_path / "lesson.mp4")
    base = live_server.url
    locked: list[str] = []

    def answer_423_once(route: Route) -> None:
        # The first PATCH meets an upload still held by an earlier request.
        if route.request.method == "PATCH" and not locked:
            locked.append(route.request.method)
            route.fulfill(
                status=423,
                headers={"Retry-After": "1", "Tus-Resumable": "1.0.0"},
                content_type="application/problem+json",
                body='{"title": "Locked", "status": 423}',
            )
            return
        route.continue_()

    recording_id = open_upload_page(page, base, runtime)
    page.route(re.compile(r".*/api/v1/uploads/.*"), answer_423_once)
    statuses = reported(page)
    page.evaluate(REPORT_STATUS)
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    assert locked == ["PATCH"]
    assert recording(runtime, recording_id).status == "available"
    assert any(shown.endswith(WAITING) for shown in statuses)
    assert not any("upload-status--error" in shown for shown in statuses)


def test_another_file_replaces_an_unfinished_upload_only_when_asked(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    """After a reload, choosing a different file than the unfinished upload's does not
    continue it; the page offers to discard it, and then sends the new file from the start."""
    wrong = padded_mp4(tmp_path / "vakardienas-stunda.mp4", 6 * MIB)
    right = sample_mp4(tmp_path / "stunda.mp4")
    base = live_server.url
    upload_speed = upload_throttle(page)
    recording_id = open_upload_page(page, base, runtime)
    start_then_pause(page, wrong, upload_speed, 2)

    upload_speed(-1)
    page.reload()
    expect(page.locator('[data-field="offer"]')).to_contain_text("vakardienas-stunda.mp4")
    discard = page.locator('[data-action="discard"]')
    expect(discard).to_be_hidden()
    page.set_input_files('input[type="file"]', str(right))
    expect(page.locator(STATUS)).to_contain_text("atmetiet nepabeigto augšupielādi")
    expect(page.locator('[data-action="resume"]')).to_be_disabled()
    expect(discard).to_be_visible()
    discard.click()
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    row = recording(runtime, recording_id)
    assert row.status == "available" and row.size_bytes == right.stat().st_size
    actions = audit_actions(runtime)
    assert actions.count("upload:created") == 2 and actions.count("upload:terminated") == 1
