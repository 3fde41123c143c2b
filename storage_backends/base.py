"""The BlobStore port: what the vault needs from storage, and the errors it may raise.

Storage only ever holds ciphertext produced by the vault, so nothing here sees plaintext. The
port still guards what it can: keys are opaque ids chosen by the application and validated
strictly (they become file paths on the local backend), tags are checked against the limits S3
imposes, and every adapter raises only the errors below, so callers never handle ``botocore``
or ``OSError`` exceptions and never learn which backend is configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, runtime_checkable

__all__ = [
    "MAX_PARTS",
    "S3_MIN_PART_SIZE",
    "BlobStore",
    "InvalidKey",
    "InvalidTags",
    "LifecycleRules",
    "ObjectInfo",
    "ObjectNotFound",
    "Part",
    "PendingWrite",
    "StorageConflict",
    "StorageError",
    "StoreUnavailable",
    "YearExpiry",
    "check_cutoff",
    "check_part_number",
    "check_parts",
    "check_range",
    "validate_key",
    "validate_prefix",
    "validate_tags",
]

#: S3 rejects a multipart upload whose parts (except the last) are smaller than this.
S3_MIN_PART_SIZE = 5 * 1024 * 1024
#: S3 part numbers run from 1 to 10 000.
MAX_PARTS = 10_000


class StorageError(Exception):
    """Base of every error the storage port raises."""


class ObjectNotFound(StorageError):
    """The object does not exist (never written, deleted, or expired by a lifecycle rule)."""


class StoreUnavailable(StorageError):
    """The store cannot be reached or cannot accept the request now (down, full, timing out).

    The request may succeed later; no partial object has been made visible.
    """


class StorageConflict(StorageError):
    """The request contradicts the store's state or rules.

    Examples: completing an aborted or unknown upload, parts that do not match what was
    uploaded, a key that would collide with a directory, an invalid key.
    """


class InvalidKey(StorageConflict, ValueError):
    """A key or prefix outside the safe charset, or one that could escape its namespace."""


class InvalidTags(StorageConflict, ValueError):
    """Tags that S3 would reject (too many, too long, or outside the allowed charset)."""


# Keys become path components on the local backend and object names on S3. A conservative
# charset (no spaces, no `%`, no `\`, no control characters) keeps both safe and keeps keys
# identical across backends. Every segment must start with an alphanumeric or `_`, which rules
# out `.`, `..` and hidden files, and empty segments rule out `//` and a leading `/`.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_PREFIX_RE = re.compile(rf"(?:{_SEGMENT}/)*(?:{_SEGMENT})?")
_MAX_KEY_LENGTH = 512

# The charset and limits S3 documents for object tags.
_TAG_RE = re.compile(r"[A-Za-z0-9 +\-=._:/@]*")
_MAX_TAGS = 10
_MAX_TAG_KEY = 128
_MAX_TAG_VALUE = 256

_SCHOOL_YEAR_RE = re.compile(r"(\d{4})-(\d{4})")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise :class:`InvalidKey`.

    Keys are chosen by the application (``recordings/2025-2026/<uuid>``), never taken from a
    request; the check is a second line of defence against path traversal on the local
    backend and against keys that would behave differently on S3.
    """
    if not isinstance(key, str) or len(key) > _MAX_KEY_LENGTH or not _KEY_RE.fullmatch(key):
        raise InvalidKey(f"invalid storage key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, whole segments, or a segment start (``recordings/20``)."""
    if (
        not isinstance(prefix, str)
        or len(prefix) > _MAX_KEY_LENGTH
        or not _PREFIX_RE.fullmatch(prefix)
    ):
        raise InvalidKey(f"invalid storage prefix {prefix!r}")
    return prefix


def validate_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Return a plain copy of ``tags`` if S3 would accept them, else raise :class:`InvalidTags`."""
    if len(tags) > _MAX_TAGS:
        raise InvalidTags(f"at most {_MAX_TAGS} tags per object, got {len(tags)}")
    checked: dict[str, str] = {}
    for name, value in tags.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidTags("tag names and values must be strings")
        if not name or len(name) > _MAX_TAG_KEY or not _TAG_RE.fullmatch(name):
            raise InvalidTags(f"invalid tag name {name!r}")
        if len(value) > _MAX_TAG_VALUE or not _TAG_RE.fullmatch(value):
            raise InvalidTags(f"invalid value for tag {name!r}")
        checked[name] = value
    return checked


def check_range(start: int, end: int | None) -> None:
    """Reject ranges that are a caller bug (negative, or ending before they start)."""
    if start < 0:
        raise ValueError(f"range start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before start {start}")


def check_cutoff(older_than: datetime) -> None:
    """Reject a naive cutoff: pending writes are dated in UTC, so comparing one is a caller bug."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")


def check_part_number(number: int) -> None:
    """Reject a part number S3 would refuse, so every backend refuses it before writing."""
    if not 1 <= number <= MAX_PARTS:
        raise StorageConflict(f"part number {number} is outside 1..{MAX_PARTS}")


