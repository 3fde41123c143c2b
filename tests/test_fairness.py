"""No one person or view holds more than a bounded share of a server process: streams,
downloads and upload requests beyond the caps get 429 with Retry-After, and every slot is
given back when its body ends or its client goes away."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from werkzeug.test import TestResponse

from tests.support.recording_support import register, sample_media, store_plaintext
from tests.support.streaming_support import (
    School,
    bearer,
    browser,
    denials,
    issue_order,
    make_school,
)
from tests.support.uploads_support import create_url, patch
from vault.services import accounts, fairness
from vault.services.runtime import Runtime


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime, size=64 * 1024)


def open_stream(client: FlaskClient, url: str) -> TestResponse:
    """A stream whose body has started and is still flowing (not read to its end)."""
    response = client.get(url, buffered=False)
    assert response.status_code == 200
    next(response.iter_encoded())
    return response


def viewer_id(runtime: Runtime, username: str) -> uuid.UUID:
    with runtime.sessions() as session:
        user = accounts.find_user(session, username)
        assert user is not None
        return user.id


def test_one_view_holds_at_most_three_streams_and_gets_each_back(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    flowing = [open_stream(viewer.client, url) for _ in range(fairness.STREAMS_PER_VIEW)]
    refused = viewer.client.get(url)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"
    assert refused.mimetype == "application/problem+json"
    flowing.pop().close()  # the client went away mid-body
    again = viewer.client.get(url)
    assert again.status_code == 200 and again.data == school.plaintext  # read to its end
    for response in flowing:
        response.close()
    assert runtime.slots.held(("streams", viewer_id(runtime, "metodikis"))) == 0


def test_a_refusal_past_the_cap_costs_no_database_query(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """A script asking again and again past its cap must not take the processor time the
    other viewers need: the refusal is decided before the session and the policy."""
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    flowing = [open_stream(viewer.client, url) for _ in range(fairness.STREAMS_PER_VIEW)]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        assert viewer.client.get(url).status_code == 429
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)
    assert statements == []
    for response in flowing:
        response.close()


def test_a_stranger_with_the_url_is_refused_and_takes_no_share(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """The share a request counts against is named by the signed URL, but only the policy
    admits it: anyone else holding the URL is refused 403 (and audited), and gives the slot
    back at once; a URL whose viewer was altered is not a stream URL at all."""
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    stranger = browser(app, school.other)
    assert stranger.client.get(url).status_code == 403
    assert len(denials(runtime, "another_viewer")) == 1
    assert runtime.slots.held(("streams", viewer_id(runtime, "metodikis"))) == 0
    path, token = url.split("?token=")
    payload, rest = token.split(".", 1)
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "AB")
    assert viewer.client.get(f"{path}?token={forged_payload}.{rest}").status_code == 403
    assert viewer.client.get(url).status_code == 200


def test_one_person_holds_at_most_six_streams_over_all_views(
    app: Flask, runtime: Runtime, school: School
) -> None:
    extra = []
    for title in ("Otrā", "Trešā"):
        recording_id = register(runtime, "skolotaja", title=title)
        store_plaintext(runtime, recording_id, sample_media(64 * 1024), chunk_size=16)
        extra.append(recording_id)
    issue_order(runtime, ["metodikis"], extra, "7-2/77")
    viewer = browser(app, school.viewer)
    urls = [viewer.stream_url(rid) for rid in (school.recording_id, *extra)]
    flowing = [open_stream(viewer.client, urls[i // 3]) for i in range(fairness.STREAMS_PER_USER)]
    assert viewer.client.get(urls[2]).status_code == 429
    # Someone else is not affected by this person's share.
    owner = browser(app, school.teacher)
    assert owner.client.get(owner.stream_url(school.recording_id)).status_code == 200
    for response in flowing:
        response.close()
    assert viewer.client.get(urls[2]).status_code == 200


@pytest.mark.usefixtures("verify_passes_finished")
def test_upload_requests_beyond_the_cap_get_429(
    client: FlaskClient, runtime: Runtime, school: School
) -> None:
    token = bearer(runtime, "skolotaja")["Authorization"].removeprefix("Bearer ")
    url = create_url(client, token, register(runtime, "skolotaja"), 4096)
    user = viewer_id(runtime, "skolotaja")
    held = [
        runtime.slots.take({("uploads", user): fairness.UPLOADS_PER_USER})
        for _ in range(fairness.UPLOADS_PER_USER)
    ]
    refused = patch(client, token, url, 0, sample_media(1024))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    held.pop().release()
    assert patch(client, token, url, 0, sample_media(1024)).status_code == 204
    for slot in held:
        slot.release()
    assert runtime.slots.held(("uploads", user)) == 0


def test_a_slot_is_released_once_however_often_it_is_released() -> None:
    slots = fairness.Slots()
    slot = slots.take({"a": 1, "b": 2})
    with pytest.raises(fairness.TooManyAtOnce):
        slots.take({"a": 1})
    slot.release()
    slot.release()
    assert slots.held("a") == 0 and slots.held("b") == 0
    never_started = fairness.HoldingBody(iter([b"x"]), slots.take({"a": 1}))
    never_started.close()
    assert slots.held("a") == 0
