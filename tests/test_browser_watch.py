"""The watch page in Debian's Chromium: a designated person plays a recording, seeks to 90 %
and plays on; the watermark names them and the order; heartbeats keep one stream URL alive
past the idle timeout and it stops without them; anyone else gets the 403 page."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.browser import sample_mp4, sign_in_with_the_form
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import register, store_plaintext
from tests.support.streaming_support import events, issue_order
from vault.services.runtime import Runtime
from vault.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Shortened from 15 minutes so the test can outlast it several times over.
IDLE_SECONDS = 4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, view_idle_timeout_seconds=IDLE_SECONDS)


ORDER_NUMBER = "1-12/45"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def current_time(page: Page) -> float:
    value = page.evaluate("document.querySelector('video').currentTime")
    return float(value)


def stream_status(page: Page, url: str) -> int:
    status = page.evaluate(
        "async (url) => (await fetch(url, {headers: {Range: 'bytes=0-99'}})).status", url
    )
    return int(status)


def test_a_designated_person_watches_with_the_watermark_and_heartbeats(
    app: Flask,
    runtime: Runtime,
    live_server: LiveServer,
    page: Page,
    chromium: Browser,
    tmp_path: Path,
) -> None:
    add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    add_person(runtime, "kolegis", "teacher", name="Edgars Vītols")
    add_person(runtime, "direktore", "director", name="Ilze Ozola")
    recording_id = register(runtime, "skolotaja")
    video_file = sample_mp4(tmp_path / "lesson.mp4", seconds=20)
    store_plaintext(runtime, recording_id, video_file.read_bytes())
    issue_order(runtime, ["metodikis"], [recording_id], ORDER_NUMBER)
    base = live_server.url
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    sign_in_with_the_form(page, base, "metodikis")
    page.goto(f"{base}/recordings/{recording_id}/watch")
    watch = page.locator("#watch")
    expect(watch).to_have_attribute("data-state", "playing", timeout=15_000)
    started = time.monotonic()
    stream_url = str(page.evaluate("document.querySelector('video').src"))
    assert "/api/v1/views/" in stream_url and "token=" in stream_url

    # It plays: currentTime advances.
    page.evaluate("document.querySelector('video').play()")
    wait_for(lambda: current_time(page) > 1.0, 20, "playback to start")
    duration = float(page.evaluate("document.querySelector('video').duration"))
    assert 19 < duration < 21

    # The watermark is over the picture, names the viewer and the order, and moves.
    mark = page.locator(".watch__mark")
    expect(mark).to_be_visible()
    expect(mark).to_contain_text("Jānis Kalniņš")
    expect(mark).to_contain_text(ORDER_NUMBER)
    expect(page.locator(".watch__mark-time")).to_have_text(
        re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
    )
    first_box = mark.bounding_box()
    screenshot = tmp_path / "watch.png"
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    wait_for(lambda: mark.bounding_box() != first_box, 10, "the watermark to move")
    video_box = page.locator("video").bounding_box()
    box = mark.bounding_box()
    assert video_box is not None and box is not None
    assert (
        video_box["x"] <= box["x"]
        and box["x"] + box["width"] <= video_box["x"] + video_box["width"] + 1
    )

    # No download control and no context menu for a designated person.
    assert page.get_attribute("video", "controlslist") == "nodownload nofullscreen noremoteplayback"
    prevented = page.evaluate(
        """() => {
            const event = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});
            return !document.querySelector('video').dispatchEvent(event);
        }"""
    )
    assert prevented is True

    # Seek to 90 % and play on.
    page.evaluate("(t) => { document.querySelector('video').currentTime = t; }", duration * 0.9)
    wait_for(lambda: current_time(page) > duration * 0.9 + 0.5, 20, "playback after the seek")

    # Heartbeats keep the same URL working well past the idle timeout.
    wait_for(
        lambda: time.monotonic() - started > 3 * IDLE_SECONDS, 4 * IDLE_SECONDS, "time to pass"
    )
    assert stream_status(page, stream_url) == 206
    assert events(runtime, "view:ended") == []

    # Without heartbeats the view ends, and the same URL is refused.
    def drop(route: Route) -> None:
        route.abort()

    page.route("**/heartbeat", drop)
    time.sleep(IDLE_SECONDS + 2)
    assert stream_status(page, stream_url) == 403
    ended = events(runtime, "view:ended")
    assert len(ended) == 1 and ended[0].details["reason"] == "idle"
    assert ended[0].details["played_reported_seconds"]
    assert not [text for text in console if "Content Security Policy" in text]

    # Someone the order does not name gets the 403 page.
    context = chromium.new_context(locale="lv-LV")
    other = context.new_page()
    try:
        sign_in_with_the_form(other, base, "kolegis")
        answer = other.goto(f"{base}/recordings/{recording_id}/watch")
        assert answer is not None and answer.status == 403
        expect(other.locator("main")).to_contain_text("403")
        expect(other.locator("video")).to_have_count(0)
    finally:
        context.close()


PICTURE_BOX = """() => {
    // Where a video element shows its picture: its box, less the bands that keep the aspect.
    const video = document.querySelector('video');
    const box = video.getBoundingClientRect();
    const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
    const width = video.videoWidth * scale, height = video.videoHeight * scale;
    return {x: box.left + (box.width - width) / 2, y: box.top + (box.height - height) / 2,
            width: width, height: height, boxWidth: box.width, boxHeight: box.height};
}"""


def assert_mark_stays_on_the_picture(page: Page, seconds: float) -> None:
    """Sample the watermark while it moves (its path joins points inside the picture, so it is
    inside at every instant) and check that it never leaves the picture for the bands."""
    # The mark moves every 4 s (MOVE_EVERY_MS in watch.js): only a longer sample sees it move.
    assert seconds > 4
    picture = page.evaluate(PICTURE_BOX)
    # The bands are wide here, so a mark placed over the whole video box would land in them.
    assert picture["width"] < picture["boxWidth"] - 200, picture
    mark = page.locator(".watch__mark")
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        box = mark.bounding_box()
        assert box is not None
        assert picture["x"] - 1 <= box["x"], (box, picture)
        assert box["x"] + box["width"] <= picture["x"] + picture["width"] + 1, (box, picture)
        assert picture["y"] - 1 <= box["y"], (box, picture)
        assert box["y"] + box["height"] <= picture["y"] + picture["height"] + 1, (box, picture)
        seen.add((round(box["x"]), round(box["y"])))
        time.sleep(0.3)
    assert len(seen) > 1, "the watermark did not move"


def fullscreen_element(page: Page) -> str | None:
    found = page.evaluate("document.fullscreenElement && document.fullscreenElement.className")
    return None if found is None else str(found)


def test_the_watermark_stays_on_the_picture_in_full_screen(
    runtime: Runtime, live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    add_person(runtime, "direktore", "director", name="Ilze Ozola")
    recording_id = register(runtime, "skolotaja")
    # A 4:3 picture on a wide, low screen: black bands left and right of it.
    store_plaintext(runtime, recording_id, sample_mp4(tmp_path / "lesson.mp4").read_bytes())
    issue_order(runtime, ["metodikis"], [recording_id], ORDER_NUMBER)
    page.set_viewport_size({"width": 1280, "height": 500})
    base = live_server.url

    sign_in_with_the_form(page, base, "metodikis")
    page.goto(f"{base}/recordings/{recording_id}/watch")
    expect(page.locator("#watch")).to_have_attribute("data-state", "playing", timeout=15_000)
    wait_for(
        lambda: bool(page.evaluate("document.querySelector('video').videoWidth > 0")),
        15,
        "the video's size",
    )
    # The player's own full-screen control would show the video without the mark.
    assert "nofullscreen" in str(page.get_attribute("video", "controlslist"))

    # The page's button: the whole stage, mark included, fills the screen.
    page.locator('[data-action="fullscreen"]').click()
    wait_for(lambda: fullscreen_element(page) == "watch__stage", 5, "full screen")
    assert page.evaluate(
        "document.fullscreenElement.contains(document.querySelector('.watch__mark'))"
    )
    assert page.evaluate(PICTURE_BOX)["boxWidth"] == 1280
    assert_mark_stays_on_the_picture(page, 6)

    # Back in the page, where the height limit leaves bands as well.
    page.evaluate("document.exitFullscreen()")
    wait_for(lambda: fullscreen_element(page) is None, 5, "the end of full screen")
    assert_mark_stays_on_the_picture(page, 5)

    # A double click on the picture takes the stage to full screen too, not the video alone.
    page.dblclick("video")
    wait_for(lambda: fullscreen_element(page) == "watch__stage", 5, "full screen")
    assert_mark_stays_on_the_picture(page, 5)
