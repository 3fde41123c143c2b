"""Key derivation: an object's chunk and carry-over keys and its key commitment.

``docs/format.md``, "Key derivation": each subkey is HKDF-SHA256 of the data
key over the object's salt, header parameters, recording id and school year.
"""

from __future__ import annotations

import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.crypto import aead
from vault.crypto.aead import KEY_SIZE, IntegrityError, check_key
from vault.crypto.layout import Header

_KDF_PREFIX: Final = b"recording-vault/object/v1 "
_LABEL_CHUNK: Final = b"chunk key"
_LABEL_COMMIT: Final = b"key commitment"
_LABEL_CARRY: Final = b"carry-over key"

_SCHOOL_YEAR = re.compile(r"([0-9]{4})-([0-9]{4})")


def object_context(data_key: bytes, recording_id: str | uuid.UUID, school_year: str) -> bytes:
    """Check the caller's data key; return the bytes that bind its object to the recording."""
    check_key(data_key, "data key")
    # One canonical spelling each: two spellings of one recording id derive the
    # same keys, and a school year has a single accepted form, so no two
    # strings can name the same year and silently derive different keys.
    try:
        rid = str(uuid.UUID(str(recording_id))).encode("ascii")
    except ValueError:
        raise ValueError("recording id must be a UUID") from None
    match = _SCHOOL_YEAR.fullmatch(school_year)
    if match is None or int(match[2]) != int(match[1]) + 1:
        raise ValueError("school year must look like 2025-2026")
    year = school_year.encode("ascii")
    return bytes([len(rid)]) + rid + bytes([len(year)]) + year


def _derive(data_key: bytes, params: bytes, salt: bytes, context: bytes, label: bytes) -> bytes:
    info = _KDF_PREFIX + label + b"\x00" + params + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(data_key)


@dataclass(frozen=True, slots=True)
class ObjectKeys:
    chunk: aead.AESGCM
    carry: aead.AESGCM
    commitment: bytes


def object_keys(data_key: bytes, header: Header, context: bytes) -> ObjectKeys:
    params = header.params_bytes()
    return ObjectKeys(
        chunk=aead.AESGCM(_derive(data_key, params, header.salt, context, _LABEL_CHUNK)),
        carry=aead.AESGCM(_derive(data_key, params, header.salt, context, _LABEL_CARRY)),
        commitment=_derive(data_key, params, header.salt, context, _LABEL_COMMIT),
    )


def verified_keys(data_key: bytes, header: Header, context: bytes) -> ObjectKeys:
    keys = object_keys(data_key, header, context)
    # GCM alone is not key-committing: without this check a crafted object
    # could decrypt to different valid plaintexts under two keys. The
    # comparison is constant-time so it leaks nothing about the expected value.
    if not hmac.compare_digest(keys.commitment, header.commitment):
        raise IntegrityError("key commitment mismatch: wrong key, context or header")
    return keys
