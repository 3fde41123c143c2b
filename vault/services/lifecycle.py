"""The daily lifecycle run (`recvault lifecycle run`), which a scheduler starts hourly:
abandoned uploads are cleaned, lapsed views are ended and summarised, and the counts of
refused unauthenticated requests of past minutes become audit events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vault.services import audit, streaming, uploads
from vault.services.runtime import Runtime


@dataclass(frozen=True)
class DailyReport:
    stale_uploads: list[uploads.CleanupItem]
    ended_views: int
    denial_tallies_recorded: int = 0


def run(runtime: Runtime, now: datetime, *, dry_run: bool) -> DailyReport:
    cleaned = uploads.cleanup_stale_uploads(runtime, now, dry_run=dry_run)
    ended = tallies = 0
    if not dry_run:
        with runtime.sessions() as session, session.begin():
            ended = streaming.end_idle_views(session, now, runtime.settings.view_idle_timeout)
        with runtime.sessions() as session, session.begin():
            tallies = audit.flush_denial_tallies(session, audit.denial_minute(now))
    return DailyReport(stale_uploads=cleaned, ended_views=ended, denial_tallies_recorded=tallies)
