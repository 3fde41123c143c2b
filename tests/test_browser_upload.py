"""The upload page in a real browser: a generated MP4 goes up through tus and becomes available."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import sample_mp4, sign_in_with_the_form
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import register
from vault.models import Recording
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_teacher_uploads_through_the_page(
    page: Page, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    recording_id = register(runtime, "skolotaja")
    video = sample_mp4(tmp_path / "lesson.mp4")
    base = live_server.url

    sign_in_with_the_form(page, base, "skolotaja")
    page.goto(f"{base}/recordings/{recording_id}/upload")
    page.set_input_files('input[type="file"]', str(video))
    page.click('[data-action="start"]')
    page.wait_for_url(f"{base}/recordings/{recording_id}", timeout=60_000)
    expect(page.locator("dl.facts")).to_contain_text("pieejams")
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        assert recording.status == "available"
        assert recording.size_bytes == video.stat().st_size
        assert recording.content_type == "video/mp4"
