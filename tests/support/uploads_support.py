"""Helpers for the upload tests: tus requests, a loopback HTTP server, reading a stored
object back through the keyring, and scanners that look for plaintext at rest."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import LargeBinary, String, Text, select
from werkzeug.test import TestResponse

from tests.support.live_server import LiveServer, serving_in_thread
from tests.support.people import add_person
from tests.support.recording_support import MP4_HEADER, keep_year_open
from vault import crypto
from vault.models import Base, Recording, Upload
from vault.services import account_admin
from vault.services.runtime import Runtime

UPLOADS = "/api/v1/uploads"
MIB = 1024 * 1024


def teacher_token(runtime: Runtime, username: str) -> str:
    """A teacher account and a bearer token for it."""
    keep_year_open(runtime)
    add_person(runtime, username, "teacher")
    return account_admin.issue_token(runtime, username, "uploads", "1d", runtime.clock())


def tus_headers(token: str, **extra: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


def encode_metadata(**values: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items()
    )


def media(size: int, marker: bytes = b"") -> bytes:
    """An MP4-looking file of ``size`` bytes: random, or ``marker`` repeated if given.

    Random bytes make any misplaced, repeated or dropped chunk visible in a comparison.
    """
    body = marker * (size // len(marker) + 1) if marker else os.urandom(size)
    return (MP4_HEADER + body)[:size]


def create(client: FlaskClient, token: str, recording_id: uuid.UUID, length: int) -> TestResponse:
    return client.post(
        UPLOADS,
        headers=tus_headers(
            token,
            Upload_Length=str(length),
            Upload_Metadata=encode_metadata(recording_id=str(recording_id), filename="a.mp4"),
        ),
    )


def create_url(client: FlaskClient, token: str, recording_id: uuid.UUID, length: int) -> str:
    response = create(client, token, recording_id, length)
    assert response.status_code == 201, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(f"{UPLOADS}/")
    return location


def patch(
    client: FlaskClient, token: str, url: str, offset: int, data: bytes, **extra: str
) -> TestResponse:
    headers = tus_headers(token, Upload_Offset=str(offset), **extra)
    headers.setdefault("Content-Type", "application/offset+octet-stream")
    return client.patch(url, data=data, headers=headers)


def head(client: FlaskClient, token: str, url: str) -> TestResponse:
    return client.head(url, headers=tus_headers(token))


def send(client: FlaskClient, token: str, url: str, data: bytes, sizes: list[int]) -> int:
    """PATCH ``data`` in requests of the given sizes (the last repeats); return the offset."""
    offset = 0
    index = 0
    while offset < len(data):
        size = sizes[min(index, len(sizes) - 1)]
        response = patch(client, token, url, offset, data[offset : offset + size])
        assert response.status_code == 204, response.get_data(as_text=True)
        offset = int(response.headers["Upload-Offset"])
        index += 1
    return offset


def recording_row(runtime: Runtime, recording_id: uuid.UUID) -> Recording:
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        return recording


def upload_rows(runtime: Runtime, recording_id: uuid.UUID) -> list[Upload]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Upload).where(Upload.recording_id == recording_id)))


def published(runtime: Runtime, recording_id: uuid.UUID, timeout: float = 120.0) -> Recording:
    """The recording once the verify pass that follows the final PATCH has ended."""
    runtime.upload_workers.finish(timeout)
    deadline = time.monotonic() + timeout
    while (recording := recording_row(runtime, recording_id)).status == "processing":
        # A pass running in another process (a gunicorn worker) is only seen in the database.
        assert time.monotonic() < deadline, "the recording stayed processing"
        time.sleep(0.05)
    return recording


def stored_plaintext(runtime: Runtime, recording_id: uuid.UUID) -> bytes:
    """Decrypt the recording's stored object with its wrapped data key."""
    recording = published(runtime, recording_id)
    assert recording.object_key is not None and recording.wrapped_data_key is not None
    with runtime.sessions() as session:
        data_key = runtime.keyring.data_key(
            session, recording.id, recording.school_year, recording.wrapped_data_key
        )
    pieces = runtime.store.read_range(recording.object_key)
    return b"".join(crypto.decrypt_stream(data_key, recording.id, recording.school_year, pieces))


# -- a real HTTP server --------------------------------------------------------------------


class HttpServer(LiveServer):
    @property
    def uploads_url(self) -> str:
        return self.url + UPLOADS


@contextmanager
def serve(app: Flask) -> Iterator[HttpServer]:
    """The app on a free loopback port, for real HTTP clients."""
    with serving_in_thread(app) as running:
        yield HttpServer(url=running.url, server=running.server)


# -- plaintext at rest ---------------------------------------------------------------------


def files_containing(root: Path, marker: bytes) -> list[Path]:
    """Every regular file under ``root`` whose bytes contain ``marker``."""
    hits = []
    overlap = len(marker) - 1
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                handle = path.open("rb")
            except (FileNotFoundError, PermissionError):
                continue  # removed while scanning (a temp file renamed into place)
            with handle:
                tail = b""
                while block := handle.read(4 * MIB):
                    if marker in tail + block:
                        hits.append(path)
                        break
                    tail = block[-overlap:]
    return hits


def database_rows_containing(runtime: Runtime, marker: bytes) -> list[str]:
    """Tables and columns of the database holding ``marker`` in any text or binary column."""
    hits = []
    with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            columns = [
                column
                for column in table.columns
                if isinstance(column.type, (LargeBinary, String, Text))
                or column.type.__class__.__name__ == "JSON"
            ]
            for column in columns:
                for value in session.execute(select(column)).scalars():
                    if value is None:
                        continue
                    raw = value if isinstance(value, bytes) else repr(value).encode()
                    if marker in raw or marker.decode("latin-1") in repr(value):
                        hits.append(f"{table.name}.{column.name}")
                        break
    return hits
