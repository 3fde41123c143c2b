"""The BlobStore contract: every test here runs on the local directory and on S3 (SeaweedFS)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from storage_backends.base import (
    S3_MIN_PART_SIZE,
    BlobStore,
    InvalidKey,
    InvalidTags,
    LifecycleRules,
    ObjectInfo,
    ObjectNotFound,
    Part,
    StorageConflict,
    StoreUnavailable,
    YearExpiry,
)
from storage_backends.url import open_store
from tests.support.clock import MachineClock

# The store dates what it keeps by the machine's clock (file times, S3's Initiated), and
# so does whatever reads them back: these comparisons need that clock, not the test clock.
machine_clock = MachineClock()

MiB = 1024 * 1024
TAGS = {"classification": "restricted", "school-year": "2025-2026", "retain-until": "2026-05-29"}
KEY = "recordings/2025-2026/6f1c2a8e-8a57-4a3c-9d0e-2b7f3c1d9e41"


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.read_range(key, start, end))


def write_multipart(store: BlobStore, key: str, chunks: list[bytes]) -> list[Part]:
    upload_id = store.start_multipart(key, TAGS)
    parts = [store.put_part(key, upload_id, n, data) for n, data in enumerate(chunks, 1)]
    # Parts travel through the database between requests: they must survive JSON.
    stored = json.loads(json.dumps([part.to_json() for part in parts]))
    restored = [Part.from_json(item) for item in stored]
    assert restored == parts
    store.complete_multipart(key, upload_id, restored)
    return parts


def test_the_store_satisfies_the_protocol(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)
    assert store.min_part_size == S3_MIN_PART_SIZE
    store.check()


def test_three_part_write_reads_back_identical(store: BlobStore) -> None:
    chunks = [payload(5 * MiB, 1), payload(5 * MiB, 2), payload(1024, 3)]
    data = b"".join(chunks)
    write_multipart(store, KEY, chunks)

    assert store.head(KEY) == ObjectInfo(size=len(data), tags=TAGS)
    assert read_all(store, KEY) == data
    assert list(store.iter_keys()) == [KEY]
    assert store.list_stale_multipart(machine_clock() + timedelta(hours=1)) == []

    size = len(data)
    edges = [
        (0, 1),
        (size - 1, size),
        (5 * MiB - 1, 5 * MiB + 1),  # across the first part boundary
        (8 * MiB - 3, 8 * MiB + 3),  # across the first S3 read window
        (10 * MiB - 10, size),  # into the short last part
        (0, size),
        (123, None),
    ]
    rng = random.Random(42)
    randoms = []
    for _ in range(12):
        start = rng.randrange(size)
        randoms.append((start, rng.randrange(start, size + 1)))
    for start, end in edges + randoms:
        assert read_all(store, KEY, start, end) == data[start:end], (start, end)


def test_ranges_are_clamped_to_the_object(store: BlobStore) -> None:
    data = payload(1000)
    store.put(KEY, data, TAGS)
    assert read_all(store, KEY, 990, 5000) == data[990:]
    assert read_all(store, KEY, 1000) == b""
    assert read_all(store, KEY, 4000, 5000) == b""
    assert read_all(store, KEY, 10, 10) == b""
    with pytest.raises(ValueError, match="start"):
        store.read_range(KEY, -1)
    with pytest.raises(ValueError, match="before start"):
        store.read_range(KEY, 10, 5)


def test_empty_object(store: BlobStore) -> None:
    store.put(KEY, b"", {})
    assert store.head(KEY).size == 0
    assert read_all(store, KEY) == b""


def test_put_replaces_the_object_and_its_tags(store: BlobStore) -> None:
    store.put(KEY, b"first", TAGS)
    store.put(KEY, b"second", {"classification": "restricted"})
    assert read_all(store, KEY) == b"second"
    assert store.get_tags(KEY) == {"classification": "restricted"}


def test_a_missing_object_is_not_found_before_any_byte(store: BlobStore) -> None:
    missing = "recordings/2025-2026/missing"
    # Raised by the call, not on first iteration, so a caller can still pick its response.
    with pytest.raises(ObjectNotFound):
        store.read_range(missing)
    with pytest.raises(ObjectNotFound):
        store.read_range(missing, 5, 5)
    with pytest.raises(ObjectNotFound):
        store.head(missing)
    with pytest.raises(ObjectNotFound):
        store.get_tags(missing)
    with pytest.raises(ObjectNotFound):
        store.set_tags(missing, TAGS)


def test_an_aborted_write_leaves_nothing_listable(store: BlobStore) -> None:
    upload_id = store.start_multipart(KEY, TAGS)
    part = store.put_part(KEY, upload_id, 1, payload(5 * MiB))
    store.abort_multipart(KEY, upload_id)

    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    assert list(store.iter_keys()) == []
    assert store.list_stale_multipart(machine_clock() + timedelta(hours=1)) == []
    with pytest.raises(StorageConflict):
        store.complete_multipart(KEY, upload_id, [part])
    with pytest.raises(StorageConflict):
        store.put_part(KEY, upload_id, 2, b"late")
    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    store.abort_multipart(KEY, upload_id)  # aborting twice is not an error


def test_tags_round_trip(store: BlobStore) -> None:
    store.put(KEY, b"ciphertext", TAGS)
    assert store.get_tags(KEY) == TAGS
    assert store.head(KEY).tags == TAGS

    moved = {**TAGS, "school-year": "2026-2027", "retain-until": "2027-05-28"}
    store.set_tags(KEY, moved)
    assert store.get_tags(KEY) == moved
    store.set_tags(KEY, {})
    assert store.get_tags(KEY) == {}
    assert read_all(store, KEY) == b"ciphertext"  # tagging never touches the bytes


def test_multipart_tags_apply_to_the_completed_object(store: BlobStore) -> None:
    write_multipart(store, KEY, [b"only part"])
    assert store.get_tags(KEY) == TAGS


@pytest.mark.parametrize(
    "tags",
    [
        {f"t{n}": "v" for n in range(11)},
        {"": "v"},
        {"k" * 129: "v"},
        {"k": "v" * 257},
        {"k": "semi;colon"},
        {"k\n": "v"},
    ],
)
def test_invalid_tags_are_rejected(store: BlobStore, tags: dict[str, str]) -> None:
    with pytest.raises(InvalidTags):
        store.put(KEY, b"x", tags)
    with pytest.raises(InvalidTags):
        store.start_multipart(KEY, tags)
    assert list(store.iter_keys()) == []


def test_lifecycle_rules_read_back(store: BlobStore) -> None:
    rules = LifecycleRules(
        years=(
            YearExpiry("2025-2026", date(2026, 5, 29)),
            YearExpiry("2024-2025", date(2025, 5, 30)),
        ),
        abort_incomplete_after_days=3,
        noncurrent_version_days=30,
    )
    store.ensure_ready(rules)
    # Neither a fresh bucket nor a directory keeps versions, so that rule does not apply.
    expected = replace(rules, noncurrent_version_days=None)
    assert store.get_lifecycle_rules() == expected

    store.ensure_ready(rules)  # idempotent
    assert store.get_lifecycle_rules() == expected

    next_year = LifecycleRules(years=(YearExpiry("2025-2026", date(2026, 6, 1)),))
    store.ensure_ready(next_year)
    assert store.get_lifecycle_rules() == replace(next_year, noncurrent_version_days=None)

    store.ensure_ready(LifecycleRules(abort_incomplete_after_days=None))
    assert store.get_lifecycle_rules() == LifecycleRules(
        abort_incomplete_after_days=None, noncurrent_version_days=None
    )


def test_ensure_ready_keeps_existing_objects(store: BlobStore) -> None:
    store.put(KEY, b"kept", TAGS)
    store.ensure_ready(LifecycleRules())
    assert read_all(store, KEY) == b"kept"


def test_a_stale_write_is_found_and_cleaned(store: BlobStore) -> None:
    before = machine_clock() - timedelta(seconds=5)
    other = "recordings/2025-2026/other"
    first = store.start_multipart(KEY, TAGS)
    store.put_part(KEY, first, 1, b"abandoned ciphertext")
    second = store.start_multipart(other, TAGS)
    after = machine_clock() + timedelta(seconds=5)

    assert store.list_stale_multipart(before) == []
    stale = sorted(store.list_stale_multipart(after), key=lambda write: write.key)
    assert [(write.key, write.upload_id) for write in stale] == [(KEY, first), (other, second)]
    for write in stale:
        assert before < write.started < after
        assert write.started.tzinfo is not None
        store.abort_multipart(write.key, write.upload_id)

    assert store.list_stale_multipart(after) == []
    assert list(store.iter_keys()) == []
    with pytest.raises(ValueError, match="timezone"):
        store.list_stale_multipart(datetime(2026, 11, 18, 10, 30))  # naive


def test_delete_is_complete_and_idempotent(store: BlobStore) -> None:
    store.put(KEY, b"one", TAGS)
    store.put(KEY, b"two", TAGS)
    store.put("recordings/2025-2026/neighbour", b"stays", TAGS)
    store.delete(KEY)
    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    with pytest.raises(ObjectNotFound):
        store.read_range(KEY)
    store.delete(KEY)
    store.delete("recordings/never/written")
    assert list(store.iter_keys()) == ["recordings/2025-2026/neighbour"]
    # The key can be used again after a delete.
    store.put(KEY, b"three", {})
    assert read_all(store, KEY) == b"three"
    assert store.get_tags(KEY) == {}


def test_iter_keys_lists_in_order_and_filters_by_prefix(store: BlobStore) -> None:
    keys = [
        "exports/2025-2026/x",
        "recordings/2024-2025/b",
        "recordings/2025-2026/a-b",
        "recordings/2025-2026/a.b",
        "recordings/2025-2026/a/b",
        "recordings/2025-2026/z",
    ]
    for key in reversed(keys):
        store.put(key, key.encode(), {})

    def listed(prefix: str = "") -> list[str]:
        # The order is not part of the contract (SeaweedFS lists directory by directory).
        return sorted(store.iter_keys(prefix))

    assert listed() == keys
    assert listed("recordings/2025-2026/") == keys[2:]
    assert listed("recordings/2025-2026/a") == keys[2:5]
    assert listed("recordings/2025-2026/a/") == ["recordings/2025-2026/a/b"]
    assert listed("recordings/20") == keys[1:]
    assert listed("recordings") == keys[1:]
    assert list(store.iter_keys("nothing/")) == []


def test_parts_below_the_minimum_are_refused(store: BlobStore) -> None:
    upload_id = store.start_multipart(KEY, TAGS)
    parts = [store.put_part(KEY, upload_id, n, b"x" * 1024) for n in (1, 2)]
    with pytest.raises(StorageConflict, match="at least"):
        store.complete_multipart(KEY, upload_id, parts)
    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    store.abort_multipart(KEY, upload_id)


def test_parts_that_do_not_match_are_refused(store: BlobStore) -> None:
    upload_id = store.start_multipart(KEY, TAGS)
    part = store.put_part(KEY, upload_id, 1, b"the real part")
    forged = replace(part, etag='"00000000000000000000000000000000"')
    with pytest.raises(StorageConflict):
        store.complete_multipart(KEY, upload_id, [forged])
    with pytest.raises(StorageConflict):
        store.complete_multipart(KEY, upload_id, [replace(part, number=2)])
    with pytest.raises(StorageConflict):
        store.complete_multipart(KEY, upload_id, [])
    with pytest.raises(StorageConflict):
        store.put_part(KEY, upload_id, 0, b"x")
    with pytest.raises(StorageConflict):
        store.put_part(KEY, upload_id, 10_001, b"x")
    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    # The genuine part still completes the write.
    store.complete_multipart(KEY, upload_id, [part])
    assert read_all(store, KEY) == b"the real part"


def test_a_part_uploaded_again_replaces_the_first(store: BlobStore) -> None:
    upload_id = store.start_multipart(KEY, TAGS)
    store.put_part(KEY, upload_id, 1, b"first try")
    retried = store.put_part(KEY, upload_id, 1, b"second try")
    store.complete_multipart(KEY, upload_id, [retried])
    assert read_all(store, KEY) == b"second try"


def test_an_unknown_upload_is_a_conflict(store: BlobStore) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(StorageConflict):
        store.put_part(KEY, unknown, 1, b"x")
    with pytest.raises(StorageConflict):
        store.complete_multipart(KEY, unknown, [Part(1, '"x"', 1)])
    store.abort_multipart(KEY, unknown)


BAD_KEYS = [
    "",
    "/recordings/x",
    "../x",
    "recordings/../x",
    "recordings/./x",
    "recordings//x",
    "recordings/x/",
    ".hidden",
    "recordings/.x",
    "a\\b",
    "a b",
    "a%2e",
    "a\x00b",
    "récording",
    "a/" + "b" * 129,
    "x/" * 300 + "x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected_everywhere(store: BlobStore, key: str) -> None:
    upload = "0123456789abcdef0123456789abcdef"
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b"x", {}),
        lambda: store.start_multipart(key, {}),
        lambda: store.put_part(key, upload, 1, b"x"),
        lambda: store.complete_multipart(key, upload, [Part(1, "e", 1)]),
        lambda: store.abort_multipart(key, upload),
        lambda: store.read_range(key),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.set_tags(key, {}),
        lambda: store.get_tags(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    # An invalid key is a conflict for callers that only know the port's errors.
    assert issubclass(InvalidKey, StorageConflict)
    assert list(store.iter_keys()) == []


@pytest.mark.parametrize("prefix", ["/", "../", "a//", "a/../b", " "])
def test_invalid_prefixes_are_rejected(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        store.iter_keys(prefix)


def test_ensure_ready_creates_the_store(store_url: str) -> None:
    fresh = open_store(store_url)
    with pytest.raises(StoreUnavailable, match="ensure_ready"):
        fresh.check()
    fresh.ensure_ready(LifecycleRules())
    fresh.check()
    fresh.put(KEY, b"x", {})
    assert read_all(fresh, KEY) == b"x"
