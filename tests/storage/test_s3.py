"""What only the S3 store must guarantee: versions, lifecycle XML, windows, retries, errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import BotoCoreError, ClientError

from storage_backends.base import (
    LifecycleRules,
    ObjectNotFound,
    StorageConflict,
    StorageError,
    StoreUnavailable,
    YearExpiry,
)
from storage_backends.s3 import S3Store, S3Tuning
from storage_backends.url import open_store
from tests.support.clock import MachineClock
from tests.support.seaweed import SeaweedServer

# The store dates what it keeps by the machine's clock (file times, S3's Initiated), and
# so does whatever reads them back: these comparisons need that clock, not the test clock.
machine_clock = MachineClock()

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
KEY = "recordings/2025-2026/5d2e"
RULES = LifecycleRules(
    years=(YearExpiry("2025-2026", date(2026, 5, 29)),),
    abort_incomplete_after_days=7,
    noncurrent_version_days=30,
)


def bucket_of(url: str) -> str:
    return url.removeprefix("s3://").split("?")[0].split("/")[0]


def versions_of(server: SeaweedServer, bucket: str, key: str) -> list[str]:
    listing = server.client().list_object_versions(Bucket=bucket, Prefix=key)
    entries = [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
    return [entry.get("VersionId", "") for entry in entries if entry.get("Key") == key]


def test_delete_removes_every_version_and_marker(s3_env: SeaweedServer) -> None:
    url = s3_env.new_bucket(versioned=True)
    bucket = bucket_of(url)
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert store.versioned()
    store.put(KEY, b"v1", {})
    store.put(KEY, b"v2", {})
    s3_env.client().delete_object(Bucket=bucket, Key=KEY)  # leaves a delete marker
    store.put(KEY, b"v3", {})
    store.put("recordings/2025-2026/neighbour", b"n1", {})
    store.put("recordings/2025-2026/neighbour", b"n2", {})
    assert len(versions_of(s3_env, bucket, KEY)) == 4

    store.delete(KEY)
    assert versions_of(s3_env, bucket, KEY) == []
    with pytest.raises(ObjectNotFound):
        store.head(KEY)
    store.delete(KEY)  # idempotent, and it must not leave a fresh delete marker
    assert versions_of(s3_env, bucket, KEY) == []
    assert len(versions_of(s3_env, bucket, "recordings/2025-2026/neighbour")) == 2


def test_lifecycle_xml_on_a_versioned_bucket(s3_env: SeaweedServer) -> None:
    url = s3_env.new_bucket(versioned=True)
    store = open_store(url)
    store.ensure_ready(RULES)
    assert store.get_lifecycle_rules() == RULES

    raw = s3_env.client().get_bucket_lifecycle_configuration(Bucket=bucket_of(url))["Rules"]
    by_id = {rule.get("ID"): rule for rule in raw}
    assert set(by_id) == {
        "vault::year:2025-2026",
        "vault::abort-incomplete",
        "vault::noncurrent-versions",
    }
    year = by_id["vault::year:2025-2026"]
    assert year.get("Filter") == {"Tag": {"Key": "school-year", "Value": "2025-2026"}}
    # Kept through the whole retain-until day, gone at the next midnight UTC.
    assert year.get("Expiration", {}).get("Date") == datetime(2026, 5, 30, tzinfo=UTC)
    abort = by_id["vault::abort-incomplete"].get("AbortIncompleteMultipartUpload", {})
    assert abort.get("DaysAfterInitiation") == 7
    noncurrent = by_id["vault::noncurrent-versions"].get("NoncurrentVersionExpiration", {})
    assert noncurrent.get("NoncurrentDays") == 30


def test_ensure_ready_twice_writes_nothing_the_second_time(s3_env: SeaweedServer) -> None:
    store = open_store(s3_env.new_bucket())
    assert isinstance(store, S3Store)
    store.ensure_ready(RULES)
    writes: list[str] = []
    for operation in ("PutBucketLifecycleConfiguration", "CreateBucket", "DeleteBucketLifecycle"):
        store.client.meta.events.register(
            f"before-call.s3.{operation}",
            lambda model, **_: writes.append(model.name),
        )
    store.ensure_ready(RULES)
    assert writes == []


def test_prefixes_share_a_bucket_without_touching_each_other(s3_env: SeaweedServer) -> None:
    bucket = bucket_of(s3_env.new_bucket())
    client = s3_env.client()
    operator_rule: Any = {
        "ID": "operator-logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 90},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [operator_rule]}
    )
    school_a = open_store(s3_env.url(bucket, "school-a"))
    school_b = open_store(s3_env.url(bucket, "school-b/vault"))
    rules_a = LifecycleRules(years=(YearExpiry("2025-2026", date(2026, 5, 29)),))
    rules_b = LifecycleRules(years=(YearExpiry("2025-2026", date(2026, 7, 3)),))
    school_a.ensure_ready(rules_a)
    school_b.ensure_ready(rules_b)

    assert school_a.get_lifecycle_rules().years == rules_a.years
    assert school_b.get_lifecycle_rules().years == rules_b.years
    raw = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert "operator-logs" in {rule.get("ID") for rule in raw}
    filters = [rule.get("Filter") for rule in raw if rule.get("ID", "").endswith(":2025-2026")]
    tag = {"Key": "school-year", "Value": "2025-2026"}
    assert {"And": {"Prefix": "school-a/", "Tags": [tag]}} in filters
    assert {"And": {"Prefix": "school-b/vault/", "Tags": [tag]}} in filters

    school_a.put(KEY, b"a", {})
    school_b.put(KEY, b"b", {})
    upload = school_a.start_multipart("recordings/pending", {})
    assert list(school_a.iter_keys()) == [KEY]
    assert list(school_b.iter_keys()) == [KEY]
    assert b"".join(school_b.read_range(KEY)) == b"b"
    listing = client.list_objects_v2(Bucket=bucket)["Contents"]
    raw_keys = sorted(item.get("Key", "") for item in listing)
    assert raw_keys == [f"school-a/{KEY}", f"school-b/vault/{KEY}"]
    far_future = datetime(2100, 1, 1, tzinfo=UTC)
    assert [write.upload_id for write in school_a.list_stale_multipart(far_future)] == [upload]
    assert school_b.list_stale_multipart(far_future) == []
    school_b.delete(KEY)
    assert b"".join(school_a.read_range(KEY)) == b"a"


def windowed_store(server: SeaweedServer, window: int) -> S3Store:
    url = server.new_bucket()
    return S3Store(
        bucket_of(url), endpoint_url=server.endpoint_url, tuning=S3Tuning(window_size=window)
    )


def record_gets(store: S3Store) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        seen.append({name: params[name] for name in ("Range", "IfMatch") if name in params})

    store.client.meta.events.register("provide-client-params.s3.GetObject", hook)
    return seen


def test_long_reads_are_fetched_in_windows(s3_env: SeaweedServer) -> None:
    store = windowed_store(s3_env, MiB)
    data = bytes(range(256)) * (14 * 1024)  # 3.5 MiB
    store.put(KEY, data, {})
    gets = record_gets(store)

    assert b"".join(store.read_range(KEY)) == data
    assert [get["Range"] for get in gets] == [
        "bytes=0-1048575",
        "bytes=1048576-2097151",
        "bytes=2097152-3145727",
        "bytes=3145728-3670015",
    ]
    # Every later window is pinned to the object the first one saw.
    assert "IfMatch" not in gets[0]
    assert all(get["IfMatch"] for get in gets[1:])

    gets.clear()
    assert b"".join(store.read_range(KEY, MiB + 10, 2 * MiB + 10)) == data[MiB + 10 : 2 * MiB + 10]
    assert [get["Range"] for get in gets] == ["bytes=1048586-2097161"]


def test_a_read_never_mixes_two_objects(s3_env: SeaweedServer) -> None:
    store = windowed_store(s3_env, MiB)
    store.put(KEY, b"a" * (3 * MiB), {})
    stream = store.read_range(KEY)
    assert next(stream).startswith(b"a")
    store.put(KEY, b"b" * (3 * MiB), {})
    with pytest.raises(StorageConflict):
        b"".join(stream)


class _CannedBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def throttle(store: S3Store, operation: str, failures: int, status: int = 503) -> list[int]:
    """Answer the first ``failures`` attempts of ``operation`` with a throttling error."""
    attempts: list[int] = []
    code = "SlowDown" if status == 503 else "InternalError"

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        attempts.append(1)
        if len(attempts) > failures:
            return None
        body = f"<Error><Code>{code}</Code><Message>slow down</Message></Error>".encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/xml"
        return AWSResponse(request.url, status, headers, _CannedBody(body))

    # A before-send handler that returns a response short-circuits the HTTP request.
    store.client.meta.events.register(f"before-send.s3.{operation}", hook)  # type: ignore[arg-type]
    return attempts


@pytest.mark.parametrize("status", [503, 500])
def test_throttling_and_server_errors_are_retried(s3_env: SeaweedServer, status: int) -> None:
    url = s3_env.new_bucket()
    store = S3Store(
        bucket_of(url), endpoint_url=s3_env.endpoint_url, tuning=S3Tuning(max_attempts=3)
    )
    attempts = throttle(store, "PutObject", failures=2, status=status)
    store.put(KEY, b"after two refusals", {})
    assert len(attempts) == 3
    assert b"".join(store.read_range(KEY)) == b"after two refusals"


def test_persistent_throttling_is_unavailable(s3_env: SeaweedServer) -> None:
    url = s3_env.new_bucket()
    store = S3Store(
        bucket_of(url), endpoint_url=s3_env.endpoint_url, tuning=S3Tuning(max_attempts=2)
    )
    attempts = throttle(store, "PutObject", failures=10)
    with pytest.raises(StoreUnavailable) as raised:
        store.put(KEY, b"x", {})
    assert len(attempts) == 2
    assert isinstance(raised.value.__cause__, ClientError)


def test_retry_and_timeout_settings_reach_the_client(s3_env: SeaweedServer) -> None:
    store = S3Store("some-bucket", endpoint_url=s3_env.endpoint_url)
    config = vars(store.client.meta.config)
    assert config["retries"] == {"total_max_attempts": 5, "mode": "standard"}
    assert config["connect_timeout"] == 5.0
    assert config["read_timeout"] == 60.0
    fast = S3Store(
        "some-bucket", tuning=S3Tuning(connect_timeout=0.5, read_timeout=2, max_attempts=1)
    )
    fast_config = vars(fast.client.meta.config)
    assert fast_config["retries"] == {"total_max_attempts": 1, "mode": "standard"}
    assert fast_config["connect_timeout"] == 0.5


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_server_is_unavailable_not_a_botocore_error(
    s3_env: SeaweedServer,
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3Store(
        "vault", endpoint_url=endpoint, tuning=S3Tuning(connect_timeout=0.5, max_attempts=1)
    )
    calls = [
        store.check,
        lambda: store.ensure_ready(LifecycleRules()),
        lambda: store.put(KEY, b"x", {}),
        lambda: store.start_multipart(KEY, {}),
        lambda: store.put_part(KEY, "upload", 1, b"x"),
        lambda: store.abort_multipart(KEY, "upload"),
        lambda: store.read_range(KEY),
        lambda: store.head(KEY),
        lambda: store.get_tags(KEY),
        lambda: store.set_tags(KEY, {}),
        lambda: store.delete(KEY),
        lambda: list(store.iter_keys()),
        lambda: store.list_stale_multipart(machine_clock()),
        store.get_lifecycle_rules,
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as raised:
            call()
        assert isinstance(raised.value.__cause__, BotoCoreError)


def test_the_health_check_answers_fast_with_default_retries(s3_env: SeaweedServer) -> None:
    store = open_store(f"s3://vault?endpoint=http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.check()
    assert time.monotonic() - started < 5


def test_a_missing_bucket_is_unavailable(s3_env: SeaweedServer) -> None:
    store = open_store(s3_env.url(s3_env.new_bucket_name()))
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.check()
    with pytest.raises(StoreUnavailable):
        store.put(KEY, b"x", {})
    with pytest.raises(StorageError):
        store.head(KEY)


def test_aborting_a_completed_upload_is_harmless(s3_store: S3Store) -> None:
    upload_id = s3_store.start_multipart(KEY, {})
    part = s3_store.put_part(KEY, upload_id, 1, b"done")
    s3_store.complete_multipart(KEY, upload_id, [part])
    s3_store.abort_multipart(KEY, upload_id)
    assert b"".join(s3_store.read_range(KEY)) == b"done"
