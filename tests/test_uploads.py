"""The tus server at /api/v1/uploads: protocol, authorisation, limits and media types."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.clock import MachineClock
from tests.support.people import add_person, sign_in
from tests.support.recording_support import register
from tests.support.uploads_support import (
    MIB,
    UPLOADS,
    create,
    create_url,
    encode_metadata,
    head,
    media,
    patch,
    published,
    recording_row,
    send,
    stored_plaintext,
    teacher_token,
    tus_headers,
    upload_rows,
)
from tests.support.webclient import csrf_token_from
from vault.app import create_app
from vault.models import AuditEvent
from vault.services import account_admin
from vault.services.media import sniff_media_type
from vault.services.runtime import Runtime
from vault.settings import Settings

# Every upload test waits for the verify passes it started (see the fixture).
pytestmark = pytest.mark.usefixtures("verify_passes_finished")


def actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def token(runtime: Runtime) -> str:
    return teacher_token(runtime, "skolotaja")


def test_options_discovers_the_server(client: FlaskClient, token: str, settings: Settings) -> None:
    response = client.options(UPLOADS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"] == "creation,termination"
    assert response.headers["Tus-Max-Size"] == str(settings.max_upload_bytes)


def test_unsupported_tus_version_gets_412(client: FlaskClient, token: str) -> None:
    for version in ("0.2.2", None):
        headers = {"Authorization": f"Bearer {token}", "Upload-Length": "100"}
        if version:
            headers["Tus-Resumable"] = version
        response = client.post(UPLOADS, headers=headers)
        assert response.status_code == 412
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.mimetype == "application/problem+json"


def test_upload_in_many_request_sizes_becomes_available(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(7 * MIB + 12_345)
    url = create_url(client, token, recording_id, len(data))
    assert recording_row(runtime, recording_id).status == "uploading"

    status = head(client, token, url)
    assert status.status_code == 200
    assert status.headers["Upload-Offset"] == "0"
    assert status.headers["Upload-Length"] == str(len(data))
    assert status.headers["Cache-Control"] == "no-store"
    assert status.headers["Tus-Resumable"] == "1.0.0"

    # 1-byte, odd-sized and large requests; parts are cut at fixed ciphertext offsets whatever
    # the request sizes are.
    sizes = [12, 1, 1, 1, 7, 65_537, 3 * MIB + 1, 1, 2 * MIB + 333]
    assert send(client, token, url, data, sizes) == len(data)

    recording = published(runtime, recording_id)
    assert recording.status == "available"
    assert recording.size_bytes == len(data)
    assert recording.content_type == "video/mp4"
    assert recording.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert recording.object_key == f"recordings/{recording.school_year}/{recording.id}"
    assert recording.available_at is not None
    assert stored_plaintext(runtime, recording_id) == data
    ciphertext = b"".join(runtime.store.read_range(recording.object_key))
    assert recording.ciphertext_sha256 == hashlib.sha256(ciphertext).hexdigest()
    assert runtime.store.get_tags(recording.object_key) == {
        "classification": "restricted",
        "school-year": recording.school_year,
        "retain-until": recording.retain_until.isoformat(),
    }
    (row,) = upload_rows(runtime, recording_id)
    assert row.completed_at is not None
    assert row.encryptor_state is None and row.pending_ciphertext == b""
    assert {"upload:created", "upload:completed"} <= set(actions(runtime))

    finished = head(client, token, url)
    assert finished.status_code == 200
    assert finished.headers["Upload-Offset"] == str(len(data))
    again = patch(client, token, url, len(data), b"x")
    assert again.status_code == 409


def test_wrong_offset_gets_409(client: FlaskClient, runtime: Runtime, token: str) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(100_000)
    url = create_url(client, token, recording_id, len(data))
    assert patch(client, token, url, 0, data[:50_000]).status_code == 204
    for wrong in (0, 49_999, 50_001):
        response = patch(client, token, url, wrong, data[wrong : wrong + 10])
        assert response.status_code == 409
        assert response.mimetype == "application/problem+json"
    assert head(client, token, url).headers["Upload-Offset"] == "50000"
    assert patch(client, token, url, 50_000, data[50_000:]).status_code == 204
    assert stored_plaintext(runtime, recording_id) == data


def test_termination_removes_every_trace(client: FlaskClient, runtime: Runtime, token: str) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(6 * MIB)
    url = create_url(client, token, recording_id, len(data))
    # Enough for one stored part plus a ciphertext tail and a sealed carry-over.
    assert patch(client, token, url, 0, data[: 5 * MIB + 100]).status_code == 204
    key = recording_row(runtime, recording_id).object_key
    assert key is not None
    assert any(w.key == key for w in runtime.store.list_stale_multipart(_later()))

    response = client.delete(url, headers=tus_headers(token))
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert upload_rows(runtime, recording_id) == []
    assert runtime.store.list_stale_multipart(_later()) == []
    assert list(runtime.store.iter_keys("recordings/")) == []
    recording = recording_row(runtime, recording_id)
    assert recording.status == "registered"
    assert recording.object_key is None and recording.wrapped_data_key is None
    assert "upload:terminated" in actions(runtime)
    assert head(client, token, url).status_code == 404
    assert patch(client, token, url, 0, data[:100]).status_code == 404

    # The recording is registered again: a fresh upload of it succeeds.
    url = create_url(client, token, recording_id, len(data))
    assert send(client, token, url, data, [4 * MIB]) == len(data)
    assert stored_plaintext(runtime, recording_id) == data


def _later() -> datetime:
    # The store dates its multipart uploads by the machine's clock (S3's Initiated, file
    # times), so "a day from now" for the store comes from that clock too.
    return MachineClock()() + timedelta(days=1)


def test_text_file_gets_415_and_is_discarded(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    text = b"Dear parents, the lesson plan for next week is attached.\n" * 100
    url = create_url(client, token, recording_id, len(text))
    response = patch(client, token, url, 0, text)
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"
    assert recording_row(runtime, recording_id).status == "failed"
    assert upload_rows(runtime, recording_id) == []
    assert runtime.store.list_stale_multipart(_later()) == []
    assert list(runtime.store.iter_keys("recordings/")) == []
    assert "upload:rejected" in actions(runtime)


@pytest.mark.parametrize(
    ("head_bytes", "expected"),
    [
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm", "video/webm"),
        (
            b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska",
            "video/x-matroska",
        ),
        (b"OggS\x00\x02" + bytes(22) + b"\x01\x1e\x01vorbis", "audio/ogg"),
        (b"OggS\x00\x02" + bytes(22) + b"\x01\x2a\x80theora", "video/ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + bytes(8), "audio/mpeg"),
        (b"\xff\xe3\x18\xc4" + bytes(8), "audio/mpeg"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "audio/wav"),
        (b"RIFF\x24\x08\x00\x00AVI LIST", None),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", None),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00", None),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None),
        (b"hello world, not a video", None),
    ],
)
def test_magic_bytes(head_bytes: bytes, expected: str | None) -> None:
    assert sniff_media_type(head_bytes) == expected


def test_stored_content_type_comes_from_the_magic_bytes(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    wav = b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(256)) * 40
    url = create_url(client, token, recording_id, len(wav))
    assert patch(client, token, url, 0, wav).status_code == 204
    assert published(runtime, recording_id).content_type == "audio/wav"


def test_first_request_must_carry_the_magic_bytes(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(4096)
    url = create_url(client, token, recording_id, len(data))
    response = patch(client, token, url, 0, data[:11])
    assert response.status_code == 400
    assert head(client, token, url).headers["Upload-Offset"] == "0"
    assert recording_row(runtime, recording_id).status == "uploading"
    # Twelve bytes are enough; after that any size goes, down to one byte.
    assert send(client, token, url, data, [12, 1, 1, 4000]) == len(data)
    assert stored_plaintext(runtime, recording_id) == data


def test_files_shorter_than_the_magic_bytes_are_refused(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    assert create(client, token, recording_id, 11).status_code == 415
    assert recording_row(runtime, recording_id).status == "registered"


def test_oversized_upload_gets_413(settings: Settings, runtime: Runtime, token: str) -> None:
    small = dataclasses.replace(settings, max_upload_bytes=10 * MIB)
    client = create_app(small, dataclasses.replace(runtime, settings=small)).test_client()
    recording_id = register(runtime, "skolotaja")
    response = create(client, token, recording_id, 10 * MIB + 1)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert recording_row(runtime, recording_id).status == "registered"
    assert upload_rows(runtime, recording_id) == []
    assert client.options(UPLOADS, headers=tus_headers(token)).headers["Tus-Max-Size"] == str(
        10 * MIB
    )
    assert create(client, token, recording_id, 10 * MIB).status_code == 201


def test_upload_over_the_teachers_quota_gets_413(
    settings: Settings, runtime: Runtime, token: str
) -> None:
    limited = dataclasses.replace(settings, teacher_quota_bytes=1 * MIB)
    client = create_app(limited, dataclasses.replace(runtime, settings=limited)).test_client()
    first = register(runtime, "skolotaja")
    data = media(600_000)
    url = create_url(client, token, first, len(data))
    # An open upload counts at its declared length, a stored recording at its size.
    second = register(runtime, "skolotaja")
    assert create(client, token, second, 500_000).status_code == 413
    assert send(client, token, url, data, [len(data)]) == len(data)
    assert create(client, token, second, 500_000).status_code == 413
    assert create(client, token, second, 400_000).status_code == 201
    # Another teacher's quota is their own.
    other_token = teacher_token(runtime, "cits")
    other = register(runtime, "cits")
    assert create(client, other_token, other, 1 * MIB).status_code == 201
    assert "upload:rejected" in actions(runtime)


def test_another_teacher_is_refused_everything(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(50_000)
    url = create_url(client, token, recording_id, len(data))
    assert patch(client, token, url, 0, data[:20_000]).status_code == 204
    intruder = teacher_token(runtime, "cits")
    assert patch(client, intruder, url, 20_000, data[20_000:]).status_code == 403
    assert head(client, intruder, url).status_code == 403
    assert client.delete(url, headers=tus_headers(intruder)).status_code == 403
    second = register(runtime, "skolotaja")
    assert create(client, intruder, second, 1000).status_code == 403
    # The denials are audited and changed nothing.
    assert actions(runtime).count("access:denied") == 4
    assert head(client, token, url).headers["Upload-Offset"] == "20000"
    assert recording_row(runtime, second).status == "registered"


def test_other_roles_cannot_upload(client: FlaskClient, runtime: Runtime, token: str) -> None:
    recording_id = register(runtime, "skolotaja")
    add_person(runtime, "dpo", "auditor")
    auditor = account_admin.issue_token(runtime, "dpo", "t", "1d", runtime.clock())
    assert create(client, auditor, recording_id, 1000).status_code == 403


def test_second_upload_for_the_same_recording_gets_409(
    client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(30_000)
    url = create_url(client, token, recording_id, len(data))
    assert create(client, token, recording_id, len(data)).status_code == 409
    send(client, token, url, data, [len(data)])
    assert published(runtime, recording_id).status == "available"
    assert create(client, token, recording_id, len(data)).status_code == 409
    assert client.delete(url, headers=tus_headers(token)).status_code == 409
    assert recording_row(runtime, recording_id).status == "available"


def test_malformed_requests(client: FlaskClient, runtime: Runtime, token: str) -> None:
    recording_id = register(runtime, "skolotaja")
    no_length = client.post(
        UPLOADS,
        headers=tus_headers(token, Upload_Metadata=encode_metadata(recording_id=str(recording_id))),
    )
    assert no_length.status_code == 400
    deferred = client.post(
        UPLOADS,
        headers=tus_headers(
            token,
            Upload_Defer_Length="1",
            Upload_Metadata=encode_metadata(recording_id=str(recording_id)),
        ),
    )
    assert deferred.status_code == 400
    for metadata in ("", "recording_id", "recording_id not*base64", "filename YS5tcDQ="):
        response = client.post(
            UPLOADS, headers=tus_headers(token, Upload_Length="100", Upload_Metadata=metadata)
        )
        assert response.status_code == 400, metadata
    unknown = client.post(
        UPLOADS,
        headers=tus_headers(
            token,
            Upload_Length="100",
            Upload_Metadata=encode_metadata(recording_id="3f1c9a4e-0d5b-4f8e-9a39-6f1d2a7b8c90"),
        ),
    )
    assert unknown.status_code == 404

    data = media(1000)
    url = create_url(client, token, recording_id, len(data))
    wrong_type = patch(client, token, url, 0, data, Content_Type="application/octet-stream")
    assert wrong_type.status_code == 415
    assert (
        client.patch(
            url,
            data=data,
            headers=tus_headers(token, Content_Type="application/offset+octet-stream"),
        ).status_code
        == 400
    )
    too_long = patch(client, token, url, 0, data + b"extra")
    assert too_long.status_code == 413
    assert head(client, token, url).headers["Upload-Offset"] == "0"
    assert recording_row(runtime, recording_id).status == "uploading"


def test_every_response_carries_the_tus_header(client: FlaskClient, token: str) -> None:
    unauthenticated = client.head(f"{UPLOADS}/3f1c9a4e-0d5b-4f8e-9a39-6f1d2a7b8c90")
    assert unauthenticated.status_code == 401
    missing = client.head(
        f"{UPLOADS}/3f1c9a4e-0d5b-4f8e-9a39-6f1d2a7b8c90", headers=tus_headers(token)
    )
    assert missing.status_code == 404
    for response in (unauthenticated, missing):
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.headers["Cache-Control"] == "no-store"


def test_browser_session_needs_the_csrf_token(app: Flask, runtime: Runtime) -> None:
    person = add_person(runtime, "skolotaja2", "teacher")
    recording_id = register(runtime, "skolotaja2")
    client = app.test_client()
    assert sign_in(client, person).status_code == 302
    csrf = csrf_token_from(client, "/")
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "1000",
        "Upload-Metadata": encode_metadata(recording_id=str(recording_id)),
    }
    assert client.post(UPLOADS, headers=headers).status_code == 400
    created = client.post(UPLOADS, headers={**headers, "X-CSRF-Token": csrf})
    assert created.status_code == 201
    body = media(1000)
    patch_headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    url = created.headers["Location"]
    assert client.patch(url, data=body, headers=patch_headers).status_code == 400
    done = client.patch(url, data=body, headers={**patch_headers, "X-CSRF-Token": csrf})
    assert done.status_code == 204
    assert published(runtime, recording_id).status == "available"
