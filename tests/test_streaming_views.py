"""Views over time (heartbeats, idle end, lifetime), watched intervals, the audited summary,
the fetched-fast flag, and the owner's "Who accessed"."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from tests.support.clock import RIGA
from tests.support.streaming_support import (
    School,
    browser,
    denials,
    events,
    make_school,
    user_id,
)
from vault.models import LoginSession, Recording, User, View
from vault.services import streaming, viewing_log
from vault.services.actors import Actor, Channel
from vault.services.errors import PermissionDenied, ValidationFailed
from vault.services.ranges import RangePlan
from vault.services.runtime import Runtime
from vault.services.viewing_log import PlayerReport


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime)


def caller_for(
    runtime: Runtime,
    username: str,
    login_session: str | None = "session-1",
    created: datetime | None = None,
) -> Actor:
    """The user, signed in through ``login_session`` (a server-side session row)."""
    at = created or runtime.clock()
    with runtime.sessions() as session, session.begin():
        user = session.scalars(select(User).where(User.username == username)).one()
        if login_session is not None and session.get(LoginSession, login_session) is None:
            session.add(
                LoginSession(id=login_session, user_id=user.id, created_at=at, last_seen_at=at)
            )
        via = Channel.API_TOKEN if login_session is None else Channel.BROWSER
        return Actor(user.id, user.roles, via, login_session)


def touch(runtime: Runtime, caller: Actor, at: datetime) -> None:
    """What reading the session cookie does on each request: the session was seen ``at``."""
    if caller.login_session_id is None:
        return
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(LoginSession)
            .where(LoginSession.id == caller.login_session_id)
            .values(last_seen_at=at)
        )


def start(runtime: Runtime, caller: Actor, recording_id: uuid.UUID, at: datetime) -> uuid.UUID:
    touch(runtime, caller, at)
    with runtime.sessions() as session:
        return streaming.start_view(session, caller, recording_id, at, RIGA).view.id


def check(runtime: Runtime, caller: Actor, view_id: uuid.UUID, at: datetime) -> None:
    touch(runtime, caller, at)
    with runtime.sessions() as session:
        streaming.check_stream(session, caller, view_id, at, RIGA)


def beat(
    runtime: Runtime,
    caller: Actor,
    view_id: uuid.UUID,
    at: datetime,
    report: PlayerReport | None = None,
) -> None:
    touch(runtime, caller, at)
    with runtime.sessions() as session:
        streaming.heartbeat(session, caller, view_id, report or PlayerReport(), at, RIGA)


def serve(
    runtime: Runtime,
    view_id: uuid.UUID,
    first: int,
    end: int,
    at: datetime,
    sent: int | None = None,
) -> None:
    with runtime.sessions() as session:
        row = viewing_log.record_request(session, view_id, RangePlan(206, first, end, 0), at)
    viewing_log.record_sent(
        runtime.sessions, row, end - first if sent is None else sent, at, finished=True
    )


def test_heartbeats_carry_one_view_through_a_90_minute_lesson(
    runtime: Runtime, school: School
) -> None:
    viewer = caller_for(runtime, "metodikis")
    t0 = runtime.clock()
    view_id = start(runtime, viewer, school.recording_id, t0)
    for minute in range(10, 91, 10):
        beat(runtime, viewer, view_id, t0 + timedelta(minutes=minute))
        check(runtime, viewer, view_id, t0 + timedelta(minutes=minute, seconds=30))
    # Fourteen minutes after the last heartbeat: still alive; sixteen: over, for good.
    check(runtime, viewer, view_id, t0 + timedelta(minutes=104))
    with pytest.raises(PermissionDenied):
        check(runtime, viewer, view_id, t0 + timedelta(minutes=106))
    with pytest.raises(PermissionDenied):
        beat(runtime, viewer, view_id, t0 + timedelta(minutes=107))
    ended = events(runtime, "view:ended")
    assert len(ended) == 1
    assert ended[0].details["reason"] == "idle"
    assert ended[0].details["ended_at"] == (t0 + timedelta(minutes=105)).isoformat()
    assert len(denials(runtime, "view_ended")) == 2


def test_no_view_outlives_the_longest_sign_in_session(runtime: Runtime, school: School) -> None:
    # From the school's morning on: twelve hours later is still the order's school day.
    t0 = runtime.clock()
    viewer = caller_for(runtime, "metodikis", created=t0)
    view_id = start(runtime, viewer, school.recording_id, t0)
    at = t0
    while at < t0 + streaming.VIEW_MAX_LIFETIME - timedelta(minutes=10):
        at += timedelta(minutes=10)
        beat(runtime, viewer, view_id, at)
    with pytest.raises(PermissionDenied):
        check(runtime, viewer, view_id, t0 + streaming.VIEW_MAX_LIFETIME + timedelta(seconds=1))
    assert events(runtime, "view:ended")[0].details["reason"] == "lifetime"


def test_the_binding_is_checked_before_anything_else(runtime: Runtime, school: School) -> None:
    viewer = caller_for(runtime, "metodikis")
    now = runtime.clock()
    view_id = start(runtime, viewer, school.recording_id, now)
    for intruder, reason in [
        (caller_for(runtime, "kolegis"), "another_viewer"),
        (caller_for(runtime, "metodikis", "session-2"), "another_session"),
        (caller_for(runtime, "metodikis", None), "another_session"),
        (Actor.anonymous(None), "no_session"),
    ]:
        with pytest.raises(PermissionDenied), runtime.sessions() as session:
            streaming.check_stream(session, intruder, view_id, now, RIGA)
        assert len(denials(runtime, reason)) >= 1
    with pytest.raises(PermissionDenied), runtime.sessions() as session:
        streaming.check_stream(session, viewer, uuid.uuid4(), now, RIGA)
    assert len(denials(runtime, "unknown_view")) == 1
    check(runtime, viewer, view_id, now)


def test_the_sweep_ends_and_summarises_lapsed_views_once(runtime: Runtime, school: School) -> None:
    viewer = caller_for(runtime, "metodikis")
    t0 = runtime.clock()
    lapsed = start(runtime, viewer, school.recording_id, t0 - timedelta(minutes=20))
    with runtime.sessions() as session:
        assert streaming.end_idle_views(session, t0) == 1
        assert streaming.end_idle_views(session, t0) == 0
    live = start(runtime, viewer, school.recording_id, t0)
    with runtime.sessions() as session:
        assert session.get(View, lapsed).ended_at is not None  # type: ignore[union-attr]
        assert session.get(View, live).ended_at is None  # type: ignore[union-attr]
    assert [e.object_id for e in events(runtime, "view:ended")] == [str(lapsed)]


def test_watched_intervals_merge_served_bytes_and_reported_seconds(
    runtime: Runtime, school: School
) -> None:
    viewer = caller_for(runtime, "metodikis")
    t0 = runtime.clock()
    view_id = start(runtime, viewer, school.recording_id, t0)
    serve(runtime, view_id, 0, 200, t0, sent=64)  # an open request the player abandoned
    serve(runtime, view_id, 50, 80, t0)
    serve(runtime, view_id, 150, 200, t0)
    serve(runtime, view_id, 190, 200, t0)
    beat(runtime, viewer, view_id, t0 + timedelta(minutes=1), PlayerReport(((0, 4.5), (10, 12))))
    beat(
        runtime,
        viewer,
        view_id,
        t0 + timedelta(minutes=2),
        PlayerReport(((0, 6.04), (11, 15), (30, 30)), duration=20.0),
    )
    with runtime.sessions() as session:
        streaming.end_view(
            session, viewer, view_id, PlayerReport(((19, 20),)), t0 + timedelta(minutes=3)
        )
    summary = events(runtime, "view:ended")[0].details
    assert summary["served_bytes"] == [[0, 80], [150, 200]]
    assert summary["played_reported_seconds"] == [[0, 6.0], [10, 15], [19, 20]]
    assert summary["duration_reported_seconds"] == 20.0
    assert summary["requests"] == 4
    assert summary["bytes_sent"] == 64 + 30 + 50 + 10
    assert summary["order_id"] == str(school.order_id)
    assert summary["reason"] == "closed"
    assert summary["fetched_fast"] is False


def test_fetching_a_large_file_much_faster_than_it_plays_is_flagged(
    runtime: Runtime, school: School
) -> None:
    size = 200 * 1024 * 1024
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == school.recording_id).values(size_bytes=size)
        )
    t0 = runtime.clock()
    viewer = caller_for(runtime, "metodikis", created=t0)

    def view_that(report: PlayerReport, fetch_seconds: float, share: float) -> bool:
        view_id = start(runtime, viewer, school.recording_id, t0)
        for step in range(int(fetch_seconds // 600) + 1):
            beat(runtime, viewer, view_id, t0 + timedelta(seconds=step * 600), report)
        serve(runtime, view_id, 0, int(size * share), t0 + timedelta(seconds=fetch_seconds))
        with runtime.sessions() as session:
            view = streaming.end_view(
                session, viewer, view_id, report, t0 + timedelta(seconds=fetch_seconds + 1)
            )
            return view.fetched_fast

    hour = PlayerReport(((0, 60.0),), duration=3600.0)
    assert view_that(hour, fetch_seconds=30, share=0.95) is True
    assert view_that(PlayerReport(), fetch_seconds=3000, share=1.0) is True  # never played
    assert view_that(hour, fetch_seconds=3000, share=1.0) is False  # fetched while playing
    assert view_that(hour, fetch_seconds=30, share=0.5) is False  # half of it only
    flags = [e.details["fetched_fast"] for e in events(runtime, "view:ended")]
    assert flags == [True, True, False, False]


def test_player_reports_are_validated() -> None:
    assert viewing_log.parse_report(None) == PlayerReport()
    assert viewing_log.parse_report({"played": [[0, 1]], "duration": 3}) == PlayerReport(
        ((0.0, 1.0),), 3.0
    )
    bad: object
    for bad in (
        [],
        {"played": [[1, 0]]},
        {"played": [[0, 1, 2]]},
        {"played": [[True, 2]]},
        {"played": [[0, float("inf")]]},
        {"played": [[0, 1]] * 501},
        {"duration": "long"},
        {"duration": -5},
    ):
        with pytest.raises(ValidationFailed):
            viewing_log.parse_report(bad)


def test_intervals_merge_when_they_overlap_or_touch() -> None:
    assert viewing_log.merge_intervals([(5, 9), (0, 2), (2, 3), (8, 12), (20, 20)]) == [
        (0, 3),
        (5, 12),
    ]
    assert viewing_log.merge_intervals([]) == []


def test_who_accessed_is_for_the_owner_and_the_auditor(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    body, response = viewer.start_watching(school.recording_id, 100)
    assert response.get_data() == school.plaintext[:100]
    viewer.post_json(body["heartbeat_url"], {"played": [[0, 3.25]], "duration": 20})
    path = f"/api/v1/recordings/{school.recording_id}/accesses"
    for person in (school.teacher, school.auditor):
        listed = browser(app, person).client.get(path)
        assert listed.status_code == 200
        (entry,) = listed.get_json()["accesses"]
        assert entry["viewer"] == {"username": "metodikis", "name": "Jānis Kalniņš"}
        assert entry["order"]["number"] == school.order_number
        assert entry["served_bytes"] == [[0, 100]]
        assert entry["played_reported_seconds"] == [[0, 3.2]]
        assert entry["via"] == "browser"
        assert entry["ended_at"] is None
    for person in (school.viewer, school.other, school.director):
        assert browser(app, person).client.get(path).status_code == 403
    assert len(denials(runtime, "not_permitted")) == 3

    page = browser(app, school.teacher).client.get(
        f"/recordings/{school.recording_id}/accesses?lang=en"
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Jānis Kalniņš (metodikis)" in html
    assert f"No. {school.order_number}" in html
    assert "0.0–50.0 %" in html and "0:00–0:03" in html


def test_who_accessed_outlives_the_recording(app: Flask, runtime: Runtime, school: School) -> None:
    viewer = browser(app, school.viewer)
    viewer.stream_url(school.recording_id)
    owner = browser(app, school.teacher)
    assert owner.delete(f"/api/v1/recordings/{school.recording_id}").status_code == 204
    listed = owner.client.get(f"/api/v1/recordings/{school.recording_id}/accesses")
    assert listed.status_code == 200
    assert len(listed.get_json()["accesses"]) == 1
    assert user_id(runtime, "metodikis")
