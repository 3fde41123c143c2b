"""Public pages of the shell: the landing page, the language switch and the health check."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, redirect, render_template, request
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from vault.services import health, landing, reminders
from vault.services.accounts import Role
from vault.web import context
from vault.web.auth import current_actor, now
from vault.web.i18n import LANGUAGE_COOKIE, LANGUAGE_COOKIE_MAX_AGE, LANGUAGES

blueprint = Blueprint("pages", __name__)


@blueprint.get("/")
def index() -> str:
    """The welcome page; signed in, each role's own work (``landing``) and what is about to
    be destroyed."""
    if not current_user.is_authenticated:
        return render_template("index.html", landing=None, deletions=[], unset_year=None)
    actor = current_actor()
    db, settings = context.db_session(), context.settings()
    unset_year = None
    if actor.has_role(Role.ADMIN):
        unset_year = reminders.last_day_unset(db, settings, now())
    return render_template(
        "index.html",
        landing=landing.landing(context.runtime(), actor.account_id, now()),
        deletions=reminders.coming_deletions(db, settings, actor.account_id, actor.roles, now()),
        unset_year=unset_year,
    )


@blueprint.post("/language")
def set_language() -> BaseResponse:
    language = request.form.get("lang", "")
    target = _local_target(request.form.get("next", ""))
    response = redirect(target, code=303)
    if language in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE,
            language,
            max_age=LANGUAGE_COOKIE_MAX_AGE,
            secure=context.settings().served_over_https,
            httponly=True,
            samesite="Lax",
        )
    return response


def _local_target(target: str) -> str:
    """Only same-site paths: an open redirect would lend the school's domain to phishing."""
    target = target.replace("\\", "/")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    runtime = context.runtime()
    report = health.check(runtime.sessions, runtime.store)
    body = jsonify(
        status="ok" if report.ok else "unavailable",
        database="ok" if report.database_ok else "unavailable",
        storage="ok" if report.storage_ok else "unavailable",
    )
    body.headers["Cache-Control"] = "no-store"
    if not report.ok:
        body.headers["Retry-After"] = "30"
    return body, 200 if report.ok else 503
