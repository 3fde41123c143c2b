"""The year-end: a school year is shredded on time, completely, provably, and exactly once,
however often it is interrupted."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from storage_backends.base import BlobStore, StorageError, StoreUnavailable
from tests.support.clock import TestClock, riga
from tests.support.console import Console
from tests.support.people import add_person
from tests.support.recording_support import register
from tests.support.streaming_support import bearer, browser, issue_order
from tests.support.year_end_support import (
    CURRENT_YEAR,
    PAST_YEAR,
    TwoYears,
    database_dump,
    store_listing,
    two_years,
    year_end_state,
)
from vault.app import create_app
from vault.models import AuditEvent, Certificate, Recording, SchoolYearKey
from vault.services import lifecycle, year_end
from vault.services.errors import Gone, ValidationFailed
from vault.services.run_lock import lifecycle_lock
from vault.services.runtime import Runtime
from vault.services.year_end import YearEndStep
from vault.settings import Settings


class SimulatedCrash(Exception):
    """The process stops here (raised by the test's fault hook)."""


@pytest.fixture
def years(runtime: Runtime, clock: TestClock) -> TwoYears:
    return two_years(runtime, clock)


def recording(runtime: Runtime, recording_id: Any) -> Recording:
    with runtime.sessions() as session:
        found = session.get(Recording, recording_id)
        assert found is not None
        return found


def year_certificates(runtime: Runtime) -> list[Certificate]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Certificate).where(Certificate.kind == "year_shred")))


def step_events(runtime: Runtime, school_year: str) -> list[str]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "year_end:step", AuditEvent.object_id == school_year)
            .order_by(AuditEvent.id)
        )
        return [row.details["step"] for row in rows]


def exported_certificate(client: FlaskClient, runtime: Runtime, certificate_id: Any) -> Any:
    answer = client.get(
        f"/api/v1/certificates/{certificate_id}", headers=bearer(runtime, "direktore")
    )
    assert answer.status_code == 200
    return answer.get_json()


def test_the_year_end_shreds_its_year_and_leaves_the_next_one_playable(
    client: FlaskClient, runtime: Runtime, recvault: Console, years: TwoYears, tmp_path: Path
) -> None:
    done = recvault("year-end", PAST_YEAR)
    assert done.exit_code == 0, done.output
    assert "deletion certificate" in done.output

    state = year_end_state(runtime, PAST_YEAR)
    assert state is not None and state.certified_at is not None
    shredded = recording(runtime, years.past)
    assert shredded.status == "shredded"
    assert shredded.certificate_id == state.certificate_id
    assert shredded.wrapped_data_key is None
    # The tombstone keeps what art. 15 questions need.
    assert (shredded.title, shredded.class_group) == ("Maija stunda", "9.b")
    assert list(runtime.store.iter_keys(f"recordings/{PAST_YEAR}/")) == []
    with runtime.sessions() as session:
        year_key = session.get(SchoolYearKey, PAST_YEAR)
        assert year_key is not None and year_key.wrapped_key is None
    assert step_events(runtime, PAST_YEAR) == ["started", *(step.value for step in YearEndStep)]

    owner = bearer(runtime, "skolotaja")
    assert client.get(f"/api/v1/recordings/{years.past}/download", headers=owner).status_code == 410
    metadata = client.get(f"/api/v1/recordings/{years.past}", headers=owner)
    assert metadata.status_code == 200
    assert metadata.get_json()["status"] == "shredded"
    listed = client.get(f"/api/v1/recordings?school_year={PAST_YEAR}", headers=owner)
    assert [r["status"] for r in listed.get_json()["recordings"]] == ["shredded"]
    current = client.get(f"/api/v1/recordings/{years.current}/download", headers=owner)
    assert current.status_code == 200 and current.data == years.current_media

    document = exported_certificate(client, runtime, state.certificate_id)
    body = document["certificate"]
    assert body["kind"] == "year_shred" and body["school_year"] == PAST_YEAR
    assert [r["id"] for r in body["recordings"]] == [str(years.past)]
    assert body["recordings"][0]["ciphertext_sha256"] == shredded.ciphertext_sha256
    assert body["keys"]["school_year_key"]["fingerprint"]
    assert all(m["destroyed_at"] for m in body["keys"]["master_versions"])
    assert body["cryptographic_erasure"]["complete"] is True
    assert body["pending"] == {"objects": [], "keys": None}
    saved = tmp_path / "certificate.json"
    saved.write_text(json.dumps(document), encoding="utf-8")
    verified = recvault("certificate", "verify", str(saved))
    assert verified.exit_code == 0 and "valid" in verified.output
    signed = document["signed_body"]
    edited = signed.replace(str(years.past)[:1], "x" if str(years.past)[0] != "x" else "y", 1)
    assert edited != signed and len(edited) == len(signed)
    saved.write_text(json.dumps({**document, "signed_body": edited}), encoding="utf-8")
    tampered = recvault("certificate", "verify", str(saved))
    assert tampered.exit_code != 0 and "INVALID" in tampered.output

    again = recvault("year-end", PAST_YEAR)
    assert again.exit_code == 0, again.output
    assert "steps run: none" in again.output
    assert len(year_certificates(runtime)) == 1


