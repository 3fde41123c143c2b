"""Range answers compared with the plaintext: every range of a small object with 16-byte
chunks, suffix and open ranges, 416, If-Range, several ranges, HEAD; and on a 64 MiB object a
request at 99 % reads only the covering chunks plus the header and the final chunk."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any, cast

import pytest
from flask import Flask

from storage_backends.base import BlobStore
from tests.support.people import add_person
from tests.support.recording_support import register, sample_media, store_plaintext
from tests.support.streaming_support import Browser, School, browser, issue_order, make_school
from vault import crypto
from vault.app import create_app
from vault.models import Recording
from vault.services import media, ranges
from vault.services.errors import RangeNotSatisfiable
from vault.services.runtime import Runtime

SIZE = 200
CHUNK = 16


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime, size=SIZE, chunk_size=CHUNK)


class MemoryReads:
    """The object read once, then served from memory: exhaustive loops need no round trips."""

    def __init__(self, store: BlobStore, key: str) -> None:
        self._store = store
        self._data = b"".join(store.read_range(key))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        yield self._data[start : len(self._data) if end is None else end]


class CountingStore:
    """Passes every call through and notes each ranged read."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.reads: list[tuple[int, int | None]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self._lock:
            self.reads.append((start, end))
        return self._store.read_range(key, start, end)


def opened_media(runtime: Runtime, school: School) -> tuple[media.OpenedMedia, Recording]:
    with runtime.sessions() as session:
        recording = session.get(Recording, school.recording_id)
        assert recording is not None and recording.object_key is not None
        store = cast(BlobStore, MemoryReads(runtime.store, recording.object_key))
        return media.open_media(session, runtime.keyring, store, recording), recording


def test_every_range_of_a_small_object_decrypts_to_the_plaintext(
    runtime: Runtime, school: School
) -> None:
    opened, recording = opened_media(runtime, school)
    validators = ranges.validators_of(recording)
    plaintext = school.plaintext
    assert opened.size == SIZE
    for first in range(SIZE):
        for last in range(first, SIZE + 3):
            plan = ranges.plan_range(f"bytes={first}-{last}", None, SIZE, validators)
            assert (plan.status, plan.first, plan.end) == (206, first, min(last + 1, SIZE))
            assert plan.content_range == f"bytes {first}-{plan.end - 1}/{SIZE}"
            assert b"".join(opened.stream(plan.first, plan.end)) == plaintext[first : last + 1]
    for first in range(SIZE):
        plan = ranges.plan_range(f"bytes={first}-", None, SIZE, validators)
        assert b"".join(opened.stream(plan.first, plan.end)) == plaintext[first:]
    for suffix in range(1, SIZE + 5):
        plan = ranges.plan_range(f"bytes=-{suffix}", None, SIZE, validators)
        assert plan.status == 206
        assert b"".join(opened.stream(plan.first, plan.end)) == plaintext[-suffix:]


@pytest.mark.parametrize(
    "header",
    [
        "bytes=200-",
        "bytes=200-300",
        "bytes=1000-",
        "bytes=-0",
        "bytes=5-2",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes=+1-2",
        "bytes=0x10-20",
        "bytes=200-,300-400,-0",
        "bytes=" + ",".join(["0-1"] * 65),
    ],
)
def test_invalid_or_unsatisfiable_ranges_are_refused(header: str) -> None:
    validators = ranges.Validators('"x"', None)
    with pytest.raises(RangeNotSatisfiable):
        ranges.plan_range(header, None, SIZE, validators)


def test_an_empty_representation_satisfies_no_range() -> None:
    validators = ranges.Validators('"x"', None)
    for header in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        with pytest.raises(RangeNotSatisfiable):
            ranges.plan_range(header, None, 0, validators)
    assert ranges.plan_range(None, None, 0, validators).status == 200


def request(viewer: Browser, url: str, **headers: str) -> Any:
    return viewer.client.get(url, headers=headers)


# Chunk boundaries of 16-byte chunks and the ends of the object: the positions worth probing
# over HTTP (every position is probed above, without HTTP).
BOUNDARIES = [0, 1, 15, 16, 17, 47, 48, 111, 112, 113, 191, 192, 198, 199]


def test_ranges_over_http_at_the_chunk_boundaries(app: Flask, school: School) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    plaintext = school.plaintext
    for first in BOUNDARIES:
        for last in [b for b in BOUNDARIES if b >= first] + [SIZE + 10]:
            response = request(viewer, url, Range=f"bytes={first}-{last}")
            end = min(last, SIZE - 1)
            assert response.status_code == 206
            assert response.headers["Content-Range"] == f"bytes {first}-{end}/{SIZE}"
            assert response.headers["Content-Length"] == str(end - first + 1)
            assert response.get_data() == plaintext[first : end + 1]
    for first in [*BOUNDARIES, SIZE - 1]:
        response = request(viewer, url, Range=f"bytes={first}-")
        assert response.status_code == 206
        assert response.get_data() == plaintext[first:]
    for suffix in (1, 15, 16, 17, 199, 200, 201, 5000):
        response = request(viewer, url, Range=f"bytes=-{suffix}")
        assert response.status_code == 206
        assert response.get_data() == plaintext[-suffix:]
        assert response.headers["Content-Range"].endswith(f"/{SIZE}")
    whole = request(viewer, url)
    assert whole.status_code == 200 and whole.get_data() == plaintext
    assert "Content-Range" not in whole.headers


