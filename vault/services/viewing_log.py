"""What a view leaves behind: the player's own report of what it played, the raw record of
each stream request's bytes, and the summary each view enters the audit log with, merged
into intervals, with the flag for a file fetched much faster than it plays.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vault.models import Recording, View, ViewRange
from vault.services import ranges
from vault.services.errors import N_, ValidationFailed

# Bounds on what a client may report, so a heartbeat cannot bloat a row.
MAX_REPORTED_INTERVALS = 500
MAX_REPORTED_SECONDS = 7 * 24 * 3600.0
# Bounds on the summary chained into the audit log.
SUMMARY_INTERVAL_LIMIT = 200
# Views flagged as fetched much faster than playback (SPEC §4.6): at least this share of a
# file at least this large, fetched in less than this fraction of its playing time. Below
# the size, a browser's own read-ahead may legitimately fetch the whole file at once.
FAST_FETCH_SHARE = 0.9
FAST_FETCH_MIN_BYTES = 64 * 1024 * 1024
FAST_FETCH_FACTOR = 0.5


# -- what the player reports --------------------------------------------------------------------


@dataclass(frozen=True)
class PlayerReport:
    """What the page's player says it played; reported by the client, labelled as such."""

    played: tuple[tuple[float, float], ...] = ()
    duration: float | None = None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_REPORTED_SECONDS:
        return None
    return number


def parse_report(raw: Any) -> PlayerReport:
    """Validate ``{"played": [[start_s, end_s], ...], "duration": s}`` (both optional)."""
    if raw is None:
        return PlayerReport()
    if not isinstance(raw, dict):
        raise ValidationFailed({"body": [N_("Send the fields as a JSON object.")]})
    errors: dict[str, list[str]] = {}
    played: list[tuple[float, float]] = []
    raw_played = raw.get("played", [])
    if not isinstance(raw_played, list) or len(raw_played) > MAX_REPORTED_INTERVALS:
        errors["played"] = [N_("Give the played ranges as a list of [start, end] pairs.")]
    else:
        for pair in raw_played:
            bounds = (
                [_seconds(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else []
            )
            if len(bounds) != 2 or bounds[0] is None or bounds[1] is None or bounds[0] > bounds[1]:
                errors["played"] = [N_("Give the played ranges as a list of [start, end] pairs.")]
                break
            played.append((bounds[0], bounds[1]))
    duration = None
    if raw.get("duration") is not None:
        duration = _seconds(raw.get("duration"))
        if duration is None:
            errors["duration"] = [N_("The duration must be a number of seconds.")]
    if errors:
        raise ValidationFailed(errors)
    return PlayerReport(tuple(played), duration)


def note_report(view: View, report: PlayerReport) -> None:
    if report.played:
        known = [(float(a), float(b)) for a, b in view.played_reported]
        merged = merge_intervals([*known, *report.played])
        view.played_reported = [
            [round(a, 1), round(b, 1)] for a, b in merged[:MAX_REPORTED_INTERVALS]
        ]
    if report.duration is not None:
        view.duration_reported = report.duration


# -- records and watched intervals --------------------------------------------------------------


def record_request(
    session: Session, view_id: uuid.UUID, plan: ranges.RangePlan, now: datetime
) -> int:
    """Keep a raw record of one stream request before its body is sent."""
    row = ViewRange(
        view_id=view_id, status=plan.status, first=plan.first, end=plan.end, sent=0, started_at=now
    )
    session.add(row)
    session.commit()
    return row.id


def record_sent(
    sessions: sessionmaker[Session], range_id: int, sent: int, now: datetime, *, finished: bool
) -> None:
    """How many bytes of a request have left the server (during and after its body)."""
    with sessions() as session, session.begin():
        values: dict[str, Any] = {"sent": sent}
        if finished:
            values["finished_at"] = now
        session.execute(update(ViewRange).where(ViewRange.id == range_id).values(**values))


Interval = tuple[float, float]


N = TypeVar("N", int, float)


def merge_intervals(intervals: Iterable[tuple[N, N]]) -> list[tuple[N, N]]:
    """Sorted, non-overlapping intervals covering the same points (touching ones join)."""
    merged: list[tuple[N, N]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def served_intervals(rows: Sequence[ViewRange]) -> list[tuple[int, int]]:
    """The plaintext byte intervals actually sent, merged."""
    return merge_intervals((row.first, row.first + row.sent) for row in rows if row.sent > 0)


def ranges_of(session: Session, view_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[ViewRange]]:
    found: dict[uuid.UUID, list[ViewRange]] = {view_id: [] for view_id in view_ids}
    if view_ids:
        for row in session.scalars(
            select(ViewRange).where(ViewRange.view_id.in_(view_ids)).order_by(ViewRange.id)
        ):
            found[row.view_id].append(row)
    return found


def _fetched_fast(
    view: View, rows: Sequence[ViewRange], served: Sequence[tuple[int, int]], size: int
) -> bool:
    """Most of a large file fetched in far less time than it takes to play (a copying tool)."""
    covered = sum(end - start for start, end in served)
    if size < FAST_FETCH_MIN_BYTES or covered < FAST_FETCH_SHARE * size:
        return False
    finished = [row.finished_at or row.started_at for row in rows if row.sent > 0]
    elapsed = (max(finished) - view.started_at).total_seconds()
    if view.duration_reported is None:
        # A client that took the file but never reported playing it was not our player.
        return True
    return elapsed < FAST_FETCH_FACTOR * view.duration_reported


def summarise(session: Session, view: View) -> dict[str, Any]:
    """The view as it enters the audit chain: once, with its watched intervals."""
    rows = ranges_of(session, [view.id])[view.id]
    recording = session.get(Recording, view.recording_id)
    size = (recording.size_bytes or 0) if recording else 0
    served = served_intervals(rows)
    sent = sum(row.sent for row in rows)
    return {
        "order_id": str(view.order_id) if view.order_id else None,
        "started_at": view.started_at.isoformat(),
        "ended_at": view.ended_at.isoformat() if view.ended_at else None,
        "reason": view.end_reason,
        "requests": len(rows),
        "bytes_sent": sent,
        "size_bytes": size,
        "served_bytes": [list(i) for i in served[:SUMMARY_INTERVAL_LIMIT]],
        "played_reported_seconds": view.played_reported[:SUMMARY_INTERVAL_LIMIT],
        "duration_reported_seconds": view.duration_reported,
        "fetched_fast": _fetched_fast(view, rows, served, size),
    }