def test_before_the_shred_time_only_early_closes_a_year(
    runtime: Runtime, recvault: Console, years: TwoYears
) -> None:
    before = database_dump(runtime)
    refused = recvault("year-end", CURRENT_YEAR)
    assert refused.exit_code != 0
    assert "2027-05-31 18:00" in refused.output and "--early" in refused.output
    assert database_dump(runtime) == before
    assert recording(runtime, years.current).status == "available"

    early = recvault("year-end", CURRENT_YEAR, "--early")
    assert early.exit_code == 0, early.output
    assert recording(runtime, years.current).status == "shredded"
    state = year_end_state(runtime, CURRENT_YEAR)
    assert state is not None and state.early


def test_a_dry_run_changes_nothing(runtime: Runtime, recvault: Console, years: TwoYears) -> None:
    rows, objects = database_dump(runtime), store_listing(runtime)
    shown = recvault("year-end", PAST_YEAR, "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "would destroy 1 recordings of 1 teachers (1 stored objects)" in shown.output
    early = recvault("year-end", CURRENT_YEAR, "--dry-run", "--early")
    assert "would destroy 1 recordings" in early.output
    daily = recvault("lifecycle", "run", "--dry-run")
    assert daily.exit_code == 0 and f"{PAST_YEAR}: would destroy 1 recordings" in daily.output
    assert database_dump(runtime) == rows
    assert store_listing(runtime) == objects


def test_the_lifecycle_run_shreds_one_hour_after_the_shred_hour_and_not_before(
    runtime: Runtime, recvault: Console, years: TwoYears, clock: TestClock
) -> None:
    # The last school day of 2025-2026 is Friday 29 May 2026; VAULT_SHRED_HOUR is 18.
    clock.set(riga(2026, 5, 29, 17, 59))
    early = recvault("lifecycle", "run")
    assert early.exit_code == 0, early.output
    assert year_end_state(runtime, PAST_YEAR) is None
    assert recording(runtime, years.past).status == "available"

    clock.set(riga(2026, 5, 29, 19, 0))
    on_time = recvault("lifecycle", "run")
    assert on_time.exit_code == 0, on_time.output
    assert recording(runtime, years.past).status == "shredded"
    assert len(year_certificates(runtime)) == 1
    assert list(runtime.store.iter_keys(f"recordings/{PAST_YEAR}/")) == []
    # The next hour's run has nothing left to do for that year.
    clock.advance(timedelta(hours=1))
    assert recvault("lifecycle", "run").exit_code == 0
    assert len(year_certificates(runtime)) == 1


@pytest.mark.parametrize("crash_after", list(YearEndStep), ids=lambda step: step.value)
def test_a_year_end_stopped_after_any_step_finishes_with_one_certificate(
    runtime: Runtime, recvault: Console, years: TwoYears, crash_after: YearEndStep
) -> None:
    def crash(step: YearEndStep) -> None:
        if step is crash_after:
            raise SimulatedCrash(step.value)

    with pytest.raises(SimulatedCrash):
        year_end.run(runtime, PAST_YEAR, runtime.clock(), early=False, after_step=crash)
    resumed = recvault("year-end", PAST_YEAR)
    assert resumed.exit_code == 0, resumed.output
    assert "already" not in resumed.output
    assert len(year_certificates(runtime)) == 1
    assert step_events(runtime, PAST_YEAR) == ["started", *(step.value for step in YearEndStep)]
    assert recording(runtime, years.past).status == "shredded"
    with runtime.sessions() as session:
        destroyed = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "keys:year_key_destroyed")
        )
    assert destroyed == 1


