"""Uploads under faults: crashes between a part and its commit, racing requests, storage
failures, a stored object that fails verification, and the cleanup of abandoned uploads."""

from __future__ import annotations

import dataclasses
import io
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from storage_backends.base import BlobStore, Part, StoreUnavailable
from tests.support.recording_support import register
from tests.support.uploads_support import (
    MIB,
    create_url,
    head,
    media,
    patch,
    published,
    recording_row,
    stored_plaintext,
    teacher_token,
    tus_headers,
    upload_rows,
)
from vault.app import create_app
from vault.models import AuditEvent, Recording
from vault.services import lifecycle, part_writer, uploads
from vault.services.actors import Actor
from vault.services.errors import Conflict, Gone, StorageUnavailable
from vault.services.runtime import Runtime

# Every upload test waits for the verify passes it started (see the fixture).
pytestmark = pytest.mark.usefixtures("verify_passes_finished")


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs (not even except Exception)."""


class FaultyStore:
    """Delegates to a real store, with faults switched on by the test."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.crash_after_put: int | None = None
        self.unavailable_puts = 0
        self.unavailable_part: int | None = None
        self.crash_on_complete = False
        self.crash_before_complete = False
        self.corrupt_reads = False
        self.parts_written: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def min_part_size(self) -> int:
        return self.inner.min_part_size

    def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> Part:
        if self.unavailable_puts or self.unavailable_part == part_number:
            self.unavailable_puts = max(0, self.unavailable_puts - 1)
            self.unavailable_part = None
            raise StoreUnavailable("the store is down")
        part = self.inner.put_part(key, upload_id, part_number, data)
        self.parts_written.append(part_number)
        if self.crash_after_put == part_number:
            self.crash_after_put = None
            raise SimulatedCrash()
        return part

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        if self.crash_before_complete:
            self.crash_before_complete = False
            raise SimulatedCrash()
        self.inner.complete_multipart(key, upload_id, parts)
        if self.crash_on_complete:
            self.crash_on_complete = False
            raise SimulatedCrash()

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        pieces = self.inner.read_range(key, start, end)
        if not self.corrupt_reads:
            return pieces
        return self._flip_one_bit(pieces)

    @staticmethod
    def _flip_one_bit(pieces: Iterator[bytes]) -> Iterator[bytes]:
        for index, piece in enumerate(pieces):
            if index == 0 and len(piece) > 200:
                yield piece[:200] + bytes([piece[200] ^ 1]) + piece[201:]
            else:
                yield piece

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        self.inner.set_tags(key, tags)


@pytest.fixture
def faulty(runtime: Runtime) -> FaultyStore:
    return FaultyStore(runtime.store)


@pytest.fixture
def faulty_runtime(runtime: Runtime, faulty: FaultyStore) -> Runtime:
    return dataclasses.replace(runtime, store=faulty)


@pytest.fixture(autouse=True)
def token(runtime: Runtime) -> str:
    return teacher_token(runtime, "skolotaja")


def owner(runtime: Runtime, recording_id: uuid.UUID) -> Actor:
    recording = recording_row(runtime, recording_id)
    return Actor(recording.owner_id, frozenset({"teacher"}))


def start(runtime: Runtime, length: int) -> tuple[uuid.UUID, uuid.UUID]:
    recording_id = register(runtime, "skolotaja")
    state = uploads.create_upload(
        runtime,
        owner(runtime, recording_id),
        length,
        {"recording_id": str(recording_id)},
        runtime.clock(),
    )
    return recording_id, state.upload_id


def append(
    runtime: Runtime, recording_id: uuid.UUID, upload_id: uuid.UUID, offset: int, data: bytes
) -> uploads.UploadState:
    return uploads.append(
        runtime, owner(runtime, recording_id), upload_id, offset, io.BytesIO(data), runtime.clock()
    )


def actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_crash_after_a_part_loses_only_unacknowledged_bytes(
    runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore
) -> None:
    data = media(12 * MIB + 321)
    recording_id, upload_id = start(runtime, len(data))
    assert append(faulty_runtime, recording_id, upload_id, 0, data[: 2 * MIB]).offset == 2 * MIB
    faulty.crash_after_put = 1
    with pytest.raises(SimulatedCrash):
        append(faulty_runtime, recording_id, upload_id, 2 * MIB, data[2 * MIB : 9 * MIB])
    # Part 1 is in the store, but its state never committed: the offset is the last one
    # acknowledged, and the part is announced with its digest.
    (row,) = upload_rows(runtime, recording_id)
    assert row.offset == 2 * MIB
    assert [(p["number"], p["etag"]) for p in row.parts] == [(1, None)]

    # A retry that sends other bytes for the same offset would encrypt a chunk index twice
    # under the same key with different plaintext: refused, nothing written.
    other = bytearray(data[2 * MIB : 9 * MIB])
    other[MIB] ^= 0xFF
    written = list(faulty.parts_written)
    with pytest.raises(part_writer.ContentDiverged):
        append(faulty_runtime, recording_id, upload_id, 2 * MIB, bytes(other))
    assert faulty.parts_written == written
    assert upload_rows(runtime, recording_id)[0].offset == 2 * MIB
    assert "upload:rejected" in actions(runtime)

    # The same bytes again produce the same part, byte for byte, and the upload goes on.
    assert (
        append(faulty_runtime, recording_id, upload_id, 2 * MIB, data[2 * MIB : 9 * MIB]).offset
        == 9 * MIB
    )
    final = append(faulty_runtime, recording_id, upload_id, 9 * MIB, data[9 * MIB :])
    assert final.complete and final.recording_status == "processing"
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


