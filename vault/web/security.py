"""Deny by default: every endpoint needs a signed-in user unless it is listed here.

A new view is therefore protected the day it is written; making one public is a
deliberate, reviewable edit of ``PUBLIC_ENDPOINTS``.
"""

from __future__ import annotations

from flask import Flask, Response, request
from flask_login import current_user

from vault.web.errors import error_response

PUBLIC_ENDPOINTS: frozenset[str] = frozenset(
    {
        "static",
        "pages.index",
        "pages.healthz",
        "pages.set_language",
    }
)

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
    "Referrer-Policy": "no-referrer",
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


def require_sign_in() -> Response | None:
    # A URL that matches no route (404, 405) has no endpoint to protect; let routing answer.
    if request.routing_exception is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_user.is_authenticated:
        return None
    return error_response(401)


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def init_app(app: Flask) -> None:
    # Registered before CSRF protection, so an anonymous state change is answered
    # "sign in" rather than revealing which endpoints exist behind a CSRF error.
    app.before_request(require_sign_in)
    app.after_request(add_security_headers)
