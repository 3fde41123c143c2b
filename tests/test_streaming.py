"""Stream URLs are bound to a view, its viewer and their sign-in session; the policy is
re-checked on every request; every refusal is an audit event."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta

import pytest
import requests
from flask import Flask
from sqlalchemy import select, update

from tests.support.clock import RIGA, TestClock
from tests.support.live_server import LiveServer
from tests.support.people import PASSWORD
from tests.support.streaming_support import (
    Browser,
    School,
    bearer,
    browser,
    denials,
    events,
    make_school,
    revoke_order,
    user_id,
)
from vault import crypto
from vault.app import create_app
from vault.models import Recording, View
from vault.services import calendar
from vault.services.errors import Gone, IntegrityFailure, PermissionDenied
from vault.services.runtime import Runtime
from vault.settings import Settings


@pytest.fixture
def rechecking(settings: Settings, runtime: Runtime) -> Flask:
    """The app re-running the policy before every piece of a long body."""
    changed = dataclasses.replace(settings, stream_recheck_seconds=0)
    return create_app(changed, dataclasses.replace(runtime, settings=changed))


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime)


def test_a_designated_person_starts_a_view_and_streams_the_whole_file(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    started = viewer.start_view(school.recording_id)
    assert started.status_code == 201
    body = started.get_json()
    assert set(body) >= {"view_id", "stream_url", "order"}
    assert body["order"]["id"] == str(school.order_id)
    assert body["order"]["number"] == school.order_number
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["order"]["valid_until"])

    response = viewer.client.get(body["stream_url"])
    assert response.status_code == 200
    assert response.get_data() == school.plaintext
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Content-Length"] == str(len(school.plaintext))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"] == "inline"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["ETag"].startswith('"')

    started_events = events(runtime, "view:started")
    assert len(started_events) == 1
    assert started_events[0].object_id == body["view_id"]
    assert started_events[0].details["order_number"] == school.order_number
    assert started_events[0].details["via"] == "browser"


def test_replayed_from_another_account_gets_403_and_is_audited(
    app: Flask, runtime: Runtime, school: School
) -> None:
    url = browser(app, school.viewer).stream_url(school.recording_id)
    for intruder in (school.other, school.teacher, school.director):
        assert browser(app, intruder).client.get(url).status_code == 403
    refused = denials(runtime, "another_viewer")
    assert len(refused) == 3
    assert {row.actor_id for row in refused} == {
        user_id(runtime, name) for name in ("kolegis", "skolotaja", "direktore")
    }
    assert all(row.recording_id == school.recording_id for row in refused)


def test_replayed_from_another_session_of_the_same_person_gets_403(
    app: Flask, runtime: Runtime, school: School
) -> None:
    first = browser(app, school.viewer)
    url = first.stream_url(school.recording_id)
    second = browser(app, school.viewer)
    assert second.client.get(url, headers={"Range": "bytes=0-9"}).status_code == 403
    assert len(denials(runtime, "another_session")) == 1
    # The session the view belongs to is unaffected.
    assert first.client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206


def test_a_tampered_url_gets_403_and_is_audited(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    other_view_url = viewer.stream_url(school.recording_id)
    path, token = url.split("?token=")
    other_path, other_token = other_view_url.split("?token=")
    # Change the signature's first character (the last one may carry only padding bits).
    cut = token.rindex(".") + 1
    flipped = token[:cut] + ("A" if token[cut] != "A" else "B") + token[cut + 1 :]
    tampered = [
        f"{path}?token={flipped}",
        f"{path}?token={other_token}",  # a valid signature for another view
        f"{other_path}?token={token}",
        path,
        f"{path}?token=",
    ]
    for candidate in tampered:
        assert viewer.client.get(candidate).status_code == 403, candidate
    assert len(denials(runtime, "stream_url_invalid")) == len(tampered)
    assert viewer.client.get(url).status_code == 200


def test_after_revocation_the_very_next_range_request_gets_403(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    first = viewer.client.get(url, headers={"Range": "bytes=0-15"})
    assert first.status_code == 206
    assert first.get_data() == school.plaintext[:16]
    revoke_order(runtime, school.order_id)
    assert viewer.client.get(url, headers={"Range": "bytes=16-31"}).status_code == 403
    refused = denials(runtime, "order_not_valid")
    assert len(refused) == 1 and refused[0].details["action"] == "stream"
    # The view ended with its grounds, and was summarised once.
    ended = events(runtime, "view:ended")
    assert len(ended) == 1 and ended[0].details["reason"] == "access_withdrawn"
    assert ended[0].details["served_bytes"] == [[0, 16]]
    # A new view is refused too.
    assert viewer.start_view(school.recording_id).status_code == 403


def test_after_sign_out_the_url_gets_403_even_with_the_old_cookie(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    cookie = viewer.client.get_cookie("vault_session")
    assert cookie is not None
    viewer.sign_out()
    assert viewer.client.get(url).status_code == 403
    replay = app.test_client()
    replay.set_cookie("vault_session", cookie.value)
    assert replay.get(url, headers={"Range": "bytes=0-1"}).status_code == 403
    refused = denials(runtime, "no_session")
    assert len(refused) == 2
    assert all(row.recording_id == school.recording_id for row in refused)


def test_signing_in_again_does_not_revive_the_old_url(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    viewer.sign_out()
    again = browser(app, school.viewer)
    assert again.client.get(url).status_code == 403
    assert len(denials(runtime, "another_session")) == 1


def test_a_non_owner_with_an_api_token_gets_403_and_the_owner_may(
    app: Flask, runtime: Runtime, school: School
) -> None:
    client = app.test_client()
    refused = client.post(
        f"/api/v1/recordings/{school.recording_id}/views?lang=en",
        headers=bearer(runtime, "metodikis"),
    )
    assert refused.status_code == 403
    assert refused.mimetype == "application/problem+json"
    assert "browser" in refused.get_json()["detail"]
    assert len(denials(runtime, "browser_session_required")) == 1

    owner_token = bearer(runtime, "skolotaja")
    started = client.post(f"/api/v1/recordings/{school.recording_id}/views", headers=owner_token)
    assert started.status_code == 201
    body = started.get_json()
    assert body["order"] is None
    assert client.get(body["stream_url"], headers=owner_token).get_data() == school.plaintext
    # The token view is bound to the token's owner: a bare request is refused.
    assert client.get(body["stream_url"]).status_code == 403
    # And the owner's browser session is another binding than the token.
    assert browser(app, school.teacher).client.get(body["stream_url"]).status_code == 403
    assert events(runtime, "view:started")[0].details["via"] == "token"


def test_people_without_an_order_get_403_for_views_and_the_watch_page(
    app: Flask, runtime: Runtime, school: School
) -> None:
    for person in (school.other, school.director, school.auditor):
        intruder = browser(app, person)
        assert intruder.start_view(school.recording_id).status_code == 403
        page = intruder.client.get(f"/recordings/{school.recording_id}/watch")
        assert page.status_code == 403
        assert page.mimetype == "text/html"
    assert len(denials(runtime)) == 6


def test_the_watch_link_is_offered_only_to_those_the_policy_allows(
    app: Flask, school: School
) -> None:
    watch = f"/recordings/{school.recording_id}/watch"
    accesses = f"/recordings/{school.recording_id}/accesses"
    for person, can_watch, can_list in (
        (school.viewer, True, False),
        (school.teacher, True, True),
        (school.director, False, False),
        (school.auditor, False, True),
    ):
        page = browser(app, person).client.get(f"/recordings/{school.recording_id}")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert (watch in html) is can_watch
        assert (accesses in html) is can_list


def test_the_watch_page_gives_non_owners_no_download_control(app: Flask, school: School) -> None:
    page = browser(app, school.viewer).client.get(f"/recordings/{school.recording_id}/watch")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'controlslist="nodownload' in html
    assert "disablepictureinpicture" in html
    assert "watch.js" in html
    assert f'data-order-number="{school.order_number}"' in html
    assert 'data-viewer="Jānis Kalniņš"' in html
    assert "oncontextmenu" not in html and "<script>" not in html
    own = browser(app, school.teacher).client.get(f"/recordings/{school.recording_id}/watch")
    assert "nodownload" not in own.get_data(as_text=True)


def test_deletion_and_shredding_answer_410(app: Flask, runtime: Runtime, school: School) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, school.recording_id)
        assert recording is not None
        runtime.keyring.destroy_year_key(session, recording.school_year, runtime.clock())
    # The year key is gone: no key outlives a shred, even for a view already open.
    assert viewer.client.get(url, headers={"Range": "bytes=0-1"}).status_code == 410

    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == school.recording_id).values(status="deleted")
        )
    assert viewer.client.get(url).status_code == 410
    assert viewer.start_view(school.recording_id).status_code == 410
    # Someone the live recording would not have admitted learns nothing.
    assert browser(app, school.other).start_view(school.recording_id).status_code == 403


def test_a_restricted_recording_cannot_be_streamed(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == school.recording_id).values(status="restricted")
        )
    assert viewer.client.get(url).status_code == 403
    assert browser(app, school.teacher).start_view(school.recording_id).status_code == 403
    assert len(denials(runtime, "restricted")) == 2


def collect(pieces: Iterable[bytes], into: list[bytes]) -> None:
    for piece in pieces:
        into.append(piece)


def stopped_mid_body(
    reader: Browser,
    path: str,
    school: School,
    stop: Callable[[], object],
    error: type[Exception],
) -> None:
    """A long body is under way when ``stop`` happens; the rest of it is refused with
    ``error`` (the app re-checks before every piece)."""
    response = reader.client.get(path, buffered=False)
    assert response.status_code == 200
    pieces = response.iter_encoded()
    assert school.plaintext.startswith(next(pieces))
    stop()
    with pytest.raises(error):
        collect(pieces, [])
    response.close()


def backdate(runtime: Runtime, view_id: str, *, started: timedelta, heartbeat: timedelta) -> None:
    now = runtime.clock()
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(View)
            .where(View.id == uuid.UUID(view_id))
            .values(started_at=now - started, last_heartbeat_at=now - heartbeat)
        )


def test_heartbeats_keep_one_url_alive_for_a_whole_lesson_and_it_ends_without(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    body = viewer.start_view(school.recording_id).get_json()
    url, view_id = body["stream_url"], body["view_id"]
    heartbeat = body["heartbeat_url"]
    # Ninety minutes into the lesson, the last heartbeat 14 minutes ago: still alive.
    backdate(runtime, view_id, started=timedelta(minutes=90), heartbeat=timedelta(minutes=14))
    beat = viewer.post_json(heartbeat, {"played": [[0, 5400]], "duration": 5400})
    assert beat.status_code == 200
    resumed = viewer.client.get(url, headers={"Range": "bytes=100-"})
    assert resumed.status_code == 206
    assert resumed.get_data() == school.plaintext[100:]
    # Sixteen minutes without a heartbeat: the same URL is refused, the view is over.
    backdate(runtime, view_id, started=timedelta(minutes=106), heartbeat=timedelta(minutes=16))
    assert viewer.client.get(url, headers={"Range": "bytes=100-"}).status_code == 403
    assert viewer.post_json(heartbeat, {"played": []}).status_code == 403
    assert len(denials(runtime, "view_ended")) == 2
    ended = events(runtime, "view:ended")
    assert len(ended) == 1
    assert ended[0].details["reason"] == "idle"
    assert ended[0].details["played_reported_seconds"] == [[0, 5400]]
    assert ended[0].details["served_bytes"] == [[100, 200]]


def test_a_heartbeat_is_the_viewers_own_and_checks_its_report(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    heartbeat = viewer.start_view(school.recording_id).get_json()["heartbeat_url"]
    assert browser(app, school.other).post_json(heartbeat, {}).status_code == 403
    assert browser(app, school.viewer).post_json(heartbeat, {}).status_code == 403
    for bad in ({"played": [[5, 1]]}, {"played": "all"}, {"played": [[0, "x"]]}, {"duration": -1}):
        answer = viewer.post_json(heartbeat, bad)
        assert answer.status_code == 422, bad
    assert viewer.client.post(heartbeat, json={}).status_code == 400  # no CSRF token
    ok = viewer.post_json(heartbeat, {"played": [[0, 1.5], [1, 3]], "duration": 20})
    assert ok.status_code == 200
    assert {"expires_at", "heartbeat_seconds"} <= set(ok.get_json())


def test_closing_the_page_ends_the_view_at_once(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    body, played = viewer.start_watching(school.recording_id, 50)
    assert played.status_code == 206
    assert played.get_data() == school.plaintext[:50]
    assert viewer.post_json(body["end_url"], {"played": [[0, 2]]}).status_code == 204
    assert viewer.post_json(body["end_url"], {}).status_code == 204  # idempotent
    assert viewer.client.get(body["stream_url"]).status_code == 403
    ended = events(runtime, "view:ended")
    assert len(ended) == 1
    assert ended[0].details["reason"] == "closed"
    assert ended[0].details["served_bytes"] == [[0, 50]]
    assert ended[0].details["played_reported_seconds"] == [[0, 2]]


def test_a_long_body_stops_when_the_order_is_revoked_mid_stream(
    rechecking: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(rechecking, school.viewer)
    url = viewer.stream_url(school.recording_id)
    stopped_mid_body(
        viewer, url, school, lambda: revoke_order(runtime, school.order_id), PermissionDenied
    )
    assert len(denials(runtime, "order_not_valid")) == 1


def test_a_long_body_stops_when_the_viewer_signs_out_mid_stream(
    rechecking: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(rechecking, school.viewer)
    url = viewer.stream_url(school.recording_id)
    stopped_mid_body(viewer, url, school, viewer.sign_out, PermissionDenied)
    assert len(denials(runtime, "session_ended")) == 1
    ended = events(runtime, "view:ended")
    assert len(ended) == 1 and ended[0].details["reason"] == "session_ended"


def test_a_tampered_chunk_aborts_the_connection_after_the_verified_bytes(
    app: Flask, runtime: Runtime, school: School, live_server: LiveServer
) -> None:
    with runtime.sessions() as session:
        recording = session.scalars(
            select(Recording).where(Recording.id == school.recording_id)
        ).one()
        key = recording.object_key
    assert key is not None
    ciphertext = bytearray(b"".join(runtime.store.read_range(key)))
    # Flip one bit inside the 6th chunk (16-byte chunks, 16-byte tags, after the header).
    ciphertext[crypto.HEADER_SIZE + 5 * 32 + 3] ^= 0x01
    runtime.store.put(key, bytes(ciphertext), runtime.store.get_tags(key))

    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    # In-process: the body raises instead of yielding unverified bytes.
    response = viewer.client.get(url, buffered=False)
    received: list[bytes] = []
    with pytest.raises(IntegrityFailure):
        collect(response.iter_encoded(), received)
    response.close()
    assert b"".join(received) == school.plaintext[:80]

    # Over HTTP: the server cuts the connection short of the announced length.
    http = requests.Session()
    base = live_server.url
    csrf = re.compile(r'name="csrf-token" content="([^"]+)"')
    token = csrf.search(http.get(f"{base}/login").text)
    assert token is not None
    http.post(
        f"{base}/login",
        data={"username": "metodikis", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    token = csrf.search(http.get(f"{base}/account").text)  # a new token after sign-in
    assert token is not None
    started = http.post(
        f"{base}/api/v1/recordings/{school.recording_id}/views",
        headers={"X-CSRF-Token": token.group(1)},
    )
    assert started.status_code == 201
    streamed = http.get(base + started.json()["stream_url"], stream=True)
    assert streamed.status_code == 200
    assert streamed.headers["Content-Length"] == str(len(school.plaintext))
    with pytest.raises(requests.exceptions.RequestException):
        b"".join(streamed.iter_content(64))


def destroy_year_key(runtime: Runtime, recording_id: uuid.UUID) -> None:
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        assert recording is not None
        runtime.keyring.destroy_year_key(session, recording.school_year, runtime.clock())


def test_a_long_body_stops_when_the_year_key_is_destroyed_mid_stream(
    rechecking: Flask, runtime: Runtime, school: School
) -> None:
    """The data key is already in memory: only the re-check can stop the body."""
    viewer = browser(rechecking, school.viewer)
    url = viewer.stream_url(school.recording_id)
    stopped_mid_body(
        viewer, url, school, lambda: destroy_year_key(runtime, school.recording_id), Gone
    )
    assert len(denials(runtime, "gone")) == 1


def test_an_owners_download_stops_when_the_year_key_is_destroyed(
    rechecking: Flask, runtime: Runtime, school: School
) -> None:
    owner = browser(rechecking, school.teacher)
    download = f"/api/v1/recordings/{school.recording_id}/download"
    stopped_mid_body(
        owner, download, school, lambda: destroy_year_key(runtime, school.recording_id), Gone
    )


def test_no_view_or_download_past_a_shortened_retention(
    app: Flask, runtime: Runtime, school: School, clock: TestClock
) -> None:
    """The last school day moved earlier after the order was issued (to tomorrow, the
    earliest the calendar takes): the order still runs, the recording's retention does not."""
    viewer = browser(app, school.viewer)
    assert viewer.start_view(school.recording_id).status_code == 201
    with runtime.sessions() as session:
        recording = session.get(Recording, school.recording_id)
        assert recording is not None
        year = recording.school_year
    tomorrow = clock().astimezone(RIGA).date() + timedelta(days=1)
    calendar.set_last_day_as_operator(
        runtime, calendar.LastDayChange(year, tomorrow, confirmed=True)
    )
    clock.set(datetime.combine(tomorrow + timedelta(days=1), time(9), tzinfo=RIGA))
    viewer = browser(app, school.viewer)
    assert viewer.start_view(school.recording_id).status_code == 403
    owner = browser(app, school.teacher)
    download = f"/api/v1/recordings/{school.recording_id}/download"
    assert owner.client.get(download).status_code == 403
    assert [e.details["action"] for e in denials(runtime, "retention_ended")] == [
        "start_view",
        "download",
    ]
