"""Stream-only playback: views, their heartbeats and their checks, and who accessed.

Threats this module answers:
- a stream URL copied to another person, another browser or another sign-in session must
  not play: a view is bound to the viewer, their server-side session and the order that
  allowed it, and every request on it is checked against that binding;
- access must end the moment its grounds end (sign-out, revocation, restriction, shredding):
  every request re-runs the one access policy, so nothing is cached between requests;
- a view left open must not live on: it ends 15 minutes after the last heartbeat, and it
  never outlives the longest sign-in session;
- who watched what must be answerable later (art. 15, the owner's "Who accessed"): each
  stream request leaves a raw record of the bytes it sent, and each view enters the audit
  chain once, as a summary of merged intervals.

The services never see HTTP: the web layer turns headers into calls of ``ranges.plan_range``, and
signing the URL is the web layer's business too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from vault.models import AccessOrder, LoginSession, Recording, User, View
from vault.services import audit, viewing_log
from vault.services.access import Action, authorize
from vault.services.accounts import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT
from vault.services.actors import Actor
from vault.services.audit import AuditAction, Outcome
from vault.services.errors import (
    N_,
    NotFound,
    PermissionDenied,
)
from vault.settings import Settings

# A view ends this long after its last heartbeat (the page sends one every minute).
VIEW_IDLE_TIMEOUT = timedelta(seconds=Settings.view_idle_timeout_seconds)
# Nor does it outlive the longest sign-in session, heartbeats or not.
VIEW_MAX_LIFETIME = ABSOLUTE_TIMEOUT
# Ending idle views is also done in bulk now and then; at most this many at a time.
SWEEP_LIMIT = 100


class EndReason(StrEnum):
    IDLE = "idle"
    CLOSED = "closed"
    LIFETIME = "lifetime"
    SESSION_ENDED = "session_ended"
    ACCESS_WITHDRAWN = "access_withdrawn"


class Refusal(StrEnum):
    """Why a request on a view was refused; the ``reason`` of the ``access:denied`` event."""

    URL_INVALID = "stream_url_invalid"
    NO_SESSION = "no_session"
    SESSION_ENDED = "session_ended"
    UNKNOWN_VIEW = "unknown_view"
    ANOTHER_VIEWER = "another_viewer"
    ANOTHER_SESSION = "another_session"
    VIEW_ENDED = "view_ended"
    ORDER_CHANGED = "order_changed"
    BROWSER_SESSION_REQUIRED = "browser_session_required"


REFUSAL_MESSAGES: dict[Refusal, str] = {
    Refusal.VIEW_ENDED: N_("This viewing has ended. Reload the page to watch again."),
    Refusal.ORDER_CHANGED: N_(
        "The order that allowed this viewing no longer applies. Reload the page."
    ),
    Refusal.BROWSER_SESSION_REQUIRED: N_(
        "Recordings named in an order can be watched only in the browser, not with an API token."
    ),
}


@dataclass(frozen=True)
class StartedView:
    view: View
    recording: Recording
    order: AccessOrder | None


@dataclass(frozen=True)
class StreamGrant:
    view: View
    recording: Recording


# -- views --------------------------------------------------------------------------------------


def _refuse(
    session: Session,
    reason: Refusal,
    actor: Actor,
    action: Action,
    view_id: uuid.UUID | None,
    recording_id: uuid.UUID | None,
    unauthenticated_at: datetime | None = None,
) -> PermissionDenied:
    """Audit a refusal of this module's own (committed, as every denial is).

    A refusal that may come from anyone (a forged URL, no session) is recorded within the
    audit log's flood guard: pass the time as ``unauthenticated_at``.
    """
    error = PermissionDenied(REFUSAL_MESSAGES.get(reason))
    details = {"action": action.value, "reason": reason.value}
    object_id = str(view_id) if view_id else None
    event = audit.by(
        actor,
        AuditAction.ACCESS_DENIED,
        outcome=Outcome.DENIED,
        recording_id=recording_id,
        object_id=object_id,
        details=details,
    )
    if unauthenticated_at is None:
        return audit.refused(session, event, error)
    address = actor.context.ip_address if actor.context else None
    audit.unauthenticated_denial(session, event, address, unauthenticated_at)
    return error


def refuse_url(
    session: Session, actor: Actor, view_id: uuid.UUID, now: datetime
) -> PermissionDenied:
    """Audit a stream URL whose signature does not verify or names another view."""
    view = session.get(View, view_id)
    recording_id = view.recording_id if view else None
    return _refuse(session, Refusal.URL_INVALID, actor, Action.STREAM, view_id, recording_id, now)


def start_view(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
    idle_timeout: timedelta = VIEW_IDLE_TIMEOUT,
) -> StartedView:
    """Open a view of a recording for ``actor``; the policy decides, and says under which order.

    Anyone but the owner needs a browser session: a leaked API token must not be enough to
    pull a restricted recording out of the vault, where no watermark shows who took it.
    """
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFound()
    decision = authorize(session, actor, Action.START_VIEW, recording, now, zone)
    if decision.order is not None and actor.login_session_id is None:
        raise _refuse(
            session, Refusal.BROWSER_SESSION_REQUIRED, actor, Action.START_VIEW, None, recording.id
        )
    end_idle_views(session, now, idle_timeout)
    view = View(
        recording_id=recording.id,
        viewer_id=actor.account_id,
        login_session_id=actor.login_session_id,
        order_id=decision.order.id if decision.order else None,
        started_at=now,
        last_heartbeat_at=now,
        played_reported=[],
    )
    session.add(view)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.VIEW_STARTED,
            recording_id=recording.id,
            object_id=str(view.id),
            details={
                "order_id": str(decision.order.id) if decision.order else None,
                "order_number": decision.order.number if decision.order else None,
                # What allowed it: the recording's own teacher, or a person an order names.
                "role": "owner" if decision.order is None else "designated",
                "via": "token" if actor.login_session_id is None else "browser",
            },
        ),
    )
    session.commit()
    return StartedView(view, recording, decision.order)


def watchable(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
) -> tuple[Recording, AccessOrder | None]:
    """The recording for the watch page, and the order it would be watched under (None for
    the owner); a refusal is audited like any other."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFound()
    decision = authorize(session, actor, Action.START_VIEW, recording, now, zone)
    return recording, decision.order


