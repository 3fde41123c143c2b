"""Debian's ffprobe and ffmpeg as a viewer's client: with the viewer's session cookie they
read the stream URL over HTTP, find the duration, and seek into the middle with a Range
request instead of reading from the start; without the cookie they are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from tests.support.backends import missing_backend
from tests.support.browser import sample_mp4
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import register, store_plaintext
from tests.support.streaming_support import browser, issue_order
from vault.models import ViewRange
from vault.services.runtime import Runtime

pytestmark = pytest.mark.slow

SECONDS = 30


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing_backend(f"{name} (Debian package ffmpeg)")
    return found


def test_ffprobe_and_ffmpeg_play_and_seek_with_the_viewers_cookie(
    app: Flask, live_server: LiveServer, runtime: Runtime, tmp_path: Path
) -> None:
    ffprobe, ffmpeg = tool("ffprobe"), tool("ffmpeg")
    movie = sample_mp4(tmp_path / "lesson.mp4", seconds=SECONDS).read_bytes()
    add_person(runtime, "skolotaja", "teacher")
    viewer = add_person(runtime, "metodikis", "staff")
    add_person(runtime, "direktore", "director")
    recording_id = register(runtime, "skolotaja")
    store_plaintext(runtime, recording_id, movie)
    issue_order(runtime, ["metodikis"], [recording_id], "7-2/40")
    signed_in = browser(app, viewer)
    started = signed_in.start_view(recording_id).get_json()
    url = live_server.url + started["stream_url"]
    cookie = signed_in.client.get_cookie("vault_session")
    assert cookie is not None
    headers = f"Cookie: vault_session={cookie.value}\r\n"

    probed = subprocess.run(
        [ffprobe, "-v", "error", "-headers", headers, "-show_entries", "format=duration",
         "-of", "json", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probed.returncode == 0, probed.stderr
    assert abs(float(json.loads(probed.stdout)["format"]["duration"]) - SECONDS) < 1

    before = ranges_asked(runtime)
    sought = subprocess.run(
        [ffmpeg, "-v", "error", "-headers", headers, "-ss", str(SECONDS - 5), "-i", url,
         "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sought.returncode == 0, sought.stderr
    asked = ranges_asked(runtime)[len(before) :]
    # The seek reached into the file with a range of its own, not by reading from byte 0.
    assert any(first > len(movie) // 2 for first in asked), asked

    refused = subprocess.run(
        [ffprobe, "-v", "error", url], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode != 0 and "403" in refused.stderr


def ranges_asked(runtime: Runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(ViewRange.first).order_by(ViewRange.id)))
