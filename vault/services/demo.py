"""A sample recording for a first look, uploaded through the same path as a teacher's file.

The demo teacher gets one short recording, a generated WAV tone (no media tools needed),
registered with every field the procedure asks for and sent through the tus upload service
in-process: encrypted while it streams into the store, verified by decrypting, and
``available`` at the end. Nothing here bypasses the checks a real upload goes through.
"""

from __future__ import annotations

import io
import math
import struct
import uuid
import wave
from dataclasses import dataclass
from datetime import datetime

from vault.models import Recording
from vault.services import accounts, calendar, recordings, uploads
from vault.services.actors import Actor, Channel
from vault.services.errors import N_, Conflict, NotFound
from vault.services.runtime import Runtime

SAMPLE_TITLE = "Demonstrācijas ieraksts: skaņas signāls"
SAMPLE_SECONDS = 20
_SAMPLE_RATE = 8000
_TONE_HZ = 440.0
# How long the command waits for the verify pass of a 300 KiB file.
_VERIFY_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class SampleRecording:
    recording_id: uuid.UUID
    title: str
    owner: str
    status: str
    size_bytes: int


def sample_wav(seconds: int = SAMPLE_SECONDS) -> bytes:
    """A mono 16-bit tone that fades in and out every second, so playback is audible."""
    frames = bytearray()
    for index in range(seconds * _SAMPLE_RATE):
        t = index / _SAMPLE_RATE
        envelope = 0.5 - 0.5 * math.cos(2 * math.pi * t)
        sample = int(12000 * envelope * math.sin(2 * math.pi * _TONE_HZ * t))
        frames += struct.pack("<h", sample)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(_SAMPLE_RATE)
        writer.writeframes(bytes(frames))
    return buffer.getvalue()


def seed_sample_recording(runtime: Runtime, owner_username: str, now: datetime) -> SampleRecording:
    """Register and upload the sample for ``owner_username``, dated today.

    Refused (Conflict) when today is after this school year's last day: a lesson cannot be
    recorded into a year whose recordings are already due for deletion.
    """
    zone = runtime.settings.zone
    today = now.astimezone(zone).date()
    with runtime.sessions() as session:
        owner = accounts.find_user(session, owner_username)
        if owner is None:
            raise NotFound()
        if calendar.last_day(session, calendar.school_year_of(today)) < today:
            raise Conflict(N_("The school year has ended; the sample recording was not added."))
        owner_actor = Actor.of(owner, via=Channel.CONSOLE)
        recording = recordings.register(
            session,
            owner_actor,
            owner,
            recordings.parse_registration(
                {
                    "title": SAMPLE_TITLE,
                    "subject": "Mūzika",
                    "class_group": "5.a",
                    "lesson_date": today.isoformat(),
                    "platform": "zoom",
                    "purpose": "quality_safety",
                    "aim": "Parādīt, kā ieraksts tiek glabāts, skatīts un dzēsts.",
                    "visible": "teacher_only",
                    "subjects_informed": {"method": "e-klase ziņa", "at": today.isoformat()},
                    "third_party_warning": True,
                    "device": "school",
                }
            ),
            now,
            zone,
        )
        session.commit()
        recording_id = recording.id
    media = sample_wav()
    state = uploads.create_upload(
        runtime, owner_actor, len(media), {"recording_id": str(recording_id)}, now
    )
    state = uploads.append(
        runtime, owner_actor, state.upload_id, 0, io.BytesIO(media), now, content_length=len(media)
    )
    runtime.upload_workers.finish(_VERIFY_TIMEOUT_SECONDS)
    with runtime.sessions() as session:
        stored = session.get(Recording, recording_id)
        status = stored.status if stored is not None else "missing"
    return SampleRecording(recording_id, SAMPLE_TITLE, owner_username, status, len(media))