def test_a_killed_year_end_process_is_resumed(
    runtime: Runtime, recvault: Console, years: TwoYears
) -> None:
    """A real process killed (SIGKILL) right after destroying the key, holding the lock."""
    victim = subprocess.run(
        [sys.executable, "-m", "tests.support.year_end_killed", PAST_YEAR, "destroy_keys"],
        env={**os.environ, **recvault.environment()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    state = year_end_state(runtime, PAST_YEAR)
    assert state is not None and state.keys_destroyed_at is not None
    assert state.objects_deleted_at is None
    resumed = recvault("year-end", PAST_YEAR)
    assert resumed.exit_code == 0, resumed.output
    assert "steps run: delete_objects, tombstones, certificate" in resumed.output
    assert len(year_certificates(runtime)) == 1


class FailingStore:
    """The real store, but deleting fails: the store goes away after ``fine`` deletions, or
    refuses the keys in ``refused`` outright (as a bucket with an object lock would)."""

    def __init__(self, store: BlobStore, *, fine: int = 0, refused: frozenset[str] = frozenset()):
        self._store = store
        self._fine = fine
        self._refused = refused

    def delete(self, key: str) -> None:
        if key in self._refused:
            raise StorageError(f"cannot delete {key!r}: AccessDenied")
        if self._fine <= 0:
            raise StoreUnavailable("the bucket cannot be reached")
        self._fine -= 1
        self._store.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_store_down_mid_way_leaves_the_deletion_pending_for_the_next_run(
    runtime: Runtime, recvault: Console, years: TwoYears
) -> None:
    failing = dataclasses.replace(runtime, store=FailingStore(runtime.store))
    with pytest.raises(Exception, match="storage is unavailable"):
        year_end.run(failing, PAST_YEAR, runtime.clock(), early=False)
    state = year_end_state(runtime, PAST_YEAR)
    assert state is not None and state.keys_destroyed_at and state.objects_deleted_at is None
    report = lifecycle.run(runtime, runtime.clock(), dry_run=False)
    assert [outcome.school_year for outcome in report.year_ends] == [PAST_YEAR]
    assert list(runtime.store.iter_keys(f"recordings/{PAST_YEAR}/")) == []
    assert len(year_certificates(runtime)) == 1


def test_an_object_the_store_refuses_is_named_in_the_certificate(
    client: FlaskClient, runtime: Runtime, years: TwoYears
) -> None:
    key = recording(runtime, years.past).object_key
    assert key is not None
    refusing = dataclasses.replace(
        runtime,
        store=FailingStore(runtime.store, fine=100, refused=frozenset({key})),
    )
    outcome = year_end.run(refusing, PAST_YEAR, runtime.clock(), early=False)
    assert outcome.objects_pending == 1 and outcome.certificate_id is not None
    body = exported_certificate(client, runtime, outcome.certificate_id)["certificate"]
    assert [item["key"] for item in body["pending"]["objects"]] == [key]
    assert "AccessDenied" in body["pending"]["objects"][0]["error"]


def test_freezing_aborts_uploads_and_refuses_new_work_in_the_year(
    client: FlaskClient, runtime: Runtime, recvault: Console, years: TwoYears
) -> None:
    waiting = register(runtime, "skolotaja", title="Vēl augšupielādē")
    token = bearer(runtime, "skolotaja")
    tus = {**token, "Tus-Resumable": "1.0.0"}
    metadata = "recording_id " + base64.b64encode(str(waiting).encode()).decode()
    created = client.post(
        "/api/v1/uploads", headers={**tus, "Upload-Length": "5000", "Upload-Metadata": metadata}
    )
    assert created.status_code == 201
    body = years.current_media[:1000]
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}
    assert (
        client.patch(
            created.headers["Location"], data=body, headers={**patch, "Upload-Offset": "0"}
        ).status_code
        == 204
    )

    assert recvault("year-end", CURRENT_YEAR, "--early").exit_code == 0
    resumed = client.patch(
        created.headers["Location"], data=body, headers={**patch, "Upload-Offset": "1000"}
    )
    assert resumed.status_code in (404, 410)
    with runtime.sessions() as session:
        aborted = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "upload:terminated", AuditEvent.recording_id == waiting
            )
        ).one()
    assert aborted.details["reason"] == "year_end"
    assert recording(runtime, waiting).status == "shredded"
    assert list(runtime.store.iter_keys(f"recordings/{CURRENT_YEAR}/")) == []
    unfinished = runtime.store.list_stale_multipart(runtime.clock() + timedelta(days=1))
    assert [w.key for w in unfinished if w.key.startswith(f"recordings/{CURRENT_YEAR}/")] == []
    add_person(runtime, "metodikis", "staff")
    with pytest.raises(ValidationFailed) as refused:
        issue_order(runtime, ["metodikis"], [years.current], "7-2/99")
    assert refused.value.field_errors == {
        "recording_ids": ["A deleted recording cannot be named in an order."]
    }
    fresh = client.post(
        "/api/v1/recordings",
        json={
            "title": "Jauna",
            "subject": "Fizika",
            "class_group": "8.a",
            "lesson_date": "2026-11-10",
            "platform": "zoom",
            "purpose": "quality_safety",
            "aim": "Pārskats",
            "visible": "teacher_only",
            "subjects_informed": {"method": "e-klase", "at": "2026-11-09"},
            "third_party_warning": True,
            "device": "school",
        },
        headers=token,
    )
    assert fresh.status_code == 422
    assert fresh.get_json()["errors"]["lesson_date"] == ["Šī mācību gada ieraksti jau ir dzēsti."]


