"""Deny by default: every endpoint needs a signed-in user unless it is listed here.

A new view is therefore protected the day it is written; making one public is a
deliberate, reviewable edit of ``PUBLIC_ENDPOINTS``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, redirect, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.wrappers import Response as BaseResponse

from vault.services import audit
from vault.services.actors import Channel
from vault.services.audit import ErrorT
from vault.services.errors import N_, PermissionDenied
from vault.web import context
from vault.web.auth import request_context
from vault.web.errors import error_response, wants_problem_json

PUBLIC_ENDPOINTS: frozenset[str] = frozenset(
    {
        "static",
        "pages.index",
        "reports.privacy",
        "pages.healthz",
        "pages.set_language",
        "auth.login",
        "auth.link_setup",
        # Not public in effect: the stream checks its signed URL, the viewer and the sign-in
        # session itself, so that a signed-out or foreign request is refused (403) and
        # audited instead of being sent to the sign-in page.
        "watch_api.stream",
    }
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Only a tus PATCH carries a recording (up to the app's MAX_CONTENT_LENGTH); every other body
# is a form or a JSON document, and a larger one is refused before anything reads it.
SMALL_BODY_LIMIT = 64 * 1024
LARGE_BODY_ENDPOINTS = frozenset({"uploads.append"})

P = ParamSpec("P")
R = TypeVar("R")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Same-origin: no other site learns a page address, and the browser keeps sending the
    # true Origin on our own state changes (under no-referrer it sends "Origin: null").
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": (
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
        "display-capture=(), interest-cohort=()"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def limit_body_size() -> None:
    if request.endpoint not in LARGE_BODY_ENDPOINTS:
        request.max_content_length = SMALL_BODY_LIMIT


def refuse_cross_origin_preflight() -> BaseResponse | None:
    """The vault serves its own pages only: no origin is granted CORS. A browser's preflight
    from another origin gets a plain refusal that says so, instead of a sign-in prompt."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = request.headers.get("Origin")
    if origin is None or origin == request.host_url.rstrip("/"):
        return None
    return error_response(
        403,
        N_("Requests from other websites are not accepted: use this vault's own pages."),
    )


def require_sign_in() -> BaseResponse | None:
    # A URL that matches no route (404, 405) has no endpoint to protect; let routing answer.
    if request.routing_exception is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_user.is_authenticated:
        return None
    if wants_problem_json():
        return error_response(401)
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def require_csrf_token() -> None:
    """Every cookie-authenticated (or anonymous) state change carries the CSRF token.

    Bearer-token requests are exempt: a browser never attaches that header cross-site.
    """
    if request.method not in UNSAFE_METHODS or request.routing_exception is not None:
        return
    if current_user.is_authenticated and current_user.via is Channel.API_TOKEN:
        return
    try:
        if _from_another_site():
            raise CSRFError("The request came from another site.")
        current_app.extensions["csrf"].protect()
    except CSRFError as exc:
        if current_user.is_authenticated:
            # A forged request riding a signed-in person's cookie: worth the auditor's eyes.
            raise audited_refusal("csrf", current_user.user_id, exc) from None
        audit.unauthenticated_denial(
            context.db_session(),
            _denial_event("csrf", None),
            request.remote_addr,
            context.runtime().clock(),
        )
        raise


def audited_refusal(
    reason: str, actor_id: uuid.UUID | None, error: ErrorT, object_id: str | None = None
) -> ErrorT:
    """Audit a refusal made here in the web layer; returns ``error`` to raise."""
    return audit.refused(context.db_session(), _denial_event(reason, actor_id, object_id), error)


def _denial_event(
    reason: str, actor_id: uuid.UUID | None, object_id: str | None = None
) -> audit.Event:
    return audit.Event(
        audit.AuditAction.ACCESS_DENIED,
        outcome=audit.Outcome.DENIED,
        actor_id=actor_id,
        object_id=object_id,
        details={"reason": reason, "endpoint": request.endpoint, "method": request.method},
        context=request_context(),
    )


def _from_another_site() -> bool:
    """Whether the browser says the request was made by a page of another site.

    A request without these headers (a script, an old browser) is judged by the CSRF token
    and the SameSite cookie alone.
    """
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin not in _own_origins()


def _own_origins() -> frozenset[str]:
    # The address the request reached (the Host header, or the proxy's X-Forwarded-Host
    # under VAULT_PROXY_COUNT) and the configured public address, which is the one that
    # counts behind a proxy that does not pass the port on.
    own = {request.host_url.rstrip("/")}
    public = urlsplit(context.settings().base_url)
    own.add(f"{public.scheme}://{public.netloc}")
    return frozenset(own)


def require_roles(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view for the named roles only; anyone else signed in gets 403."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if not (current_user.is_authenticated and current_user.has_role(*roles)):
                actor_id = current_user.user_id if current_user.is_authenticated else None
                raise audited_refusal("role", actor_id, PermissionDenied())
            return view(*args, **kwargs)

        return guarded

    return decorate


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def init_app(app: Flask) -> None:
    # Registered before CSRF protection, so an anonymous state change is answered
    # "sign in" rather than revealing which endpoints exist behind a CSRF error.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked by require_csrf_token instead
    app.before_request(limit_body_size)
    app.before_request(refuse_cross_origin_preflight)
    app.before_request(require_sign_in)
    app.before_request(require_csrf_token)
    app.after_request(add_security_headers)