def test_416_carries_the_length_and_the_same_cache_rules(app: Flask, school: School) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    for header in ("bytes=200-", "bytes=200-250", "bytes=-0", "bytes=9-3", "bytes=x-y"):
        response = request(viewer, url, Range=header)
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.mimetype == "application/problem+json"


def test_other_units_are_ignored_and_several_ranges_get_the_first_satisfiable(
    app: Flask, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    plaintext = school.plaintext
    ignored = request(viewer, url, Range="items=0-5")
    assert ignored.status_code == 200 and ignored.get_data() == plaintext
    for header, first, end in [
        ("bytes=0-1,5-9", 0, 2),
        ("bytes=5-9, 0-1", 5, 10),
        ("bytes=500-600,20-29", 20, 30),
        ("bytes=300-,-10", 190, 200),
        ("bytes=,,16-31,", 16, 32),
    ]:
        response = request(viewer, url, Range=header)
        assert response.status_code == 206, header
        assert response.mimetype == "video/mp4"
        assert response.headers["Content-Range"] == f"bytes {first}-{end - 1}/{SIZE}"
        assert response.get_data() == plaintext[first:end]


def test_if_range_matches_strongly_or_the_whole_file_is_sent(
    app: Flask, runtime: Runtime, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    plaintext = school.plaintext
    head = request(viewer, url)
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    with runtime.sessions() as session:
        recording = session.get(Recording, school.recording_id)
        assert recording is not None and recording.available_at is not None
        earlier = format_datetime(recording.available_at - timedelta(days=1), usegmt=True)
    cases = [
        (etag, 206),
        (modified, 206),
        ('"another"', 200),
        ("W/" + etag, 200),
        (earlier, 200),
        ("not a date", 200),
        ("", 200),
    ]
    for validator, status in cases:
        response = request(viewer, url, Range="bytes=16-47", **{"If-Range": validator})
        assert response.status_code == status, validator
        expected = plaintext[16:48] if status == 206 else plaintext
        assert response.get_data() == expected
    # If-Range is evaluated first: a stale validator gets 200 even for a bad range.
    stale = request(viewer, url, Range="bytes=500-", **{"If-Range": '"another"'})
    assert stale.status_code == 200


def test_head_answers_like_get_without_a_body(app: Flask, school: School) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    ranged = viewer.client.head(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.headers["Content-Length"] == "10"
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{SIZE}"
    assert ranged.get_data() == b""
    whole = viewer.client.head(url)
    assert whole.status_code == 200 and whole.headers["Content-Length"] == str(SIZE)
    assert whole.headers["Accept-Ranges"] == "bytes"


def test_a_seek_to_99_percent_of_64_mib_reads_only_the_covering_chunks(
    settings: Any, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    designated = add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    add_person(runtime, "direktore", "director", name="Ilze Ozola")
    recording_id = register(runtime, "skolotaja")
    size = 64 * 1024 * 1024
    plaintext = sample_media(size)
    store_plaintext(runtime, recording_id, plaintext)
    issue_order(runtime, ["metodikis"], [recording_id], "9/2026")
    counting = CountingStore(runtime.store)
    app = create_app(settings, dataclasses.replace(runtime, store=cast(BlobStore, counting)))
    viewer = browser(app, designated)
    url = viewer.stream_url(recording_id)

    first = int(size * 0.99)
    last = first + 512 * 1024 - 1
    counting.reads.clear()
    response = request(viewer, url, Range=f"bytes={first}-{last}")
    assert response.status_code == 206
    assert response.get_data() == plaintext[first : last + 1]

    chunk = crypto.DEFAULT_CHUNK_SIZE
    cstart, cend = crypto.ciphertext_range(first, last + 1, plaintext_length=size, chunk_size=chunk)
    final_offset = crypto.HEADER_SIZE + (size // chunk - 1) * (chunk + crypto.TAG_SIZE)
    final_length = chunk + crypto.TAG_SIZE
    header, *rest = counting.reads
    assert header == (0, crypto.HEADER_SIZE)
    assert (final_offset, final_offset + final_length + 1) in rest
    covering = [r for r in rest if r != (final_offset, final_offset + final_length + 1)]
    assert covering and all(start >= cstart for start, _ in covering)
    assert all(end is not None and end <= cend for _, end in covering)
    read = sum((end or 0) - start for start, end in counting.reads)
    assert read <= crypto.HEADER_SIZE + final_length + 1 + (cend - cstart)
    assert read < size // 50