@pytest.fixture
def rechecking(settings: Settings, runtime: Runtime) -> Flask:
    changed = dataclasses.replace(settings, stream_recheck_seconds=0)
    return create_app(changed, dataclasses.replace(runtime, settings=changed))


def test_a_stream_under_way_stops_and_the_year_answers_410(
    rechecking: Flask, runtime: Runtime, years: TwoYears
) -> None:
    owner = browser(rechecking, years.teacher)
    url = owner.stream_url(years.current)
    response = owner.client.get(url, buffered=False)
    assert response.status_code == 200
    pieces = response.iter_encoded()
    assert years.current_media.startswith(next(pieces))
    year_end.run(runtime, CURRENT_YEAR, runtime.clock(), early=True)
    with pytest.raises(Gone):
        for _ in pieces:
            pass
    response.close()
    assert owner.client.get(url).status_code == 410
    assert owner.start_view(years.current).status_code == 410
    download = f"/api/v1/recordings/{years.current}/download"
    assert owner.client.get(download).status_code == 410


def test_one_runner_at_a_time(runtime: Runtime, recvault: Console, years: TwoYears) -> None:
    with lifecycle_lock(runtime) as held:
        assert held
        busy = recvault("lifecycle", "run")
        assert busy.exit_code == 0 and "in progress" in busy.output
        refused = recvault("year-end", PAST_YEAR)
        assert refused.exit_code != 0 and "in progress" in refused.output
    assert year_end_state(runtime, PAST_YEAR) is None
    assert recvault("year-end", PAST_YEAR).exit_code == 0


def test_tombstones_are_purged_after_their_keeping_period(
    runtime: Runtime, recvault: Console, years: TwoYears, clock: TestClock
) -> None:
    assert recvault("year-end", PAST_YEAR).exit_code == 0
    kept = recvault("lifecycle", "run")
    assert "tombstones" not in kept.output
    assert recording(runtime, years.past).status == "shredded"
    clock.advance(timedelta(days=runtime.settings.tombstone_days + 1))
    purged = recvault("lifecycle", "run")
    assert "purged 1 tombstones" in purged.output, purged.output
    with runtime.sessions() as session:
        assert session.get(Recording, years.past) is None
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "recording:tombstones_purged")
        ).one()
    assert event.details["recording_ids"] == [str(years.past)]


def test_the_store_expiry_rules_follow_the_calendar(
    runtime: Runtime, recvault: Console, years: TwoYears
) -> None:
    assert recvault("lifecycle", "run").exit_code == 0
    rules = runtime.store.get_lifecycle_rules()
    assert {rule.school_year for rule in rules.years} >= {PAST_YEAR, CURRENT_YEAR}


def test_the_certificate_names_the_owners_downloads(
    client: FlaskClient, runtime: Runtime, years: TwoYears
) -> None:
    owner = bearer(runtime, "skolotaja")
    fetched = client.get(f"/api/v1/recordings/{years.current}/download", headers=owner)
    assert fetched.status_code == 200 and fetched.get_data() == years.current_media
    fetched.close()
    outcome = year_end.run(runtime, CURRENT_YEAR, runtime.clock(), early=True)
    body = exported_certificate(client, runtime, outcome.certificate_id)["certificate"]
    copies = body["copies_outside_the_vault"]
    assert [(c["recording_id"], c["by"]) for c in copies] == [(str(years.current), "skolotaja")]
