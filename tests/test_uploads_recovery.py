"""Uploads under faults: crashes between a part and its commit, racing requests, storage
failures, a stored object that fails verification, and the cleanup of abandoned uploads."""

from __future__ import annotations

import dataclasses
import io
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from storage_backends.base import BlobStore, Part, StoreUnavailable
from tests.support.clock import TestClock
from tests.support.people import PASSWORD, Person, add_person, signed_in
from tests.support.recording_support import register
from tests.support.uploads_support import (
    MIB,
    create,
    create_url,
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
from vault.app import create_app
from vault.models import AuditEvent, Recording, Upload
from vault.services import access, account_admin, lifecycle, part_writer, uploads, year_end
from vault.services.actors import OPERATOR, Actor
from vault.services.errors import Conflict, Gone, StorageUnavailable, UploadBusy
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
        self.refuse_removals = False
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

    def abort_multipart(self, key: str, upload_id: str) -> None:
        if self.refuse_removals:
            raise StoreUnavailable("the store is down")
        self.inner.abort_multipart(key, upload_id)

    def delete(self, key: str) -> None:
        if self.refuse_removals:
            raise StoreUnavailable("the store is down")
        self.inner.delete(key)


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


def append_in_background(
    runtime: Runtime, recording_id: uuid.UUID, upload_id: uuid.UUID, body: uploads.BodyReader
) -> tuple[threading.Thread, list[BaseException | uploads.UploadState]]:
    """A PATCH from offset 0 of ``body`` on a thread of its own; its answer or its exception
    lands in the returned list once the thread ends."""
    outcome: list[BaseException | uploads.UploadState] = []

    def run() -> None:
        try:
            outcome.append(
                uploads.append(
                    runtime, owner(runtime, recording_id), upload_id, 0, body, runtime.clock()
                )
            )
        except BaseException as exc:  # reported to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_two_requests_racing_from_one_offset_cannot_both_continue(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry of the same request while the first has gone silent (its client dropped the
    connection, the server has not noticed yet) takes the upload over; the first stops."""
    monkeypatch.setattr(uploads, "HOLD_SILENCE_SECONDS", 0.3)
    data = media(8 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    slow = GatedBody(data[: 4 * MIB], before=2 * MIB)
    thread, outcome = append_in_background(runtime, recording_id, upload_id, slow)
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


class TricklingBody:
    """A request body that keeps arriving, 64 KiB every 20 ms, until the test stops it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.started = threading.Event()
        self.stop = threading.Event()

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        if self.position:
            self.started.set()
            if self.stop.wait(timeout=0.02):
                return 0
        piece = self.data[self.position : self.position + min(len(buffer), 64 * 1024)]
        buffer[: len(piece)] = piece
        self.position += len(piece)
        return len(piece)


