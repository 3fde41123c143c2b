"""The port's value types: parts stored as JSON, lifecycle rules, validation."""

from __future__ import annotations

from datetime import date

import pytest

from storage_backends.base import (
    InvalidKey,
    InvalidTags,
    LifecycleRules,
    ObjectNotFound,
    Part,
    StorageConflict,
    StorageError,
    StoreUnavailable,
    YearExpiry,
    check_parts,
    validate_key,
    validate_prefix,
    validate_tags,
)


def test_part_json_round_trip() -> None:
    part = Part(number=3, etag='"9b2cf535f27731c974343645a3985328"', size=5 * 1024 * 1024)
    assert Part.from_json(part.to_json()) == part


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"number": "1", "etag": "e", "size": 1},
        {"number": 1, "etag": 5, "size": 1},
        {"number": 1, "etag": "e", "size": None},
        {"number": True, "etag": "e", "size": 1},
    ],
)
def test_part_from_json_rejects_garbage(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a stored part"):
        Part.from_json(data)


def test_check_parts_mirrors_s3_rules() -> None:
    big, small = 5 * 1024 * 1024, 10
    check_parts([Part(1, "a", big), Part(2, "b", big), Part(3, "c", small)], big)
    check_parts([Part(1, "a", small)], big)  # a single part may be small
    check_parts([Part(2, "a", big), Part(7, "b", small)], big)  # gaps are allowed
    for parts in (
        [],
        [Part(1, "a", small), Part(2, "b", small)],
        [Part(2, "a", big), Part(1, "b", small)],
        [Part(1, "a", big), Part(1, "b", small)],
        [Part(0, "a", small)],
        [Part(10_001, "a", small)],
    ):
        with pytest.raises(StorageConflict):
            check_parts(parts, big)


def test_errors_form_one_hierarchy() -> None:
    for error in (ObjectNotFound, StoreUnavailable, StorageConflict, InvalidKey, InvalidTags):
        assert issubclass(error, StorageError)
    assert issubclass(InvalidKey, ValueError)
    assert issubclass(InvalidTags, ValueError)


def test_good_keys_and_prefixes() -> None:
    for key in ("recordings/2025-2026/6f1c2a8e-8a57-4a3c-9d0e-2b7f3c1d9e41", "a", "_x/y.z"):
        assert validate_key(key) == key
    for prefix in ("", "recordings/", "recordings/2025", "a/b/"):
        assert validate_prefix(prefix) == prefix
    with pytest.raises(InvalidKey):
        validate_key(None)  # type: ignore[arg-type]


def test_tags_are_checked_against_s3_limits() -> None:
    tags = {"classification": "restricted", "school-year": "2025-2026", "note": "a b+c=d:e/f@g"}
    assert validate_tags(tags) == tags
    with pytest.raises(InvalidTags):
        validate_tags({"k": 1})  # type: ignore[dict-item]


def test_lifecycle_rules_are_canonical() -> None:
    a = YearExpiry("2025-2026", date(2026, 5, 29))
    b = YearExpiry("2024-2025", date(2025, 5, 30))
    assert LifecycleRules(years=(a, b)) == LifecycleRules(years=(b, a))
    assert LifecycleRules(years=(a, b)).years == (b, a)
    with pytest.raises(ValueError, match="one expiry per school year"):
        LifecycleRules(years=(a, YearExpiry("2025-2026", date(2026, 6, 1))))
    with pytest.raises(ValueError, match="whole days"):
        LifecycleRules(abort_incomplete_after_days=0)


@pytest.mark.parametrize("year", ["2025", "2025-2027", "2025/2026", "25-26", "2026-2025"])
def test_school_years_look_like_school_years(year: str) -> None:
    with pytest.raises(ValueError, match="school year"):
        YearExpiry(year, date(2026, 5, 29))