def _deadline(view: View, idle_timeout: timedelta) -> tuple[datetime, EndReason]:
    idle_end = view.last_heartbeat_at + idle_timeout
    lifetime_end = view.started_at + VIEW_MAX_LIFETIME
    if lifetime_end <= idle_end:
        return lifetime_end, EndReason.LIFETIME
    return idle_end, EndReason.IDLE


def expires_at(view: View, idle_timeout: timedelta = VIEW_IDLE_TIMEOUT) -> datetime:
    return _deadline(view, idle_timeout)[0]


def _end_if_lapsed(session: Session, view: View, now: datetime, idle_timeout: timedelta) -> bool:
    """End ``view`` if its heartbeats lapsed (or its lifetime ran out); True if it has ended."""
    if view.ended_at is not None:
        return True
    deadline, reason = _deadline(view, idle_timeout)
    if now < deadline:
        return False
    _end(session, view, deadline, reason)
    return True


def _end(session: Session, view: View, at: datetime, reason: EndReason) -> None:
    """Mark the view ended and chain its summary, exactly once even under concurrent requests."""
    ended = cast(
        CursorResult[Any],
        session.execute(
            update(View)
            .where(View.id == view.id, View.ended_at.is_(None))
            .values(ended_at=at, end_reason=reason.value)
            .execution_options(synchronize_session=False)
        ),
    )
    session.refresh(view)
    if ended.rowcount != 1:
        return
    summary = viewing_log.summarise(session, view)
    view.fetched_fast = bool(summary["fetched_fast"])
    audit.record(
        session,
        audit.Event(
            AuditAction.VIEW_ENDED,
            actor_id=view.viewer_id,
            recording_id=view.recording_id,
            object_id=str(view.id),
            details=summary,
        ),
    )
    session.commit()


def end_idle_views(
    session: Session, now: datetime, idle_timeout: timedelta = VIEW_IDLE_TIMEOUT
) -> int:
    """End views whose heartbeats lapsed, so each is summarised even if nobody asks again."""
    lapsed = session.scalars(
        select(View)
        .where(
            View.ended_at.is_(None),
            (View.last_heartbeat_at < now - idle_timeout)
            | (View.started_at < now - VIEW_MAX_LIFETIME),
        )
        .limit(SWEEP_LIMIT)
    ).all()
    for view in lapsed:
        _end_if_lapsed(session, view, now, idle_timeout)
    return len(lapsed)


def _bound_view(
    session: Session,
    actor: Actor,
    view_id: uuid.UUID,
    action: Action,
    now: datetime,
    idle_timeout: timedelta,
    *,
    require_live: bool = True,
) -> View:
    """The view, if ``actor`` is the viewer, in the same session, and the view is live."""
    view = session.get(View, view_id, populate_existing=True)
    if not actor.signed_in:
        # A view whose session has ended can never be used again: end it now (harmless
        # whoever asks), so its summary need not wait for the idle timeout.
        if view is not None and view.ended_at is None and not _session_live(session, view, now):
            _end(session, view, now, EndReason.SESSION_ENDED)
        recording_id = view.recording_id if view else None
        raise _refuse(session, Refusal.NO_SESSION, actor, action, view_id, recording_id, now)
    if view is None:
        raise _refuse(session, Refusal.UNKNOWN_VIEW, actor, action, view_id, None)

    def refuse(reason: Refusal) -> PermissionDenied:
        assert view is not None
        return _refuse(session, reason, actor, action, view.id, view.recording_id)

    if view.viewer_id != actor.user_id:
        raise refuse(Refusal.ANOTHER_VIEWER)
    if view.login_session_id != actor.login_session_id:
        raise refuse(Refusal.ANOTHER_SESSION)
    if _end_if_lapsed(session, view, now, idle_timeout):
        if require_live:
            raise refuse(Refusal.VIEW_ENDED)
        return view
    if not _session_live(session, view, now):
        _end(session, view, now, EndReason.SESSION_ENDED)
        raise refuse(Refusal.SESSION_ENDED)
    return view


