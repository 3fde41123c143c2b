"""The daily lifecycle run (`recvault lifecycle run`), which a scheduler starts hourly:
abandoned uploads are cleaned and lapsed views are ended and summarised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vault.services import streaming, uploads
from vault.services.runtime import Runtime


@dataclass(frozen=True)
class DailyReport:
    stale_uploads: list[uploads.CleanupItem]
    ended_views: int


def run(runtime: Runtime, now: datetime, *, dry_run: bool) -> DailyReport:
    cleaned = uploads.cleanup_stale_uploads(runtime, now, dry_run=dry_run)
    ended = 0
    if not dry_run:
        with runtime.sessions() as session, session.begin():
            ended = streaming.end_idle_views(session, now)
    return DailyReport(stale_uploads=cleaned, ended_views=ended)
