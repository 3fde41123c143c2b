"""Open the configured store from one URL (``VAULT_STORAGE_URL``).

``file:///var/lib/vault/objects``
    a :class:`~storage_backends.local.LocalStore` in that absolute directory.
``s3://bucket[/prefix][?endpoint=http://host:9000][&region=eu-central-1]``
    an :class:`~storage_backends.s3.S3Store`; the prefix is prepended to every key, the region
    defaults to ``us-east-1``, and without ``endpoint`` boto3 talks to AWS.

Credentials never go in the URL (it ends up in logs and process listings); the S3 store takes
them from the usual AWS environment variables or boto3's credential chain.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from storage_backends.base import BlobStore
from storage_backends.local import LocalStore
from storage_backends.s3 import S3Store

__all__ = ["open_store"]

_S3_OPTIONS = frozenset({"endpoint", "region"})


def open_store(url: str) -> BlobStore:
    """Build the store ``url`` names; raise ``ValueError`` saying what is wrong otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"storage URL is not a URL: {exc}") from None
    if parts.scheme == "file":
        return _open_file(parts)
    if parts.scheme == "s3":
        return _open_s3(parts)
    raise ValueError(
        "storage URL must start with file:/// (a local directory) or s3:// (a bucket), "
        f"got scheme {parts.scheme!r}"
    )


def _open_file(parts: urllib.parse.SplitResult) -> LocalStore:
    if parts.netloc not in ("", "localhost"):
        raise ValueError("file storage URL must be local: file:///absolute/path")
    if parts.query or parts.fragment:
        raise ValueError("file storage URL takes no query or fragment")
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise ValueError("file storage URL needs an absolute directory: file:///absolute/path")
    if "\x00" in path:
        raise ValueError("file storage URL contains a NUL byte")
    return LocalStore(Path(path))


def _open_s3(parts: urllib.parse.SplitResult) -> S3Store:
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(
            "s3 storage URL must not carry credentials or a port: s3://bucket/prefix; "
            "credentials come from the AWS environment, the endpoint from ?endpoint="
        )
    if not parts.netloc:
        raise ValueError("s3 storage URL needs a bucket: s3://bucket/prefix")
    if parts.fragment:
        raise ValueError("s3 storage URL takes no fragment")
    try:
        options = urllib.parse.parse_qs(
            parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)
        )
    except ValueError as exc:
        raise ValueError(f"s3 storage URL has a malformed query: {exc}") from None
    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise ValueError(f"s3 storage URL has unknown options: {', '.join(sorted(unknown))}")
    for name, values in options.items():
        if len(values) != 1:
            raise ValueError(f"s3 storage URL repeats the option {name!r}")
        if not values[0]:
            raise ValueError(f"s3 storage URL option {name!r} is empty")
    endpoint = options.get("endpoint", [None])[0]
    if endpoint is not None:
        endpoint_parts = urllib.parse.urlsplit(endpoint)
        if endpoint_parts.scheme not in ("http", "https") or not endpoint_parts.hostname:
            raise ValueError(f"s3 endpoint must be an http(s) URL, got {endpoint!r}")
    region = options.get("region", ["us-east-1"])[0]
    prefix = urllib.parse.unquote(parts.path).strip("/")
    return S3Store(parts.netloc, prefix, endpoint_url=endpoint, region=region)
