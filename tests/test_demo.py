"""`recvault demo`: besides one account per role, a sample recording for the demo teacher,
uploaded through the tus service like any teacher's file."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from tests.support.console import Console
from tests.support.recording_support import keep_year_open, riga_today
from vault.models import Recording, User
from vault.services import account_admin, calendar, demo, media
from vault.services.errors import Conflict
from vault.services.runtime import Runtime
from vault.settings import Settings


def test_the_sample_recording_is_available_and_decrypts_to_the_generated_file(
    runtime: Runtime, recvault: Console
) -> None:
    keep_year_open(runtime)
    result = recvault("demo")
    assert result.exit_code == 0, result.output
    assert "Sample recording of skolotaja" in result.output
    expected = demo.sample_wav()
    with runtime.sessions() as session:
        recording = session.scalars(select(Recording)).one()
        owner = session.get(User, recording.owner_id)
        assert owner is not None and owner.username == "skolotaja"
        assert recording.status == "available"
        assert recording.content_type == "audio/wav"
        assert recording.plaintext_sha256 == hashlib.sha256(expected).hexdigest()
        opened = media.open_media(session, runtime.keyring, runtime.store, recording)
        assert b"".join(opened.stream(0, opened.size)) == expected
    # The stored object is ciphertext: the generated samples are nowhere in it.
    stored = b"".join(runtime.store.read_range(recording.object_key or "", 0))
    assert expected[44:4096] not in stored


def test_no_sample_after_the_school_years_last_day(settings: Settings, runtime: Runtime) -> None:
    account_admin.seed_demo(runtime, lambda: "a demo password of some length", runtime.clock())
    year = calendar.school_year_of(riga_today(runtime))
    start, _ = calendar.year_bounds(year)
    calendar.set_last_day_as_operator(
        runtime, calendar.LastDayChange(year, date(start.year + 1, 5, 29))
    )
    after_last_day = datetime(start.year + 1, 6, 10, 12, tzinfo=UTC)
    with pytest.raises(Conflict):
        demo.seed_sample_recording(runtime, "skolotaja", after_last_day)
    with runtime.sessions() as session:
        assert session.scalars(select(Recording)).all() == []
