"""tuspy, the official tus Python client, against the app on a real loopback HTTP server.

Each upload is checked end to end: the recording is ``available``, its download is
byte-identical to the file, and the recorded SHA-256 matches.
"""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from tusclient import client as tus_client
from tusclient.uploader.uploader import Uploader

from tests.support.recording_support import register
from tests.support.uploads_support import (
    MIB,
    HttpServer,
    media,
    published,
    recording_row,
    serve,
    stored_plaintext,
    teacher_token,
)
from vault.services.runtime import Runtime

# Every upload test waits for the verify passes it started (see the fixture).
pytestmark = pytest.mark.usefixtures("verify_passes_finished")


@pytest.fixture
def server(app: Flask) -> Iterator[HttpServer]:
    with serve(app) as running:
        yield running


@pytest.fixture
def token(runtime: Runtime) -> str:
    return teacher_token(runtime, "skolotaja")


def uploader(
    server: HttpServer,
    token: str,
    data: bytes,
    chunk_size: int,
    recording_id: uuid.UUID | None = None,
    url: str | None = None,
) -> Uploader:
    """A fresh tuspy client and uploader (a new client instance each time)."""
    client = tus_client.TusClient(server.uploads_url, headers={"Authorization": f"Bearer {token}"})
    metadata = {"recording_id": str(recording_id), "filename": "lesson.mp4"} if recording_id else {}
    return client.uploader(
        file_stream=io.BytesIO(data), chunk_size=chunk_size, metadata=metadata, url=url
    )


def assert_stored(
    server: HttpServer, runtime: Runtime, token: str, recording_id: uuid.UUID, data: bytes
) -> None:
    recording = published(runtime, recording_id)
    assert recording.status == "available"
    assert recording.size_bytes == len(data)
    assert recording.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    download = requests.get(
        f"{server.url}/api/v1/recordings/{recording_id}/download",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == recording.plaintext_sha256
    assert stored_plaintext(runtime, recording_id) == data


def upload_interrupted_and_resumed(
    server: HttpServer, runtime: Runtime, token: str, size: int, chunk_size: int, stop_at: int
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(size)
    first = uploader(server, token, data, chunk_size, recording_id)
    first.upload(stop_at=stop_at)
    url = str(first.url)
    assert url.startswith(f"{server.uploads_url}/")
    assert recording_row(runtime, recording_id).status == "uploading"
    # A new client instance knows only the upload URL; it asks the server where to resume.
    resumed = uploader(server, token, data, chunk_size, url=url)
    assert resumed.offset == stop_at
    resumed.upload()
    assert_stored(server, runtime, token, recording_id, data)


def test_tuspy_upload_interrupted_and_resumed_by_a_new_client(
    server: HttpServer, runtime: Runtime, token: str
) -> None:
    upload_interrupted_and_resumed(server, runtime, token, 11 * MIB + 5, MIB, 6 * MIB + 3)


def cut_patch(token: str, url: str, offset: int, body: bytes, sent: int) -> None:
    """A PATCH of ``body`` whose connection is reset after ``sent`` bytes of it, as a laptop
    that loses the network would leave it."""
    target = urlsplit(url)
    head = (
        f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((target.hostname, target.port), timeout=30) as raw:
        raw.sendall(head.encode() + body[:sent])
        # Reset, not a clean close: the server finds out only by reading.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_tuspy_resumes_at_once_after_a_dropped_patch(
    server: HttpServer, runtime: Runtime, token: str
) -> None:
    """A client that reconnects right away, while the dropped request is still committing
    what arrived, learns the offset that request ends at (tuspy with its default
    retries=0 gives up on any refusal)."""
    recording_id = register(runtime, "skolotaja")
    data = media(14 * MIB + 7)
    first = uploader(server, token, data, MIB, recording_id)
    first.upload(stop_at=MIB)
    url = str(first.url)
    cut_patch(token, url, MIB, data[MIB : 12 * MIB], sent=9 * MIB)
    resumed = uploader(server, token, data, 4 * MIB, url=url)
    assert resumed.retries == 0
    resumed.upload()
    assert_stored(server, runtime, token, recording_id, data)


def test_two_uploads_at_once(server: HttpServer, runtime: Runtime, token: str) -> None:
    files = [media(9 * MIB + 1), media(7 * MIB + 999)]
    recording_ids = [register(runtime, "skolotaja") for _ in files]
    errors: list[BaseException] = []

    def run(data: bytes, recording_id: uuid.UUID, chunk_size: int) -> None:
        try:
            uploader(server, token, data, chunk_size, recording_id).upload()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(files[0], recording_ids[0], MIB)),
        threading.Thread(target=run, args=(files[1], recording_ids[1], 3 * MIB + 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    for data, recording_id in zip(files, recording_ids, strict=True):
        assert_stored(server, runtime, token, recording_id, data)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_mib", [1, 7])
def test_tuspy_uploads_48_mib(
    server: HttpServer, runtime: Runtime, token: str, chunk_mib: int
) -> None:
    recording_id = register(runtime, "skolotaja")
    data = media(48 * MIB)
    uploader(server, token, data, chunk_mib * MIB, recording_id).upload()
    assert_stored(server, runtime, token, recording_id, data)


@pytest.mark.slow
def test_tuspy_48_mib_interrupted_and_resumed(
    server: HttpServer, runtime: Runtime, token: str
) -> None:
    upload_interrupted_and_resumed(server, runtime, token, 48 * MIB, 7 * MIB, 21 * MIB)
