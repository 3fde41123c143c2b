"""`recvault lifecycle run` cleans uploads abandoned for a day."""

from __future__ import annotations

import base64
from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.support.console import Console
from tests.support.people import add_person
from tests.support.recording_support import MP4_HEADER, register
from vault.models import AuditEvent, Recording, Upload
from vault.services import account_admin
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