def test_a_request_still_receiving_keeps_its_upload(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second client sending the same upload while the first is still receiving gets 423
    (UploadBusy), and a HEAD meanwhile answers the committed offset instead of a refusal."""
    monkeypatch.setattr(uploads, "HOLD_WAIT_SECONDS", 0.6)
    monkeypatch.setattr(uploads, "HOLD_BEAT_SECONDS", 0.05)
    data = media(8 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    live = TricklingBody(data)
    thread, outcome = append_in_background(runtime, recording_id, upload_id, live)
    assert live.started.wait(timeout=60)
    with pytest.raises(UploadBusy) as refused:
        append(runtime, recording_id, upload_id, 0, data[: 3 * MIB])
    assert refused.value.retry_after_seconds
    state = uploads.status(runtime, owner(runtime, recording_id), upload_id, runtime.clock())
    assert state.offset < len(data)
    live.stop.set()
    thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], uploads.UploadState)
    # The holder ended: the next request is served at once, from where it ended.
    ended = outcome[0].offset
    assert ended == live.position
    state = uploads.status(runtime, owner(runtime, recording_id), upload_id, runtime.clock())
    assert state.offset == ended
    append(runtime, recording_id, upload_id, ended, data[ended:])
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data


def test_a_dead_holder_is_not_waited_for(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while it held an upload leaves its hold behind: the next HEAD and
    PATCH wait only until its silence shows it is dead, then the PATCH takes over and frees
    the upload at its end."""
    monkeypatch.setattr(uploads, "HOLD_SILENCE_SECONDS", 0.2)
    data = media(6 * MIB)
    recording_id, upload_id = start(runtime, len(data))
    with runtime.sessions() as session, session.begin():
        session.execute(update(Upload).where(Upload.id == upload_id).values(hold_beat=7))
    state = uploads.status(runtime, owner(runtime, recording_id), upload_id, runtime.clock())
    assert state.offset == 0
    append(runtime, recording_id, upload_id, 0, data[: 5 * MIB + 1])
    assert upload_rows(runtime, recording_id)[0].hold_beat is None
    append(runtime, recording_id, upload_id, 5 * MIB + 1, data[5 * MIB + 1 :])
    assert published(runtime, recording_id).status == "available"


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


# -- a new upload on a failed recording ----------------------------------------------------

# What the teacher registered: a new upload after a failed one keeps every field.
REGISTRATION = (
    "owner_id",
    "title",
    "subject",
    "class_group",
    "lesson_date",
    "platform",
    "purpose",
    "aim",
    "visible",
    "subjects_informed_method",
    "subjects_informed_at",
    "third_party_warning",
    "device",
    "request_id",
    "school_year",
    "retain_until",
)
NOT_MEDIA = b"Dear parents, the lesson plan for next week is attached.\n" * 100
# Every multipart write the store holds, whenever it started.
EVER = datetime.max.replace(tzinfo=UTC)


def registration_of(runtime: Runtime, recording_id: uuid.UUID) -> dict[str, object]:
    row = recording_row(runtime, recording_id)
    return {name: getattr(row, name) for name in REGISTRATION}


def refused_file(client: FlaskClient, token: str, recording_id: uuid.UUID) -> str:
    """Upload a file that is not a recording; the recording fails. Returns the upload URL."""
    url = create_url(client, token, recording_id, len(NOT_MEDIA))
    assert patch(client, token, url, 0, NOT_MEDIA).status_code == 415
    return url


def test_the_owner_uploads_again_on_the_same_registration(
    app: Flask, client: FlaskClient, runtime: Runtime, token: str
) -> None:
    recording_id = register(runtime, "skolotaja")
    registered = registration_of(runtime, recording_id)
    first = refused_file(client, token, recording_id)
    assert recording_row(runtime, recording_id).status == "failed"

    # Nobody else may start the new upload: not the director, whose register lists the
    # recording, nor another teacher; each attempt is a denial on the record.
    director = add_person(runtime, "direktore", "director")
    director_token = account_admin.issue_token(runtime, "direktore", "t", "1d", runtime.clock())
    colleague = teacher_token(runtime, "kolega")
    denials = actions(runtime).count("access:denied")
    assert create(client, director_token, recording_id, 1000).status_code == 403
    assert create(client, colleague, recording_id, 1000).status_code == 403
    director_browser = signed_in(app, director)
    assert director_browser.get(f"/recordings/{recording_id}/upload").status_code == 403
    assert actions(runtime).count("access:denied") == denials + 3
    assert recording_row(runtime, recording_id).status == "failed"
    assert upload_rows(runtime, recording_id) == []

    data = media(3 * MIB + 17)
    second = create_url(client, token, recording_id, len(data))
    assert second != first
    assert recording_row(runtime, recording_id).status == "uploading"
    # The refused attempt is over for good: its URL leads nowhere.
    assert head(client, token, first).status_code == 404
    assert patch(client, token, first, 0, data).status_code == 404
    assert patch(client, colleague, second, 0, data).status_code == 403
    send(client, token, second, data, [MIB])

    recording = published(runtime, recording_id)
    assert recording.id == recording_id and recording.status == "available"
    assert registration_of(runtime, recording_id) == registered
    assert stored_plaintext(runtime, recording_id) == data
    events = actions(runtime)
    assert events.count("upload:rejected") == 1
    assert events.count("upload:created") == 2
    assert events.count("upload:completed") == 1
    # Once available, the recording takes no further upload.
    assert create(client, token, recording_id, len(data)).status_code == 409


def test_a_new_upload_removes_what_failed_attempts_left_in_the_store(
    settings: Any, runtime: Runtime, faulty_runtime: Runtime, faulty: FaultyStore, token: str
) -> None:
    client: FlaskClient = create_app(settings, faulty_runtime).test_client()
    recording_id = register(runtime, "skolotaja")
    key = f"recordings/{recording_row(runtime, recording_id).school_year}/{recording_id}"

    def pending() -> list[str]:
        return [write.upload_id for write in runtime.store.list_stale_multipart(EVER)]

    # The store is down while a refused file is discarded: its multipart write stays.
    faulty.refuse_removals = True
    refused_file(client, token, recording_id)
    (left_write,) = pending()
    # While the store cannot remove it, no new upload starts, and nothing changes.
    assert create(client, token, recording_id, 300_000).status_code == 503
    assert recording_row(runtime, recording_id).status == "failed"
    assert upload_rows(runtime, recording_id) == []

    faulty.refuse_removals = False
    corrupt = media(300_000)
    url = create_url(client, token, recording_id, len(corrupt))
    (row,) = upload_rows(runtime, recording_id)
    assert pending() == [row.multipart_id] and left_write != row.multipart_id

    # Its object fails the verify pass while the store is down again: the object stays.
    faulty.corrupt_reads = True
    faulty.refuse_removals = True
    assert patch(client, token, url, 0, corrupt).status_code == 204
    assert published(runtime, recording_id).status == "failed"
    assert list(runtime.store.iter_keys("recordings/")) == [key]

    faulty.corrupt_reads = False
    faulty.refuse_removals = False
    data = media(400_000)
    url = create_url(client, token, recording_id, len(data))
    assert list(runtime.store.iter_keys("recordings/")) == []
    (row,) = upload_rows(runtime, recording_id)
    assert pending() == [row.multipart_id]
    assert patch(client, token, url, 0, data).status_code == 204
    assert published(runtime, recording_id).status == "available"
    assert stored_plaintext(runtime, recording_id) == data
    assert pending() == []


def test_a_failed_recording_of_a_closed_year_takes_no_new_upload(
    app: Flask, client: FlaskClient, runtime: Runtime, token: str, clock: TestClock
) -> None:
    recording_id = register(runtime, "skolotaja")
    refused_file(client, token, recording_id)
    owner_page = signed_in(app, Person("skolotaja", PASSWORD, None, (), clock))
    upload_link = f'href="/recordings/{recording_id}/upload"'
    assert upload_link in owner_page.get(f"/recordings/{recording_id}").get_data(as_text=True)
    school_year = recording_row(runtime, recording_id).school_year
    year_end.close_now(runtime, school_year, runtime.clock(), actor=OPERATOR)
    # The page asks the policy, so it no longer offers what would answer 410.
    assert upload_link not in owner_page.get(f"/recordings/{recording_id}").get_data(as_text=True)
    with runtime.sessions() as session:
        assert access.year_closed(session, school_year)
    assert create(client, token, recording_id, 300_000).status_code == 410
    assert recording_row(runtime, recording_id).status == "failed"
    assert upload_rows(runtime, recording_id) == []
