"""`recvault lifecycle run` cleans uploads abandoned for a day."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from storage_backends.base import PendingWrite, StoreUnavailable
from tests.support.console import Console
from tests.support.people import add_person
from tests.support.recording_support import MP4_HEADER, register
from vault.models import AuditEvent, Recording, Upload
from vault.services import account_admin, lifecycle
from vault.services.runtime import Runtime


def test_a_stale_upload_is_cleaned_and_its_recording_fails(
    client: FlaskClient, runtime: Runtime, recvault: Console
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    recording_id = register(runtime, "skolotaja")
    token = account_admin.issue_token(runtime, "skolotaja", "t", "1d", runtime.clock())
    metadata = "recording_id " + base64.b64encode(str(recording_id).encode()).decode()
    headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    created = client.post(
        "/api/v1/uploads",
        headers={**headers, "Upload-Length": "100000", "Upload-Metadata": metadata},
    )
    assert created.status_code == 201
    patched = client.patch(
        created.headers["Location"],
        data=MP4_HEADER * 10,
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert patched.status_code == 204

    fresh = recvault("lifecycle", "run")
    assert fresh.exit_code == 0 and "cleaned 0 stale uploads" in fresh.output

    with runtime.sessions() as session, session.begin():
        session.execute(update(Upload).values(updated_at=runtime.clock() - timedelta(hours=25)))
    dry = recvault("lifecycle", "run", "--dry-run")
    assert "would clean 1 stale uploads" in dry.output
    with runtime.sessions() as session:
        assert session.scalars(select(Upload)).all() != []

    done = recvault("lifecycle", "run")
    assert done.exit_code == 0, done.output
    assert "cleaned 1 stale uploads" in done.output
    assert "ended 0 lapsed views" in done.output
    with runtime.sessions() as session:
        assert session.scalars(select(Upload)).all() == []
        recording = session.get(Recording, recording_id)
        assert recording is not None and recording.status == "failed"
        actions = set(session.scalars(select(AuditEvent.action)))
    assert "upload:expired" in actions


def lifecycle_steps(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "lifecycle:step").order_by(AuditEvent.seq)
        )
        return [(row.object_id or "", row.outcome) for row in rows]


def test_each_step_of_the_run_is_an_event(runtime: Runtime, recvault: Console) -> None:
    shown = recvault("lifecycle", "run")
    assert shown.exit_code == 0, shown.output
    assert lifecycle_steps(runtime) == [
        ("storage_rules", "success"),
        ("stale_uploads", "success"),
        ("idle_views", "success"),
        ("denial_tallies", "success"),
        ("tombstone_purge", "success"),
        ("reminders", "success"),
        ("audit_checkpoint", "success"),
        ("audit_purge", "success"),
    ]
    # A run in which nothing happened but the run itself signs no checkpoint of its own.
    again = recvault("lifecycle", "run")
    assert "signed an audit checkpoint" not in again.output
    assert recvault("lifecycle", "run", "--dry-run").exit_code == 0
    assert len(lifecycle_steps(runtime)) == 16


def test_a_failing_step_is_recorded_and_the_others_still_run(
    runtime: Runtime, recvault: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(older_than: datetime) -> list[PendingWrite]:
        raise StoreUnavailable("the bucket cannot be reached")

    add_person(runtime, "skolotaja", "teacher")  # something for a checkpoint to cover
    monkeypatch.setattr(runtime.store, "list_stale_multipart", unreachable)
    report = lifecycle.run(runtime, runtime.clock(), dry_run=False)
    assert [failure.step for failure in report.failures] == [lifecycle.Step.STALE_UPLOADS]
    assert report.checkpoint_tree_size is not None
    steps = dict(lifecycle_steps(runtime))
    assert steps["stale_uploads"] == "failure"
    assert steps["audit_checkpoint"] == "success"
