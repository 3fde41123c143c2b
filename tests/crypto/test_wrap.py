"""Key wrapping: round trip, and refusal of any change to key, context or blob."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import crypto

from . import KEY, OTHER_KEY

CONTEXT = b"data-key\x000b7d5f5e-3c1a-4d8e-9f2a-6a1c2b3d4e5f\x002025-2026"


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=128), context=st.binary(max_size=200))
def test_round_trip(key: bytes, context: bytes) -> None:
    wrapped = crypto.wrap_key(KEY, key, context)
    assert wrapped[0] == 1
    assert len(wrapped) == 1 + 12 + len(key) + 16
    if len(key) >= 16:  # a shorter key may occur in random bytes by chance
        assert key not in wrapped
    assert crypto.unwrap_key(KEY, wrapped, context) == key


def test_each_wrap_is_fresh() -> None:
    key = crypto.new_key()
    assert crypto.wrap_key(KEY, key, CONTEXT) != crypto.wrap_key(KEY, key, CONTEXT)


def test_every_flipped_bit_is_refused() -> None:
    wrapped = crypto.wrap_key(KEY, crypto.new_key(), CONTEXT)
    for position in range(len(wrapped)):
        for bit in range(8):
            tampered = bytearray(wrapped)
            tampered[position] ^= 1 << bit
            with pytest.raises(crypto.IntegrityError):
                crypto.unwrap_key(KEY, bytes(tampered), CONTEXT)


@pytest.mark.parametrize(
    ("kek", "context"),
    [
        (OTHER_KEY, CONTEXT),
        (KEY, CONTEXT.replace(b"2025-2026", b"2024-2025")),
        (KEY, CONTEXT[:-1]),
        (KEY, CONTEXT + b"\x00"),
        (KEY, b""),
    ],
    ids=["wrong kek", "other year", "shorter context", "longer context", "empty context"],
)
def test_wrong_kek_or_context_is_refused(kek: bytes, context: bytes) -> None:
    wrapped = crypto.wrap_key(KEY, crypto.new_key(), CONTEXT)
    with pytest.raises(crypto.IntegrityError):
        crypto.unwrap_key(kek, wrapped, context)


def test_truncated_extended_or_unknown_version_is_refused() -> None:
    wrapped = crypto.wrap_key(KEY, crypto.new_key(), CONTEXT)
    for variant in (wrapped[:-1], wrapped + b"\x00", wrapped[:29], b"", b"\x02" + wrapped[1:]):
        with pytest.raises(crypto.IntegrityError):
            crypto.unwrap_key(KEY, variant, CONTEXT)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="kek"):
        crypto.wrap_key(KEY[:16], KEY, CONTEXT)
    with pytest.raises(ValueError, match="empty"):
        crypto.wrap_key(KEY, b"", CONTEXT)
    with pytest.raises(ValueError, match="kek"):
        crypto.unwrap_key(KEY + b"x", b"\x01" * 60, CONTEXT)
