"""A recording's media: its type, recognised from its first bytes, and its plaintext, read
out of its encrypted object range by range.

Only verified plaintext ever leaves this module: the decryptor checks each chunk before
releasing it, so a tampered object fails instead of being served as garbage. A failure in
the middle of a body surfaces as an exception from the iterator, which makes the server
abort the connection rather than finish a response with unverified bytes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from storage_backends.base import BlobStore, ObjectNotFound, StorageError
from vault import crypto
from vault.keyring import Keyring, KeyringError, YearShredded
from vault.models import Recording
from vault.services import audit, recordings
from vault.services.access import Action
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import Gone, IntegrityFailure, KeysUnavailable, StorageUnavailable

#: Bytes needed to recognise every accepted format (WAV: "RIFF" size "WAVE").
SNIFF_BYTES = 12
#: When the first bytes run this far, they settle WebM vs Matroska and Ogg audio vs video
#: (the codec ids follow the container headers closely).
SNIFF_WINDOW = 64


def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes of a file announce, or None if not accepted.

    Procedure §14 makes every stored file restricted-access information; the check keeps the
    vault to lesson recordings (audio and video), so it cannot become a store for anything
    else. It looks at magic numbers only: a file that merely claims a type is not trusted.
    """
    if len(head) < 4:
        return None
    window = head[:SNIFF_WINDOW]
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in window else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"theora" in window else "audio/ogg"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # an MPEG audio frame sync (FFEx/FFFx)
    return None


@dataclass(frozen=True)
class OpenedMedia:
    recording_id: str
    size: int
    content_type: str
    _store: BlobStore
    _object_key: str
    _decryptor: crypto.Decryptor

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes [start, end): the covering ciphertext is fetched as one sequential
        read, and each chunk is verified before its plaintext is released."""
        try:
            cstart, cend = self._decryptor.ciphertext_range(start, end)
            ciphertext = self._store.read_range(self._object_key, cstart, cend)
            yield from self._decryptor.decrypt_span(start, end, ciphertext)
        except crypto.IntegrityError as exc:
            raise IntegrityFailure() from exc
        except StorageError as exc:
            raise StorageUnavailable() from exc


def rechecked(
    pieces: Iterable[bytes], recheck: Callable[[], None], every_seconds: float
) -> Iterator[bytes]:
    """``pieces``, running ``recheck`` every ``every_seconds`` while they are sent.

    Access must end the moment its grounds end, also in the middle of a long body: the
    recheck raises, the iterator stops, and the server aborts the connection.
    """
    next_check = time.monotonic() + every_seconds
    for piece in pieces:
        if time.monotonic() >= next_check:
            recheck()
            next_check = time.monotonic() + every_seconds
        yield piece


def recheck_download(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
) -> None:
    """The policy again, during an owner's download (audited and raised when it refuses)."""
    recordings.get(session, actor, recording_id, Action.DOWNLOAD, now, zone)


def open_media(
    session: Session, keyring: Keyring, store: BlobStore, recording: Recording
) -> OpenedMedia:
    """Unwrap the data key and verify the object's header and end (once per opening)."""
    if recording.object_key is None or recording.wrapped_data_key is None:
        raise Gone()
    try:
        data_key = keyring.data_key(
            session, recording.id, recording.school_year, recording.wrapped_data_key
        )
    except YearShredded as exc:
        raise Gone() from exc
    except KeyringError as exc:
        # A missing or wrong master key (a restore with the wrong keys directory) is the
        # operator's to fix, not damage to the recording.
        raise KeysUnavailable(str(exc)) from exc
    except crypto.IntegrityError as exc:
        raise IntegrityFailure() from exc
    object_key = recording.object_key

    def read_ciphertext(offset: int, length: int) -> bytes:
        return b"".join(store.read_range(object_key, offset, offset + length))

    try:
        decryptor = crypto.Decryptor.open(
            data_key, recording.id, recording.school_year, read_ciphertext
        )
    except crypto.IntegrityError as exc:
        raise IntegrityFailure() from exc
    except ObjectNotFound as exc:
        raise IntegrityFailure() from exc
    except StorageError as exc:
        raise StorageUnavailable() from exc
    return OpenedMedia(
        recording_id=str(recording.id),
        size=decryptor.plaintext_length,
        content_type=recording.content_type or "application/octet-stream",
        _store=store,
        _object_key=object_key,
        _decryptor=decryptor,
    )


def download(
    session: Session,
    keyring: Keyring,
    store: BlobStore,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
) -> tuple[Recording, OpenedMedia]:
    """The owner's own copy. Recorded as a copy outside the vault, which the deletion
    certificates list so the teacher knows what to delete by hand."""
    recording = recordings.get(session, actor, recording_id, Action.DOWNLOAD, now, zone)
    media = open_media(session, keyring, store, recording)
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.RECORDING_DOWNLOADED,
            recording_id=recording.id,
            details={"copy_outside_vault": True},
        ),
    )
    session.commit()
    return recording, media
