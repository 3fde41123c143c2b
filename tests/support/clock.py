"""One clock for the tests.

School days, order validity and retention are counted in Riga days, so a test that builds
them from the machine's clock passes at some hours and fails at others (seen: green in the
afternoon, red at 07:54). Every test therefore takes "now" from a ``TestClock`` that starts
at a fixed instant, a weekday morning in the middle of a school year, and the application
under test reads the same clock through its runtime. Tests of calendar boundaries move it to
the instant they are about.

A few tests talk to something that reads the machine's clock itself: a gunicorn server in
another process, SeaweedFS (it refuses S3 requests signed at a skewed time), file
modification times. Those use ``MachineClock``; ``test_clock_discipline.py`` lists them and
fails on any other test that reads the machine's clock.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from vault.services.runtime import Runtime

RIGA = ZoneInfo("Europe/Riga")

# Wednesday of a November week: mid school year 2026-2027, mid-morning in Riga, far from
# midnight, from 1 September, from the last school day and from a summer-time switch.
SCHOOL_MORNING = datetime(2026, 11, 18, 10, 30, tzinfo=RIGA)


class SteppingClock(Protocol):
    """A clock the application can read and a test can move forward."""

    def __call__(self) -> datetime: ...

    def advance(self, delta: timedelta) -> None: ...


class TestClock:
    """Starts at a chosen instant and runs at real speed from there; tests jump it.

    Running rather than frozen: code that orders events by time, or waits for a moment to
    pass, sees time move as it would in production.
    """

    __test__ = False  # a fixture value, not a test class

    def __init__(self, start: datetime = SCHOOL_MORNING) -> None:
        self.set(start)

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)

    def set(self, instant: datetime) -> None:
        """Put the clock at ``instant`` (an aware datetime) and let it run from there."""
        if instant.tzinfo is None:
            raise ValueError("give the instant with its time zone")
        self._start = instant.astimezone(UTC)
        self._started = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self() + delta)

    def riga_today(self) -> date:
        return self().astimezone(RIGA).date()


class MachineClock:
    """The machine's own clock, for the tests listed in ``test_clock_discipline.py``.

    Such a test must not depend on the date: whatever it builds from this clock has to hold
    on any day of the year, at any hour.
    """

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        time.sleep(delta.total_seconds())

    def riga_today(self) -> date:
        return self().astimezone(RIGA).date()

    def timestamp(self) -> float:
        """Seconds since the epoch, as file modification times count them."""
        return time.time()


def riga(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant given in Riga's wall-clock time (the zone picks summer or winter time)."""
    return datetime(year, month, day, hour, minute, tzinfo=RIGA)


def stepping_clock(runtime: Runtime) -> SteppingClock:
    """The runtime's clock, which in the tests is always one of this module's."""
    clock = runtime.clock
    assert isinstance(clock, TestClock | MachineClock), "build the runtime with a tests.clock"
    return clock