def test_crash_while_sealing_the_last_parts(
    runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore
) -> None:
    data = media(6 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    faulty.crash_after_put = 2  # the last part, written after the final chunk was sealed
    with pytest.raises(SimulatedCrash):
        append(faulty_runtime, recording_id, upload_id, 0, data)
    # Both parts were announced, and written, but the process died before the commit that
    # acknowledges them: the retry regenerates them byte for byte from the saved state.
    (row,) = upload_rows(runtime, recording_id)
    assert row.offset == 0
    assert [(p["number"], p["etag"]) for p in row.parts] == [(1, None), (2, None)]
    assert recording_row(runtime, recording_id).status == "uploading"
    append(faulty_runtime, recording_id, upload_id, 0, data)
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


class GatedBody:
    """A request body that stalls after ``before`` bytes until the test opens the gate."""

    def __init__(self, data: bytes, before: int) -> None:
        self.data = data
        self.before = before
        self.position = 0
        self.reached = threading.Event()
        self.gate = threading.Event()

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        if self.position >= self.before and not self.gate.is_set():
            self.reached.set()
            assert self.gate.wait(timeout=60)
        end = self.position + len(buffer)
        if self.position < self.before:
            end = min(end, self.before)
        piece = self.data[self.position : end]
        buffer[: len(piece)] = piece
        self.position += len(piece)
        return len(piece)


def test_two_requests_racing_from_one_offset_cannot_both_continue(runtime: Runtime) -> None:
    data = media(8 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    slow = GatedBody(data[: 4 * MIB], before=2 * MIB)
    outcome: list[BaseException | uploads.UploadState] = []

    def run_slow() -> None:
        try:
            outcome.append(
                uploads.append(
                    runtime, owner(runtime, recording_id), upload_id, 0, slow, runtime.clock()
                )
            )
        except BaseException as exc:  # reported to the test thread below
            outcome.append(exc)

    thread = threading.Thread(target=run_slow)
    thread.start()
    assert slow.reached.wait(timeout=60)
    # Meanwhile a retry of the same request (same offset) is served in full.
    assert append(runtime, recording_id, upload_id, 0, data[: 3 * MIB]).offset == 3 * MIB
    slow.gate.set()
    thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)
    assert upload_rows(runtime, recording_id)[0].offset == 3 * MIB
    append(runtime, recording_id, upload_id, 3 * MIB, data[3 * MIB :])
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


def test_storage_down_during_a_patch_gets_503_and_resumes(
    settings: Any, runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore, token: str
) -> None:
    client: FlaskClient = create_app(settings, faulty_runtime).test_client()
    recording_id = register(runtime, "skolotaja")
    data = media(7 * MIB)
    url = create_url(client, token, recording_id, len(data))
    faulty.unavailable_puts = 1
    failed = patch(client, token, url, 0, data)
    assert failed.status_code == 503
    assert failed.headers["Retry-After"]
    assert failed.headers["Tus-Resumable"] == "1.0.0"
    assert head(client, token, url).headers["Upload-Offset"] == "0"
    assert patch(client, token, url, 0, data).status_code == 204
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


def test_a_failed_part_keeps_what_earlier_parts_acknowledged(
    runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore
) -> None:
    # Parts are written two at a time; when the second fails, the first still counts.
    data = media(17 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    faulty.unavailable_part = 2
    with pytest.raises(StorageUnavailable):
        append(faulty_runtime, recording_id, upload_id, 0, data)
    (row,) = upload_rows(runtime, recording_id)
    assert 4 * MIB < row.offset <= 6 * MIB
    assert [p["number"] for p in row.parts if p["etag"]] == [1]
    offset = row.offset
    append(faulty_runtime, recording_id, upload_id, offset, data[offset:])
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


def test_object_failing_verification_is_discarded(
    settings: Any, runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore, token: str
) -> None:
    client: FlaskClient = create_app(settings, faulty_runtime).test_client()
    recording_id = register(runtime, "skolotaja")
    data = media(300_000)
    url = create_url(client, token, recording_id, len(data))
    faulty.corrupt_reads = True
    # The object is in the store when the final PATCH is answered; the pass follows.
    response = patch(client, token, url, 0, data)
    assert response.status_code == 204
    recording = published(runtime, recording_id)
    assert recording.status == "failed"
    assert recording.object_key is None and recording.plaintext_sha256 is None
    assert upload_rows(runtime, recording_id) == []
    assert list(runtime.store.iter_keys("recordings/")) == []
    assert "upload:failed" in actions(runtime)


# The store dates its multipart writes by the machine's clock; the clean-up compares them.
@pytest.mark.machine_clock
def test_stale_uploads_are_cleaned_up_and_interrupted_passes_finished(
    runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore
) -> None:
    data = media(7 * MIB)
    abandoned, abandoned_upload = start(runtime, len(data))
    append(runtime, abandoned, abandoned_upload, 0, data[: 6 * MIB])
    # Every byte received, then the process died: after joining the parts, before it, and
    # before it with the store's lifecycle rule aborting the write since.
    small = media(1000)
    joined, joined_upload = start(runtime, len(small))
    faulty.crash_on_complete = True
    with pytest.raises(SimulatedCrash):
        append(faulty_runtime, joined, joined_upload, 0, small)
    unjoined, unjoined_upload = start(runtime, len(small))
    faulty.crash_before_complete = True
    with pytest.raises(SimulatedCrash):
        append(faulty_runtime, unjoined, unjoined_upload, 0, small)
    lost, lost_upload = start(runtime, len(small))
    faulty.crash_before_complete = True
    with pytest.raises(SimulatedCrash):
        append(faulty_runtime, lost, lost_upload, 0, small)
    lost_row = recording_row(runtime, lost)
    assert lost_row.object_key is not None
    (lost_write,) = [
        write
        for write in runtime.store.list_stale_multipart(runtime.clock() + timedelta(hours=1))
        if write.key == lost_row.object_key
    ]
    runtime.store.abort_multipart(lost_write.key, lost_write.upload_id)
    for recording_id in (joined, unjoined, lost):
        assert recording_row(runtime, recording_id).status == "processing"
    # A multipart write no row knows: a crash between starting it and committing the row.
    orphan_key = f"recordings/2025-2026/{uuid.uuid4()}"
    orphan = runtime.store.start_multipart(orphan_key, {"classification": "restricted"})
    # Finished uploads and active ones are left alone.
    finished, finished_upload = start(runtime, 1000)
    append(runtime, finished, finished_upload, 0, media(1000))
    assert published(runtime, finished).status == "available"
    active, active_upload = start(runtime, len(data))
    later = runtime.clock() + timedelta(hours=30)
    uploads.append(runtime, owner(runtime, active), active_upload, 0, io.BytesIO(data[:MIB]), later)

    planned = lifecycle.cleanup_stale_uploads(runtime, later, dry_run=True)
    kinds = lifecycle.CleanupKind
    assert {(item.kind, item.recording_id) for item in planned} == {
        (kinds.STALE_UPLOAD, abandoned),
        (kinds.FINISHED_UPLOAD, joined),
        (kinds.FINISHED_UPLOAD, unjoined),
        (kinds.FINISHED_UPLOAD, lost),
        (kinds.ORPHANED_WRITE, None),
    }
    assert recording_row(runtime, abandoned).status == "uploading"
    assert recording_row(runtime, joined).status == "processing"
    assert len(runtime.store.list_stale_multipart(later)) == 4

    done = lifecycle.cleanup_stale_uploads(runtime, later)
    assert sorted(item.kind for item in done) == sorted(item.kind for item in planned)
    for recording_id in (abandoned, lost):
        assert recording_row(runtime, recording_id).status == "failed"
        assert upload_rows(runtime, recording_id) == []
    for recording_id in (joined, unjoined):
        assert recording_row(runtime, recording_id).status == "available"
        assert stored_plaintext(runtime, recording_id) == small
    assert recording_row(runtime, finished).status == "available"
    assert recording_row(runtime, active).status == "uploading"
    pending = runtime.store.list_stale_multipart(later)
    assert [write.key for write in pending] == [recording_row(runtime, active).object_key]
    assert orphan not in {write.upload_id for write in pending}
    keys = set(runtime.store.iter_keys("recordings/"))
    assert keys == {recording_row(runtime, r).object_key for r in (finished, joined, unjoined)}
    events = actions(runtime)
    assert events.count("upload:expired") == 1
    assert events.count("upload:orphan_aborted") == 1
    assert events.count("upload:completed") == 3
    assert events.count("upload:failed") == 1
    assert lifecycle.cleanup_stale_uploads(runtime, later) == []


# The store dates its multipart writes by the machine's clock; the clean-up compares them.
@pytest.mark.machine_clock
def test_cleanup_keeps_a_tombstone_a_tombstone(runtime: Runtime) -> None:
    data = media(7 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    append(runtime, recording_id, upload_id, 0, data[: 6 * MIB])
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == recording_id).values(status="deleted")
        )
    later = runtime.clock() + timedelta(hours=30)
    (item,) = lifecycle.cleanup_stale_uploads(runtime, later)
    assert item.kind is lifecycle.CleanupKind.STALE_UPLOAD
    assert upload_rows(runtime, recording_id) == []
    assert recording_row(runtime, recording_id).status == "deleted"
    assert runtime.store.list_stale_multipart(later) == []


def test_tombstones_answer_410(client: FlaskClient, runtime: Runtime, token: str) -> None:
    recording_id = register(runtime, "skolotaja")
    url = create_url(client, token, recording_id, 1000)
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == recording_id).values(status="deleted")
        )
    assert head(client, token, url).status_code == 410
    assert patch(client, token, url, 0, media(1000)).status_code == 410
    assert client.delete(url, headers=tus_headers(token)).status_code == 410


def test_year_shredded_during_an_upload(runtime: Runtime) -> None:
    data = media(2000)
    recording_id, upload_id = start(runtime, len(data))
    school_year = recording_row(runtime, recording_id).school_year
    with runtime.sessions() as session, session.begin():
        runtime.keyring.destroy_year_key(session, school_year, runtime.clock())
    with pytest.raises(Gone):
        append(runtime, recording_id, upload_id, 0, data)