def _session_live(session: Session, view: View, now: datetime) -> bool:
    """The view's sign-in session still stands (also checked here, not only when the cookie
    is read, because a long body outlives the request that started it)."""
    if view.login_session_id is None:
        return True  # the owner's token view; the token is checked on each request
    row = session.get(LoginSession, view.login_session_id, populate_existing=True)
    if row is None or row.ended_at is not None:
        return False
    user = session.get(User, row.user_id, populate_existing=True)
    if user is None or user.disabled_at is not None:
        return False
    return now - row.last_seen_at <= IDLE_TIMEOUT and now - row.created_at <= ABSOLUTE_TIMEOUT


def _recheck_policy(
    session: Session,
    actor: Actor,
    view: View,
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """Run the one policy again; a view whose grounds are gone ends with it."""
    recording = session.get(Recording, view.recording_id, populate_existing=True)
    if recording is None:
        raise NotFound()
    try:
        decision = authorize(session, actor, Action.STREAM, recording, now, zone)
    except PermissionDenied:
        _end(session, view, now, EndReason.ACCESS_WITHDRAWN)
        raise
    # Gone (deleted, shredded, or its year key destroyed): the view stays as it is, so
    # every later request on it answers 410 too; it lapses with its heartbeats.
    # The watermark names the order the view began under; another order means a new view.
    allowed_by = decision.order.id if decision.order else None
    if allowed_by != view.order_id:
        _end(session, view, now, EndReason.ACCESS_WITHDRAWN)
        raise _refuse(
            session, Refusal.ORDER_CHANGED, actor, Action.STREAM, view.id, view.recording_id
        )
    return recording


def check_stream(
    session: Session,
    actor: Actor,
    view_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
    idle_timeout: timedelta = VIEW_IDLE_TIMEOUT,
) -> StreamGrant:
    """Whether one stream request may proceed: run on every request, and during long bodies.

    ``actor`` may be anonymous (a stream URL opened without a session): refused and audited.
    """
    view = _bound_view(session, actor, view_id, Action.STREAM, now, idle_timeout)
    recording = _recheck_policy(session, actor, view, now, zone)
    return StreamGrant(view, recording)


def heartbeat(
    session: Session,
    actor: Actor,
    view_id: uuid.UUID,
    report: viewing_log.PlayerReport,
    now: datetime,
    zone: ZoneInfo,
    idle_timeout: timedelta = VIEW_IDLE_TIMEOUT,
) -> View:
    """Keep the view alive (the policy still has to hold) and note what the player played."""
    view = _bound_view(session, actor, view_id, Action.STREAM, now, idle_timeout)
    _recheck_policy(session, actor, view, now, zone)
    viewing_log.note_report(view, report)
    view.last_heartbeat_at = now
    session.commit()
    return view


def end_view(
    session: Session,
    actor: Actor,
    view_id: uuid.UUID,
    report: viewing_log.PlayerReport,
    now: datetime,
    idle_timeout: timedelta = VIEW_IDLE_TIMEOUT,
) -> View:
    """The page was closed: end the view now, so its summary need not wait for the timeout.

    Ending a view that has already ended is not an error (the page cannot know it lapsed).
    """
    view = _bound_view(
        session, actor, view_id, Action.STREAM, now, idle_timeout, require_live=False
    )
    if view.ended_at is not None:
        return view
    viewing_log.note_report(view, report)
    session.flush()
    _end(session, view, now, EndReason.CLOSED)
    return view


# -- who accessed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    view: View
    viewer: User
    order: AccessOrder | None
    served: list[tuple[int, int]]
    bytes_sent: int
    requests: int

    @property
    def played_reported(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in self.view.played_reported]


def accesses(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
    idle_timeout: timedelta = VIEW_IDLE_TIMEOUT,
) -> tuple[Recording, list[Access]]:
    """Who viewed the recording, when, under which order, and which intervals (owner, auditor)."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFound()
    authorize(session, actor, Action.LIST_ACCESSES, recording, now, zone)
    end_idle_views(session, now, idle_timeout)
    views = list(
        session.scalars(
            select(View).where(View.recording_id == recording.id).order_by(View.started_at.desc())
        )
    )
    ranges = viewing_log.ranges_of(session, [view.id for view in views])
    found: list[Access] = []
    for view in views:
        viewer = session.get(User, view.viewer_id)
        assert viewer is not None
        order = session.get(AccessOrder, view.order_id) if view.order_id else None
        rows = ranges[view.id]
        found.append(
            Access(
                view=view,
                viewer=viewer,
                order=order,
                served=viewing_log.served_intervals(rows),
                bytes_sent=sum(row.sent for row in rows),
                requests=len(rows),
            )
        )
    return recording, found
