"""Refused requests from nobody signed in cannot flood the audit log: per address, ten a
minute are recorded one by one, the rest become one counted event per minute, and past sixty
a minute the address gets 429."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from tests.support.clock import TestClock
from tests.support.streaming_support import browser, make_school
from vault.models import AuditEvent, AuditEventContext
from vault.services import audit, lifecycle
from vault.services.runtime import Runtime

FORGED = {"Authorization": "Bearer rv_" + "A" * 43}


def events_of(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def address_of(runtime: Runtime, event: AuditEvent) -> str | None:
    with runtime.sessions() as session:
        kept = session.get(AuditEventContext, event.id)
        return kept.ip_address if kept else None


def test_forged_tokens_are_counted_then_refused_per_address(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    clock.set(clock().replace(second=0))
    attacker = app.test_client()
    statuses = [
        attacker.get(
            "/api/v1/me", headers=FORGED, environ_base={"REMOTE_ADDR": "203.0.113.7"}
        ).status_code
        for _ in range(audit.DENIALS_PER_MINUTE + 5)
    ]
    assert statuses[: audit.DENIALS_PER_MINUTE] == [401] * audit.DENIALS_PER_MINUTE
    assert statuses[audit.DENIALS_PER_MINUTE :] == [429] * 5
    limited = attacker.get(
        "/api/v1/me", headers=FORGED, environ_base={"REMOTE_ADDR": "203.0.113.7"}
    )
    assert limited.headers["Retry-After"] == "60"
    assert len(events_of(runtime, "auth:token_rejected")) == audit.DENIALS_RECORDED_ONE_BY_ONE
    # Someone else, from another address, is neither counted with them nor refused.
    other = app.test_client().get(
        "/api/v1/me", headers=FORGED, environ_base={"REMOTE_ADDR": "198.51.100.1"}
    )
    assert other.status_code == 401

    # A minute on, the address starts afresh and its last minute becomes one counted event.
    clock.advance(timedelta(minutes=1))
    again = attacker.get("/api/v1/me", headers=FORGED, environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert again.status_code == 401
    (repeated,) = events_of(runtime, "access:denied_repeated")
    sent = audit.DENIALS_PER_MINUTE + 6
    assert repeated.details["repeats"] == sent - audit.DENIALS_RECORDED_ONE_BY_ONE
    assert "203.0.113.7" not in str(repeated.details)  # the address sits in the erasable table
    assert address_of(runtime, repeated) == "203.0.113.7"


def test_forged_stream_urls_and_forms_are_counted_and_the_lifecycle_run_records_them(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    clock.set(clock().replace(second=0))
    school = make_school(runtime)
    url = browser(app, school.viewer).stream_url(school.recording_id)
    forged = url.split("token=")[0] + "token=forged"
    stranger = app.test_client()
    for _ in range(15):
        assert stranger.get(forged, environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 403
    for _ in range(5):
        posted = stranger.post("/login", data={}, environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert posted.status_code == 400
    denied = [e for e in events_of(runtime, "access:denied") if e.actor_id is None]
    assert len(denied) == audit.DENIALS_RECORDED_ONE_BY_ONE
    assert events_of(runtime, "access:denied_repeated") == []

    report = lifecycle.run(runtime, clock() + timedelta(minutes=1), dry_run=False)
    assert report.denial_tallies_recorded == 1
    (repeated,) = events_of(runtime, "access:denied_repeated")
    assert repeated.details["repeats"] == 20 - audit.DENIALS_RECORDED_ONE_BY_ONE
