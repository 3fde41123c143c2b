"""HTTP Range for a recording's stream: the grammar of the header, the validators If-Range
compares with, and the plan of what to send (206, 200 or 416), with no HTTP framework.

Only the first range of a multi-range request is served (a browser's player asks for one),
and a header with too many parts is refused outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from vault.models import Recording
from vault.services.errors import RangeNotSatisfiable

# Range headers with more parts than this are refused outright (a denial-of-service shape).
MAX_RANGE_PARTS = 64


@dataclass(frozen=True)
class Validators:
    """What identifies the representation for ``If-Range``; the content of an available
    recording never changes, so its plaintext digest is a strong entity tag."""

    etag: str
    last_modified: datetime | None


def validators_of(recording: Recording) -> Validators:
    tag = recording.plaintext_sha256 or recording.id.hex
    return Validators(etag=f'"{tag[:40]}"', last_modified=recording.available_at)


@dataclass(frozen=True)
class RangePlan:
    """What to send: plaintext bytes [first, end) of a representation of ``size`` bytes."""

    status: int
    first: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.first

    @property
    def content_range(self) -> str | None:
        if self.status != 206:
            return None
        return f"bytes {self.first}-{self.end - 1}/{self.size}"


RangeSpec = tuple[int | None, int | None]


def _parse_position(text: str) -> int | None:
    text = text.strip(" \t")
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_range(value: str) -> list[RangeSpec] | None:
    """The byte ranges of a ``Range`` value: ``None`` if its unit is not ``bytes`` (to be
    ignored); ``[]`` if the ranges are not valid (to be refused)."""
    unit, separator, spec = value.partition("=")
    if not separator or unit.strip(" \t").lower() != "bytes":
        return None
    ranges: list[RangeSpec] = []
    parts = spec.split(",")
    if len(parts) > MAX_RANGE_PARTS:
        return []
    for raw_part in parts:
        part = raw_part.strip(" \t")
        if not part:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        first_text, dash, last_text = part.partition("-")
        if not dash:
            return []
        if not first_text.strip(" \t"):
            suffix = _parse_position(last_text)
            if suffix is None:
                return []
            ranges.append((None, suffix))
            continue
        first = _parse_position(first_text)
        last = _parse_position(last_text) if last_text.strip(" \t") else None
        if first is None or (last_text.strip(" \t") and last is None):
            return []
        if last is not None and last < first:
            return []
        ranges.append((first, last))
    return ranges


def _satisfiable(spec: RangeSpec, size: int) -> tuple[int, int] | None:
    first, last = spec
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return None
        return max(0, size - last), size
    if first >= size:
        return None
    return first, size if last is None else min(last + 1, size)


def _if_range_holds(if_range: str, validators: Validators) -> bool:
    value = if_range.strip(" \t")
    if value.startswith(("W/", '"')):
        # Weak tags never match in If-Range (RFC 9110 §13.1.5): strong comparison only.
        return value == validators.etag
    if validators.last_modified is None:
        return False
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    if date.tzinfo is None:
        return False
    return int(date.timestamp()) == int(validators.last_modified.timestamp())


def not_modified(if_none_match: str | None, validators: Validators) -> bool:
    """Whether ``If-None-Match`` names the current representation (RFC 9110 §13.1.2: weak
    comparison, a list of tags, or ``*``), so the answer is 304 without a body."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    current = validators.etag.removeprefix("W/")
    return any(tag.strip(" \t").removeprefix("W/") == current for tag in if_none_match.split(","))


def plan_range(
    range_header: str | None, if_range: str | None, size: int, validators: Validators
) -> RangePlan:
    """Decide the answer to a GET with these headers (RFC 9110 §14).

    - no ``Range``, another unit, or an ``If-Range`` that does not match: 200, everything;
    - one satisfiable range: 206 with it (``a-b`` clipped to the end, ``a-``, ``-n``);
    - several ranges: 206 with the first satisfiable one only, described by its
      ``Content-Range`` (players never ask for several; see docs/streaming.md);
    - invalid ranges, or none satisfiable: ``RangeNotSatisfiable`` (416).
    """
    everything = RangePlan(200, 0, size, size)
    if range_header is None:
        return everything
    if if_range is not None and not _if_range_holds(if_range, validators):
        return everything
    ranges = parse_range(range_header)
    if ranges is None:
        return everything
    for spec in ranges:
        bounds = _satisfiable(spec, size)
        if bounds is not None:
            return RangePlan(206, bounds[0], bounds[1], size)
    raise RangeNotSatisfiable()
