"""The one place where failures become HTTP answers.

API clients get ``application/problem+json`` (RFC 9457); browsers get a page in their
language. Neither ever shows a stack trace: internal details go to the log only.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from vault.services import errors as service_errors
from vault.services.errors import N_

logger = logging.getLogger(__name__)

STATUS_MESSAGES: dict[int, str] = {
    400: N_("The request could not be understood. Reload the page and try again."),
    401: N_("Please sign in to continue."),
    403: N_("You do not have permission to do this."),
    404: N_("The page or item was not found."),
    405: N_("This action is not allowed here."),
    409: N_("This conflicts with the current state. Reload and try again."),
    410: N_("This item has been deleted."),
    412: N_("A precondition of the request was not met."),
    413: N_("The file or request is too large."),
    415: N_("This file type is not accepted."),
    416: N_("The requested range is outside the recording."),
    422: N_("Some fields need correcting."),
    423: N_("This item is busy. Try again in a moment."),
    429: N_("Too many attempts. Please wait a while and try again."),
    500: N_("Something went wrong on our side. The error has been logged."),
    503: N_("The service is temporarily unavailable. Please try again in a few minutes."),
}
STATUS_TITLES: dict[int, str] = {
    400: N_("Bad request"),
    401: N_("Sign-in required"),
    403: N_("Access denied"),
    404: N_("Not found"),
    405: N_("Method not allowed"),
    409: N_("Conflict"),
    410: N_("Deleted"),
    412: N_("Precondition failed"),
    413: N_("Too large"),
    415: N_("Unsupported file type"),
    416: N_("Range not satisfiable"),
    422: N_("Invalid input"),
    423: N_("Busy"),
    429: N_("Too many requests"),
    500: N_("Internal error"),
    503: N_("Service unavailable"),
}

SERVICE_STATUS: dict[type[service_errors.ServiceError], int] = {
    service_errors.NotFound: 404,
    service_errors.PermissionDenied: 403,
    service_errors.Conflict: 409,
    service_errors.Gone: 410,
    service_errors.PayloadTooLarge: 413,
    service_errors.UnsupportedMediaType: 415,
    service_errors.RangeNotSatisfiable: 416,
    service_errors.ValidationFailed: 422,
    service_errors.TooManyRequests: 429,
    service_errors.UploadBusy: 423,
    service_errors.StorageUnavailable: 503,
    service_errors.KeysUnavailable: 503,
    service_errors.IntegrityFailure: 500,
}

RETRY_AFTER_SECONDS = "30"
CSRF_MESSAGE = N_(
    "The form's security token is missing or has expired. Reload the page and try again."
)


def wants_problem_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(
    status: int,
    detail: str | None = None,
    params: dict[str, str | int] | None = None,
    field_errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a failure for the client at hand; ``detail`` is an untranslated message id."""
    title = gettext(STATUS_TITLES.get(status, STATUS_TITLES[500]))
    message = gettext(detail or STATUS_MESSAGES.get(status, STATUS_MESSAGES[500]), **(params or {}))
    translated_fields = {
        name: [gettext(m) for m in messages] for name, messages in (field_errors or {}).items()
    }
    if wants_problem_json():
        body: dict[str, object] = {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": message,
        }
        if translated_fields:
            body["errors"] = translated_fields
        response = jsonify(body)
        response.mimetype = "application/problem+json"
    else:
        response = Response(
            render_template(
                "error.html",
                status=status,
                title=title,
                message=message,
                field_errors=translated_fields,
            ),
            mimetype="text/html",
        )
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    if status == 401 and request.path.startswith("/api/"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="recording-vault"'
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if exc.response is not None:
        # Preserve headers a raiser set deliberately (Allow on 405, Content-Range on 416).
        headers = {k: v for k, v in exc.response.headers.items() if k in ("Allow", "Content-Range")}
    elif status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    detail = CSRF_MESSAGE if isinstance(exc, CSRFError) else None
    return error_response(status, detail, headers=headers)


def _handle_service_error(exc: service_errors.ServiceError) -> Response:
    status = next(
        (code for cls, code in SERVICE_STATUS.items() if isinstance(exc, cls)),
        400,
    )
    field_errors = exc.field_errors if isinstance(exc, service_errors.ValidationFailed) else None
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return error_response(
        status, exc.message, exc.params, field_errors=field_errors, headers=headers
    )


def _handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(service_errors.ServiceError, _handle_service_error)
    app.register_error_handler(Exception, _handle_unexpected)
