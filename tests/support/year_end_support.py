"""A school with recordings in two school years, and what a year-end test compares before
and after: every row of the database and every object of the store."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from tests.support.clock import SCHOOL_MORNING, TestClock, riga
from tests.support.people import Person, add_person
from tests.support.recording_support import register, sample_media, store_plaintext
from vault.models import Base, YearEnd
from vault.services.runtime import Runtime

#: The year the test clock's morning follows: its last school day (29 May 2026) has passed.
PAST_YEAR = "2025-2026"
#: The year of the test clock's morning.
CURRENT_YEAR = "2026-2027"


@dataclass(frozen=True)
class TwoYears:
    teacher: Person
    director: Person
    past: uuid.UUID
    current: uuid.UUID
    past_media: bytes
    current_media: bytes


def two_years(runtime: Runtime, clock: TestClock) -> TwoYears:
    """An available recording in the past school year (recorded in May 2026) and one in the
    current year; the clock is left on the current year's school morning."""
    teacher = add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    director = add_person(runtime, "direktore", "director", name="Ilze Ozola")
    clock.set(riga(2026, 5, 20, 10))
    past = register(runtime, "skolotaja", title="Maija stunda")
    past_media = sample_media(3000, b"past")
    store_plaintext(runtime, past, past_media, chunk_size=1024)
    clock.set(SCHOOL_MORNING)
    current = register(runtime, "skolotaja", title="Novembra stunda")
    current_media = sample_media(3000, b"current")
    store_plaintext(runtime, current, current_media, chunk_size=1024)
    return TwoYears(teacher, director, past, current, past_media, current_media)


def database_dump(runtime: Runtime) -> dict[str, list[str]]:
    """Every row of every table, as text, in a stable order."""
    dump: dict[str, list[str]] = {}
    with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            dump[table.name] = sorted(repr(tuple(row)) for row in rows)
    return dump


def store_listing(runtime: Runtime) -> dict[str, Any]:
    """Every object of the store with its tags and the hash of its bytes, and the rules."""
    store = runtime.store
    objects = {
        key: (
            store.get_tags(key),
            hashlib.sha256(b"".join(store.read_range(key))).hexdigest(),
        )
        for key in sorted(store.iter_keys())
    }
    return {"objects": objects, "rules": store.get_lifecycle_rules()}


def year_end_state(runtime: Runtime, school_year: str) -> YearEnd | None:
    with runtime.sessions() as session:
        return session.get(YearEnd, school_year)
