"""VAULT_STORAGE_URL parsing: the one place a store is chosen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage_backends.local import LocalStore
from storage_backends.s3 import S3Store
from storage_backends.url import open_store


def test_file_url_opens_a_local_store(tmp_path: Path) -> None:
    store = open_store((tmp_path / "objects").as_uri())
    assert isinstance(store, LocalStore)
    assert store.root == Path(os.path.realpath(tmp_path)) / "objects"
    assert isinstance(open_store(f"file://localhost{tmp_path}"), LocalStore)


def test_file_url_with_escaped_characters(tmp_path: Path) -> None:
    store = open_store((tmp_path / "with space").as_uri())
    assert isinstance(store, LocalStore)
    assert store.root.name == "with space"


def test_s3_url_with_prefix_endpoint_and_region() -> None:
    store = open_store(
        "s3://vault-bucket/school/a?endpoint=http://127.0.0.1:9000&region=eu-central-1"
    )
    assert isinstance(store, S3Store)
    assert store.bucket == "vault-bucket"
    assert store.prefix == "school/a/"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.client.meta.region_name == "eu-central-1"


def test_s3_url_defaults() -> None:
    store = open_store("s3://vault-bucket")
    assert isinstance(store, S3Store)
    assert store.prefix == ""
    assert store.client.meta.region_name == "us-east-1"
    assert "amazonaws.com" in store.client.meta.endpoint_url
    assert open_store("s3://vault-bucket/").prefix == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "file:/// .* or s3://"),
        ("/var/lib/vault", "file:/// .* or s3://"),
        ("http://example.org/bucket", "file:/// .* or s3://"),
        ("minio://bucket", "file:/// .* or s3://"),
        ("file://server/share", "must be local"),
        ("file:relative/dir", "absolute"),
        ("file:///", "absolute"),
        ("file:///tmp/x?mode=fast", "no query"),
        ("s3://", "needs a bucket"),
        ("s3://key:secret@bucket", "credentials"),
        ("s3://bucket:9000", "credentials or a port"),
        ("s3://Bad_Bucket", "invalid bucket"),
        ("s3://bucket/../etc", "invalid storage key"),
        ("s3://bucket/a//b", "invalid storage key"),
        ("s3://bucket?endpoint=ftp://host", "http\\(s\\)"),
        ("s3://bucket?endpoint=", "empty"),
        ("s3://bucket?endpoint", "malformed"),
        ("s3://bucket?access_key=x", "unknown options: access_key"),
        ("s3://bucket?region=a&region=b", "repeats"),
        ("s3://bucket#frag", "fragment"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)
