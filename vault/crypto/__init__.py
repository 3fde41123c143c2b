"""The encrypted object format of the vault and the key-wrapping primitive.

Every recording is stored as one object: an authenticated header followed by
AES-256-GCM chunks (the STREAM construction: chunk index and a last-chunk flag
in the nonce). ``docs/format.md`` specifies the format byte by byte; this
package is its only implementation, one module for each part of that document:

- ``layout``: the header, the chunks, their nonces and which bytes cover a range;
- ``keys``: key derivation and the key commitment;
- ``encryptor``: incremental encryption and the serialised encryption state;
- ``decryptor``: opening an object, reading ranges and the front-to-back pass;
- ``keywrap``: wrapped keys for the keyring;
- ``aead``: what they share, AES-256-GCM's sizes, randomness and IntegrityError.

The package does no I/O. It works on bytes, iterables of bytes and a
caller-supplied ``read(offset, length)`` callable, so the storage adapters and
the upload path decide where ciphertext lives while the format decides what it
contains. Code outside the package imports the names below from ``vault.crypto``.

Errors: anything that looks like tampering, a wrong key or a wrong context
raises :class:`IntegrityError`; misuse by the caller (a bad argument, feeding
too many bytes) raises :class:`ValueError`.
"""

from vault.crypto.aead import KEY_SIZE, TAG_SIZE, BytesLike, IntegrityError, new_key
from vault.crypto.decryptor import Decryptor, ReadAt, decrypt_stream
from vault.crypto.encryptor import Encryptor, encrypt_bytes
from vault.crypto.keywrap import unwrap_key, wrap_key
from vault.crypto.layout import (
    ALGORITHM_AES256GCM_HKDF_SHA256,
    DEFAULT_CHUNK_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    MAX_PLAINTEXT_LENGTH,
    MIN_CHUNK_SIZE,
    Header,
    chunk_count,
    ciphertext_length,
    ciphertext_range,
)

__all__ = [
    "ALGORITHM_AES256GCM_HKDF_SHA256",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_PLAINTEXT_LENGTH",
    "MIN_CHUNK_SIZE",
    "TAG_SIZE",
    "BytesLike",
    "Decryptor",
    "Encryptor",
    "Header",
    "IntegrityError",
    "ReadAt",
    "chunk_count",
    "ciphertext_length",
    "ciphertext_range",
    "decrypt_stream",
    "encrypt_bytes",
    "new_key",
    "unwrap_key",
    "wrap_key",
]