@dataclass(frozen=True)
class Part:
    """One uploaded part of a multipart write, as the caller must keep it until completion.

    Upload state lives in the database so any worker can take the next request: store
    :meth:`to_json` there and rebuild with :meth:`from_json`.
    """

    number: int
    etag: str
    size: int

    def to_json(self) -> dict[str, int | str]:
        return {"number": self.number, "etag": self.etag, "size": self.size}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Part:
        number, etag, size = data.get("number"), data.get("etag"), data.get("size")
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or not isinstance(etag, str)
            or not isinstance(size, int)
            or isinstance(size, bool)
        ):
            raise ValueError(f"not a stored part: {dict(data)!r}")
        return cls(number=number, etag=etag, size=size)


def check_parts(parts: Sequence[Part], min_part_size: int) -> None:
    """Reject a part list S3 would refuse at completion, so every backend refuses it alike.

    Parts must be non-empty, numbered 1..10 000 in strictly increasing order, and every part
    but the last must be at least ``min_part_size`` bytes.
    """
    if not parts:
        raise StorageConflict("a multipart write needs at least one part")
    previous = 0
    for index, part in enumerate(parts):
        if not 1 <= part.number <= MAX_PARTS or part.number <= previous:
            raise StorageConflict("part numbers must be increasing and within 1..10000")
        previous = part.number
        if index < len(parts) - 1 and part.size < min_part_size:
            raise StorageConflict(
                f"part {part.number} is {part.size} bytes; every part but the last "
                f"must be at least {min_part_size} bytes"
            )


@dataclass(frozen=True)
class PendingWrite:
    """A multipart write that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    started: datetime


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class YearExpiry:
    """Objects tagged ``school-year=<school_year>`` expire after ``retain_until``.

    The store deletes them at the first midnight (UTC) after that day. The vault crypto-shreds
    the year's key as well, so expiry is a second guarantee, not the only one.
    """

    school_year: str
    retain_until: date

    def __post_init__(self) -> None:
        match = _SCHOOL_YEAR_RE.fullmatch(self.school_year)
        if not match or int(match[2]) != int(match[1]) + 1:
            raise ValueError(f"school year must look like 2025-2026, got {self.school_year!r}")


@dataclass(frozen=True)
class LifecycleRules:
    """The lifecycle a store applies to the objects it owns.

    ``abort_incomplete_after_days`` cleans multipart writes a client gave up on (their parts are
    ciphertext, but they still hold space and would otherwise outlive a shredded year).
    ``noncurrent_version_days`` only applies to a versioned bucket, where deleting or expiring
    an object leaves older versions behind; a store without versions reads it back as ``None``.
    """

    years: tuple[YearExpiry, ...] = ()
    abort_incomplete_after_days: int | None = 7
    noncurrent_version_days: int | None = 30

    def __post_init__(self) -> None:
        names = [year.school_year for year in self.years]
        if len(set(names)) != len(names):
            raise ValueError("one expiry per school year")
        for days in (self.abort_incomplete_after_days, self.noncurrent_version_days):
            if days is not None and days < 1:
                raise ValueError("lifecycle periods are whole days >= 1")
        # A canonical order makes rules read back from a store compare equal to the input.
        object.__setattr__(
            self, "years", tuple(sorted(self.years, key=lambda year: year.school_year))
        )


@runtime_checkable
class BlobStore(Protocol):
    """Where the vault keeps ciphertext: a flat namespace of keys holding immutable objects.

    Every method raises only :class:`StorageError` subclasses (plus ``ValueError`` for caller
    bugs such as a negative range). Objects become visible atomically: a reader sees the whole
    object or :class:`ObjectNotFound`, never a prefix of it.
    """

    @property
    def min_part_size(self) -> int:
        """Smallest size of every multipart part except the last."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store is reachable and ready."""
        ...

    def ensure_ready(self, rules: LifecycleRules) -> None:
        """Create the bucket or directory and apply ``rules``; running it again changes nothing."""
        ...

    def get_lifecycle_rules(self) -> LifecycleRules:
        """The rules in effect, read back from the store."""
        ...

    def put(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        """Write a small object in one request, replacing any object under ``key``."""
        ...

    def start_multipart(self, key: str, tags: Mapping[str, str]) -> str:
        """Begin a multipart write; return its upload id."""
        ...

    def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> Part:
        """Upload one part (numbers 1..10 000); uploading a number again replaces it."""
        ...

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        """Join ``parts`` into the object at ``key``, which becomes visible all at once."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart write and its parts; aborting an unknown upload is a no-op."""
        ...

    def list_stale_multipart(self, older_than: datetime) -> list[PendingWrite]:
        """Multipart writes started before ``older_than`` (timezone-aware) still pending."""
        ...

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``start`` to ``end`` (exclusive; ``None`` for the end of the object).

        The range is clamped to the object's size. :class:`ObjectNotFound` is raised by the call
        itself, before any byte is yielded, so a caller can still choose its response.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size and tags of the object at ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object and every stored version of it; deleting nothing is not an error."""
        ...

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the object's tags."""
        ...

    def get_tags(self, key: str) -> dict[str, str]:
        """The object's tags."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys of complete objects starting with ``prefix``.

        The order is not part of the contract: AWS lists in byte order, but SeaweedFS walks
        its directory tree (``a/b`` before ``a-b``). Sort if the order matters.
        """
        ...
