"""No plaintext at rest: no byte of an upload reaches a disk, a database row or the store
unencrypted, not even the carry-over between two requests, and never a temporary file.

A file made of a unique marker is uploaded in 1-byte, odd-sized and large requests, and after
each stage every file of the instance folder and the store (for S3: every file SeaweedFS
keeps, so in-progress parts too, and every object in the bucket) and every text or binary
column of the database are searched for the marker.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import storage_kind
from tests.support.recording_support import MP4_HEADER, register
from tests.support.seaweed import SeaweedServer
from tests.support.uploads_support import (
    MIB,
    create_url,
    database_rows_containing,
    files_containing,
    patch,
    published,
    stored_plaintext,
    teacher_token,
)
from vault.services.runtime import Runtime
from vault.settings import Settings

# Every upload test waits for the verify passes it started (see the fixture).
pytestmark = pytest.mark.usefixtures("verify_passes_finished")


@pytest.fixture
def no_temporary_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything spools a request body to a temporary file."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a temporary file was requested during an upload")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)


class AtRestScanner:
    """Looks for the marker everywhere an upload could leave bytes behind."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        tmp_path: Path,
        seaweed: SeaweedServer | None,
    ) -> None:
        self.runtime = runtime
        self.roots = [settings.instance_dir]
        if settings.storage_url.startswith("file://"):
            self.roots.append(Path(settings.storage_url.removeprefix("file://")))
        self.seaweed = seaweed
        if seaweed is not None:
            self.roots.append(seaweed.data_dir)
        self.bucket = settings.storage_url.removeprefix("s3://").split("?")[0].split("/")[0]

    def places_holding(self, marker: bytes) -> list[str]:
        hits = [str(path) for root in self.roots for path in files_containing(root, marker)]
        hits += [f"db:{column}" for column in database_rows_containing(self.runtime, marker)]
        if self.seaweed is not None:
            client = self.seaweed.client()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for item in page.get("Contents", []):
                    body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                    if marker in body:
                        hits.append(f"s3:{item['Key']}")
        return hits


@pytest.fixture
def scanner(
    runtime: Runtime, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> AtRestScanner:
    seaweed = request.getfixturevalue("s3_server") if storage_kind() == "s3" else None
    return AtRestScanner(runtime, settings, tmp_path, seaweed)


def test_the_scanner_finds_plaintext_where_it_looks(
    scanner: AtRestScanner, settings: Settings
) -> None:
    marker = f"CONTROL-{uuid.uuid4().hex}".encode()
    (settings.instance_dir / "control.bin").write_bytes(b"x" * 100 + marker)
    assert scanner.places_holding(marker) == [str(settings.instance_dir / "control.bin")]
    if scanner.seaweed is not None:
        scanner.seaweed.client().put_object(
            Bucket=scanner.bucket, Key="control/plain", Body=marker * 3
        )
        hits = scanner.places_holding(marker)
        assert "s3:control/plain" in hits
        # The object is also found in SeaweedFS's own files, where in-progress parts live.
        assert any(hit.startswith(str(scanner.seaweed.data_dir)) for hit in hits)
        scanner.seaweed.client().delete_object(Bucket=scanner.bucket, Key="control/plain")
    (settings.instance_dir / "control.bin").unlink()


def test_no_plaintext_at_rest_during_and_after_an_upload(
    client: FlaskClient,
    runtime: Runtime,
    scanner: AtRestScanner,
    no_temporary_files: None,
) -> None:
    token = teacher_token(runtime, "skolotaja")
    recording_id = register(runtime, "skolotaja")
    marker = f"LESSON-PLAINTEXT-{uuid.uuid4().hex}".encode()
    body = marker * ((6 * MIB + 7_777) // len(marker) + 1)
    data = (MP4_HEADER + body)[: 6 * MIB + 7_777]
    url = create_url(client, token, recording_id, len(data))
    offset = 0

    def send(size: int) -> None:
        nonlocal offset
        response = patch(client, token, url, offset, data[offset : offset + size])
        assert response.status_code == 204, response.get_data(as_text=True)
        offset += size
        assert int(response.headers["Upload-Offset"]) == offset

    def assert_nowhere(stage: str) -> None:
        assert scanner.places_holding(marker) == [], stage

    # The first request carries the magic bytes and the first marker: the marker now lives
    # only in the encryptor's carry-over, which is sealed in the database row.
    send(len(MP4_HEADER) + len(marker) + 5)
    assert_nowhere("after the first request")
    for _ in range(len(marker) * 2):
        send(1)
    assert_nowhere("after 1-byte requests")
    for size in (3, 17, 4_099, 65_535, 65_537, 131_071):
        send(size)
        assert_nowhere(f"after a {size}-byte request")
    # Past the first 5 MiB part: a part in the store plus a ciphertext tail in the row.
    send(5 * MIB + 3)
    assert_nowhere("after a part was written")
    send(len(data) - offset)
    assert published(runtime, recording_id).status == "available"
    assert_nowhere("after completion")
    # The marker really is in the file: what is stored is its ciphertext.
    plaintext = stored_plaintext(runtime, recording_id)
    assert plaintext == data and marker in plaintext


def test_no_plaintext_left_by_a_discarded_or_terminated_upload(
    client: FlaskClient, runtime: Runtime, scanner: AtRestScanner
) -> None:
    token = teacher_token(runtime, "skolotaja")
    marker = f"TERMINATED-{uuid.uuid4().hex}".encode()
    data = MP4_HEADER + marker * 1000
    recording_id = register(runtime, "skolotaja")
    url = create_url(client, token, recording_id, len(data))
    assert patch(client, token, url, 0, data[:20_000]).status_code == 204
    assert (
        client.delete(
            url, headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        ).status_code
        == 204
    )
    text_marker = f"NOT-A-VIDEO-{uuid.uuid4().hex}".encode()
    text_recording = register(runtime, "skolotaja")
    text = text_marker * 100
    text_url = create_url(client, token, text_recording, len(text))
    assert patch(client, token, text_url, 0, text).status_code == 415
    check: Callable[[bytes], list[str]] = scanner.places_holding
    assert check(marker) == []
    assert check(text_marker) == []
