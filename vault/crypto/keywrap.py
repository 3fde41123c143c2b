"""Key wrapping: a key sealed under a key-encryption key for the keyring to store.

``docs/format.md``, "Wrapped keys". The keyring wraps year keys, data keys and
sealed secrets with it; this module knows nothing of what a key is for beyond
the context the keyring binds it to.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag

from vault.crypto import aead
from vault.crypto.aead import NONCE_SIZE, TAG_SIZE, IntegrityError, check_key

_WRAP_VERSION: Final = 1
_WRAPPED_MIN_SIZE: Final = 1 + NONCE_SIZE + TAG_SIZE
_WRAP_AAD_PREFIX: Final = b"recording-vault/wrap/v1\x00"


def _wrap_aad(context: bytes) -> bytes:
    return _WRAP_AAD_PREFIX + bytes([_WRAP_VERSION]) + context


def wrap_key(kek: bytes, key: bytes, context: bytes) -> bytes:
    """Encrypt ``key`` under ``kek``, bound to ``context``.

    Output: version (1 byte) ‖ random nonce (12) ‖ AES-256-GCM ciphertext ‖ tag.
    The context (for a data key: the recording id and school year) is the
    associated data, so a wrapped key copied to another row does not unwrap.
    """
    check_key(kek, "kek")
    if not key:
        raise ValueError("key must not be empty")
    nonce = aead.random_bytes(NONCE_SIZE)
    sealed = aead.AESGCM(kek).encrypt(nonce, key, _wrap_aad(context))
    return bytes([_WRAP_VERSION]) + nonce + sealed


def unwrap_key(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Recover a key wrapped by :func:`wrap_key`; IntegrityError on any mismatch."""
    check_key(kek, "kek")
    if len(wrapped) <= _WRAPPED_MIN_SIZE or wrapped[0] != _WRAP_VERSION:
        raise IntegrityError("wrapped key is malformed or of an unknown version")
    nonce = wrapped[1 : 1 + NONCE_SIZE]
    try:
        return aead.AESGCM(kek).decrypt(nonce, wrapped[1 + NONCE_SIZE :], _wrap_aad(context))
    except InvalidTag:
        raise IntegrityError("wrapped key does not verify") from None
