"""Stream-only playback: the watch page, views and heartbeats, the stream, who accessed.

The stream URL carries a signature (itsdangerous) over the view id and nothing else: what a
URL may do is decided by the view row on every request (the same viewer, the same sign-in
session, heartbeats still arriving) and by the one access policy. Liveness therefore comes
from the row, not from the signature's age, so a 90-minute lesson plays through on one URL
while a copied URL is refused at once.

Range requests are answered here, chunk-addressed: only the encrypted chunks that cover the
requested bytes are fetched and decrypted (Werkzeug's range wrapper would read and discard
everything before the offset of a non-seekable body).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session, sessionmaker

from vault.models import AccessOrder, Recording, View
from vault.services import fairness, media, ranges, streaming, viewing_log
from vault.services.access import Action, decide
from vault.services.actors import Actor
from vault.services.errors import PermissionDenied, RangeNotSatisfiable
from vault.services.media import OpenedMedia
from vault.services.ranges import RangePlan
from vault.services.runtime import Clock
from vault.services.streaming import StartedView
from vault.web import context
from vault.web.auth import SignedIn, current_actor, now, request_context
from vault.web.errors import error_response

logger = logging.getLogger(__name__)

pages = Blueprint("watch", __name__)
api = Blueprint("watch_api", __name__, url_prefix="/api/v1")

STREAM_URL_SALT = "stream-url"
# The page sends a heartbeat a few times per idle timeout, at most once a minute.
HEARTBEAT_MAX_SECONDS = 60
NO_STORE = "no-store"


def _idle_timeout() -> timedelta:
    # VAULT_VIEW_IDLE_TIMEOUT: how long a view lives without a heartbeat.
    return context.settings().view_idle_timeout


def heartbeat_seconds(idle_timeout: timedelta) -> int:
    return max(1, min(HEARTBEAT_MAX_SECONDS, int(idle_timeout.total_seconds() // 3)))


def _actor_or_anonymous() -> Actor:
    """Who asks; a stream URL may come without any session, and is refused then."""
    if current_user.is_authenticated:
        return current_actor()
    return Actor.anonymous(request_context())


def _signed_in_actor() -> SignedIn:
    if not current_user.is_authenticated:  # the deny-by-default guard has answered 401
        raise PermissionDenied()
    return current_actor()


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=STREAM_URL_SALT)


def stream_url(view: View) -> str:
    token = _signer().dumps([str(view.id), str(view.viewer_id)])
    return url_for("watch_api.stream", view_id=view.id, token=token)


def _viewer_named(token: str, view_id: uuid.UUID) -> uuid.UUID | None:
    """The viewer the signed stream URL was made for, if it was made for this view.

    The signature's age is only an outer bound (a view never outlives the longest sign-in
    session); whether the view is still alive, and whose session asks, is the policy's
    business. The viewer's id only names whose share of the server a request counts against.
    """
    max_age = int(streaming.VIEW_MAX_LIFETIME.total_seconds())
    try:
        signed = _signer().loads(token, max_age=max_age)
    except BadSignature:
        return None
    if not (isinstance(signed, list) and len(signed) == 2 and signed[0] == str(view_id)):
        return None
    try:
        return uuid.UUID(str(signed[1]))
    except ValueError:
        return None


def _order_json(order: AccessOrder | None) -> dict[str, str] | None:
    if order is None:
        return None
    return {
        "id": str(order.id),
        "number": order.number,
        "valid_until": order.valid_until.isoformat(),
    }


def _view_json(started: StartedView) -> dict[str, Any]:
    view = started.view
    idle = _idle_timeout()
    return {
        "view_id": str(view.id),
        "stream_url": stream_url(view),
        "order": _order_json(started.order),
        "heartbeat_url": url_for("watch_api.heartbeat", view_id=view.id),
        "end_url": url_for("watch_api.end", view_id=view.id),
        "heartbeat_seconds": heartbeat_seconds(idle),
        "expires_at": streaming.expires_at(view, idle).isoformat(),
    }


# -- views and heartbeats ---------------------------------------------------------------------


@api.post("/recordings/<uuid:recording_id>/views")
def start(recording_id: uuid.UUID) -> tuple[Response, int]:
    started = streaming.start_view(
        context.db_session(),
        _signed_in_actor(),
        recording_id,
        now(),
        context.settings().zone,
        _idle_timeout(),
    )
    response = jsonify(_view_json(started))
    response.headers["Cache-Control"] = NO_STORE
    return response, 201


@api.post("/views/<uuid:view_id>/heartbeat")
def heartbeat(view_id: uuid.UUID) -> Response:
    report = viewing_log.parse_report(request.get_json(silent=True))
    idle = _idle_timeout()
    view = streaming.heartbeat(
        context.db_session(),
        _signed_in_actor(),
        view_id,
        report,
        now(),
        context.settings().zone,
        idle,
    )
    return jsonify(
        view_id=str(view.id),
        expires_at=streaming.expires_at(view, idle).isoformat(),
        heartbeat_seconds=heartbeat_seconds(idle),
    )


@api.post("/views/<uuid:view_id>/end")
def end(view_id: uuid.UUID) -> tuple[str, int]:
    report = viewing_log.parse_report(request.get_json(silent=True))
    streaming.end_view(
        context.db_session(),
        _signed_in_actor(),
        view_id,
        report,
        now(),
        _idle_timeout(),
    )
    return "", 204


# -- the stream ---------------------------------------------------------------------------------


def _stream_headers(recording: Recording, opened: OpenedMedia, plan: RangePlan) -> dict[str, str]:
    validators = ranges.validators_of(recording)
    headers = {
        "Content-Length": str(plan.length),
        "Accept-Ranges": "bytes",
        "Cache-Control": NO_STORE,
        "Content-Disposition": "inline",
        "X-Content-Type-Options": "nosniff",
        "ETag": validators.etag,
    }
    if validators.last_modified is not None:
        headers["Last-Modified"] = format_datetime(validators.last_modified, usegmt=True)
    if plan.content_range is not None:
        headers["Content-Range"] = plan.content_range
    return headers


def _body(
    opened: OpenedMedia,
    plan: RangePlan,
    range_id: int,
    sessions: sessionmaker[Session],
    recheck: Callable[[Session], None],
    recheck_seconds: float,
    clock: Clock,
) -> Iterator[bytes]:
    """The planned bytes, verified chunk by chunk.

    Runs after the request's own context has gone, on sessions of its own. An exception
    here (an integrity failure, the store going away, the policy no longer holding) escapes
    to the server, which aborts the connection: a client never receives a complete-looking
    response with unverified or unauthorised bytes in it.
    """
    sent = 0

    def check() -> None:
        with sessions() as session:
            recheck(session)
        viewing_log.record_sent(sessions, range_id, sent, clock(), finished=False)

    try:
        for piece in media.rechecked(opened.stream(plan.first, plan.end), check, recheck_seconds):
            yield piece
            sent += len(piece)
    finally:
        try:
            viewing_log.record_sent(sessions, range_id, sent, clock(), finished=True)
        except Exception:
            # The request is already recorded; losing its byte count must not hide the
            # error (if any) that ended the body.
            logger.exception("could not record the bytes sent for stream request %s", range_id)


@api.get("/views/<uuid:view_id>/stream")
def stream(view_id: uuid.UUID) -> Response:
    """The media of a view: 200, 206 or 416; 403 for anyone but the viewer in their session.

    Listed as public in ``vault.web.security``: the deny-by-default guard would answer a
    signed-out request with a sign-in prompt, while a stream URL must be refused (403) and
    the refusal audited like any other.
    """
    runtime = context.runtime()
    db = context.db_session()
    zone = runtime.settings.zone
    viewer_id = _viewer_named(request.args.get("token", ""), view_id)
    if viewer_id is None:
        raise streaming.refuse_url(db, _actor_or_anonymous(), view_id, now())
    # The slot is counted before the session and the policy are checked, so a request past
    # the cap costs no database query: a script asking again and again on 200 connections
    # must not take the processor time the other viewers' streams need. The key comes from
    # the signed URL, so nobody can use up another person's share; a request the policy
    # then refuses gives its slot back at once.
    slot = runtime.slots.take(
        {
            ("view", view_id): fairness.STREAMS_PER_VIEW,
            ("streams", viewer_id): fairness.STREAMS_PER_USER,
        }
    )
    try:
        actor = _actor_or_anonymous()
        grant = streaming.check_stream(db, actor, view_id, now(), zone, _idle_timeout())
        validators = ranges.validators_of(grant.recording)
        if ranges.not_modified(request.headers.get("If-None-Match"), validators):
            # The viewer already holds these bytes; the policy above still had its say.
            slot.release()
            return Response(
                status=304, headers={"ETag": validators.etag, "Cache-Control": NO_STORE}
            )
        return _stream_response(grant, view_id, actor, slot)
    except BaseException:
        slot.release()
        raise


def _stream_response(
    grant: streaming.StreamGrant, view_id: uuid.UUID, actor: Actor, slot: fairness.Slot
) -> Response:
    """The answer to a stream request admitted by the policy, holding ``slot`` until its
    body ends (a body-less answer frees it at once)."""
    runtime = context.runtime()
    db = context.db_session()
    zone = runtime.settings.zone
    idle = _idle_timeout()
    opened = media.open_media(db, runtime.keyring, runtime.store, grant.recording)
    try:
        plan = ranges.plan_range(
            request.headers.get("Range"),
            request.headers.get("If-Range"),
            opened.size,
            ranges.validators_of(grant.recording),
        )
    except RangeNotSatisfiable as exc:
        slot.release()
        return error_response(
            416,
            exc.message,
            headers={
                "Content-Range": f"bytes */{opened.size}",
                "Accept-Ranges": "bytes",
                "Cache-Control": NO_STORE,
            },
        )
    headers = _stream_headers(grant.recording, opened, plan)
    if request.method == "HEAD":
        slot.release()
        return Response(status=plan.status, headers=headers, content_type=opened.content_type)
    range_id = viewing_log.record_request(db, grant.view.id, plan, now())

    def recheck(session: Session) -> None:
        streaming.check_stream(session, actor, view_id, runtime.clock(), zone, idle)

    # VAULT_STREAM_RECHECK_SECONDS: a revocation or a sign-out also stops a flowing body.
    recheck_seconds = float(context.settings().stream_recheck_seconds)
    body = _body(opened, plan, range_id, runtime.sessions, recheck, recheck_seconds, runtime.clock)
    return Response(
        fairness.HoldingBody(body, slot),
        status=plan.status,
        headers=headers,
        content_type=opened.content_type,
    )


# -- the watch page -----------------------------------------------------------------------------


@pages.get("/recordings/<uuid:recording_id>/watch")
def page(recording_id: uuid.UUID) -> str:
    recording, order = streaming.watchable(
        context.db_session(),
        current_actor(),
        recording_id,
        now(),
        context.settings().zone,
    )
    actor = current_actor()
    is_owner = recording.owner_id == actor.user_id
    settings = context.settings()
    return render_template(
        "watch.html",
        recording=recording,
        is_owner=is_owner,
        viewer_name=actor.full_name,
        order=order,
        start_url=url_for("watch_api.start", recording_id=recording.id),
        server_time_ms=int(now().timestamp() * 1000),
        time_zone=settings.timezone,
    )


# -- who accessed -------------------------------------------------------------------------------


def _accesses(recording_id: uuid.UUID) -> tuple[Recording, list[streaming.Access]]:
    return streaming.accesses(
        context.db_session(),
        current_actor(),
        recording_id,
        now(),
        context.settings().zone,
        _idle_timeout(),
    )


def _access_json(access: streaming.Access) -> dict[str, Any]:
    view = access.view
    return {
        "view_id": str(view.id),
        "viewer": {"username": access.viewer.username, "name": access.viewer.full_name},
        "started_at": view.started_at.isoformat(),
        "last_heartbeat_at": view.last_heartbeat_at.isoformat(),
        "ended_at": view.ended_at.isoformat() if view.ended_at else None,
        "end_reason": view.end_reason,
        "via": "browser" if view.login_session_id else "token",
        "order": _order_json(access.order),
        "requests": access.requests,
        "bytes_sent": access.bytes_sent,
        "served_bytes": [list(interval) for interval in access.served],
        "played_reported_seconds": [list(interval) for interval in access.played_reported],
        "duration_reported_seconds": view.duration_reported,
        "fetched_fast": view.fetched_fast,
    }


@api.get("/recordings/<uuid:recording_id>/accesses")
def api_accesses(recording_id: uuid.UUID) -> Response:
    recording, found = _accesses(recording_id)
    return jsonify(
        recording_id=str(recording.id),
        size_bytes=recording.size_bytes,
        accesses=[_access_json(access) for access in found],
    )


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _share(intervals: list[tuple[int, int]], size: int | None) -> str:
    if not size:
        return ""
    return ", ".join(f"{100 * a / size:.1f}–{100 * b / size:.1f} %" for a, b in intervals)


@pages.get("/recordings/<uuid:recording_id>/accesses")
def accesses_page(recording_id: uuid.UUID) -> str:
    recording, found = _accesses(recording_id)
    zone = context.settings().zone

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else ""

    rows = [
        {
            "viewer": f"{access.viewer.full_name} ({access.viewer.username})",
            "started": local(access.view.started_at),
            "ended": local(access.view.ended_at),
            "order_number": access.order.number if access.order else None,
            "served": _share(access.served, recording.size_bytes),
            "played": ", ".join(f"{_clock(a)}–{_clock(b)}" for a, b in access.played_reported),
            "fetched_fast": access.view.fetched_fast,
        }
        for access in found
    ]
    return render_template("accesses.html", recording=recording, rows=rows)


# -- template helpers ---------------------------------------------------------------------------


def _allowed(recording: Recording, action: Action) -> bool:
    """Whether to offer a link; the target re-checks (and audits) when it is followed."""
    if not current_user.is_authenticated:
        return False
    decision = decide(
        context.db_session(), current_actor(), action, recording, now(), context.settings().zone
    )
    return decision.allowed


def watch_allowed(recording: Recording) -> bool:
    return _allowed(recording, Action.START_VIEW)


def accesses_allowed(recording: Recording) -> bool:
    return _allowed(recording, Action.LIST_ACCESSES)


def init_app(app: Flask) -> None:
    app.add_template_global(watch_allowed)
    app.add_template_global(accesses_allowed)
    app.register_blueprint(pages)
    app.register_blueprint(api)
