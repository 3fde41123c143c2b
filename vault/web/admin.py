"""The administrator's pages: invite accounts, set roles, disable and re-enable, reset links.

The administrator runs the machine but cannot act as anyone: no page here signs in as
another person or issues a token on their behalf.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from vault.models import AccountLink, User
from vault.services import accounts, authentication, calendar, links, reminders, year_end
from vault.services.accounts import Role
from vault.services.errors import Conflict, ValidationFailed
from vault.services.links import LinkPurpose
from vault.web import context
from vault.web.auth import (
    current_actor,
    link_url,
    mail_reaches,
    now,
    second_factors,
    send_link,
)
from vault.web.responses import redirect_with_success, translated
from vault.web.security import require_roles

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


def _render_users(status: int = 200, **extra: object) -> Response:
    page = render_template(
        "admin_users.html",
        users=accounts.list_users(context.db_session()),
        roles=list(Role),
        errors=extra.pop("errors", {}),
        form=extra.pop("form", MultiDict()),
        **extra,
    )
    return Response(page, status=status, mimetype="text/html")


def _render_user(user: User, status: int = 200, **extra: object) -> Response:
    page = render_template(
        "admin_user.html",
        user=user,
        roles=list(Role),
        needs_totp=accounts.requires_totp(user.roles),
        errors=extra.pop("errors", {}),
        **extra,
    )
    response = Response(page, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # may show a set-up link
    return response


def _hand_over(user: User, link: AccountLink, status: int) -> Response:
    """E-mail the link to its holder; show it to the admin only for an unprivileged account
    when no e-mail can reach the holder (never for one whose holder could be impersonated)."""
    purpose = LinkPurpose(link.purpose)
    url = link_url(link.id, purpose)
    if mail_reaches(user) and send_link(user, url, purpose):
        flash(gettext("The link was sent to the account holder by e-mail."), "success")
        return _render_user(user, status)
    if links.is_privileged(user):
        return _render_user(user, status)
    return _render_user(user, status, link=url)


@blueprint.get("/users")
@require_roles(Role.ADMIN)
def users() -> Response:
    return _render_users()


@blueprint.post("/users")
@require_roles(Role.ADMIN)
def invite() -> Response:
    db = context.db_session()
    form = request.form
    try:
        user = accounts.create_user(
            db,
            context.runtime().passwords,
            current_actor(),
            accounts.NewAccount(
                username=form.get("username", ""),
                full_name=form.get("full_name", ""),
                email=form.get("email") or None,
                roles=form.getlist("roles"),
                password=None,
            ),
        )
        if links.is_privileged(user) and not mail_reaches(user):
            raise ValidationFailed({"email": [links.PRIVILEGED_LINKS_BY_MAIL]})
        link = links.create_link(db, current_actor(), user, LinkPurpose.INVITATION, now())
    except ValidationFailed as exc:
        db.rollback()
        return _render_users(422, errors=translated(exc), form=form)
    db.commit()
    return _hand_over(user, link, 201)


@blueprint.get("/users/<uuid:user_id>")
@require_roles(Role.ADMIN)
def user_detail(user_id: uuid.UUID) -> Response:
    return _render_user(accounts.get_user(context.db_session(), user_id))


@blueprint.post("/users/<uuid:user_id>/roles")
@require_roles(Role.ADMIN)
def set_roles(user_id: uuid.UUID) -> BaseResponse:
    db = context.db_session()
    user = accounts.get_user(db, user_id)
    try:
        accounts.set_roles(db, current_actor(), user, request.form.getlist("roles"))
    except ValidationFailed as exc:
        db.rollback()
        return _render_user(accounts.get_user(db, user_id), 422, errors=translated(exc))
    db.commit()
    return redirect_with_success(
        gettext("The roles were saved."), "admin.user_detail", user_id=user_id
    )


@blueprint.post("/users/<uuid:user_id>/disable")
@require_roles(Role.ADMIN)
def disable(user_id: uuid.UUID) -> BaseResponse:
    return _set_disabled(user_id, disabled=True)


@blueprint.post("/users/<uuid:user_id>/enable")
@require_roles(Role.ADMIN)
def enable(user_id: uuid.UUID) -> BaseResponse:
    return _set_disabled(user_id, disabled=False)


def _set_disabled(user_id: uuid.UUID, *, disabled: bool) -> BaseResponse:
    db = context.db_session()
    user = accounts.get_user(db, user_id)
    try:
        accounts.set_disabled(db, current_actor(), user, disabled, now())
    except Conflict as exc:
        db.rollback()
        flash(gettext(exc.message), "error")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    db.commit()
    return redirect_with_success(
        gettext("The account was disabled and its sessions ended.")
        if disabled
        else gettext("The account was enabled."),
        "admin.user_detail",
        user_id=user_id,
    )


@blueprint.post("/users/<uuid:user_id>/reset-link")
@require_roles(Role.ADMIN)
def reset_link(user_id: uuid.UUID) -> Response:
    db = context.db_session()
    user = accounts.get_user(db, user_id)
    if links.is_privileged(user) and not mail_reaches(user):
        raise Conflict(links.PRIVILEGED_LINKS_BY_MAIL)
    link = links.create_link(db, current_actor(), user, LinkPurpose.RESET, now())
    db.commit()
    return _hand_over(user, link, 200)


def _second_factor_confirmed() -> None:
    """A destructive act needs the admin's second factor again, typed now."""
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    authentication.verify_second_factor(
        db, second_factors(), user, request.form.get("totp", ""), now()
    )


def _set_last_day() -> calendar.LastDaySet:
    """The calendar form's change. One that destroys within 30 days goes through only with
    the confirmation box ticked and the admin's code, checked after every other rule."""
    raw_day = request.form.get("last_day", "")
    try:
        last_day = date.fromisoformat(raw_day)
    except ValueError:
        raise ValidationFailed({"last_day": [gettext("Enter a date as YYYY-MM-DD.")]}) from None
    change = calendar.LastDayChange(request.form.get("school_year", ""), last_day)
    runtime, db = context.runtime(), context.db_session()
    try:
        return calendar.set_last_day(
            db, runtime.store, current_actor(), change, now(), context.settings()
        )
    except calendar.ConfirmationRequired:
        if request.form.get("confirm") != "yes":
            raise
        db.rollback()
    _second_factor_confirmed()
    return calendar.set_last_day(
        db,
        runtime.store,
        current_actor(),
        dataclasses.replace(change, confirmed=True),
        now(),
        context.settings(),
    )


@blueprint.route("/calendar", methods=["GET", "POST"])
@require_roles(Role.ADMIN)
def school_calendar() -> BaseResponse | tuple[str, int]:
    db = context.db_session()
    errors: dict[str, list[str]] = {}
    pending: calendar.Consequence | None = None
    if request.method == "POST":
        try:
            done = _set_last_day()
        except ValidationFailed as exc:
            db.rollback()
            errors = translated(exc)
        except calendar.ConfirmationRequired as exc:
            db.rollback()
            pending = exc.consequence
        except authentication.SecondFactorRequired as exc:
            db.rollback()
            errors = {"totp": [gettext(exc.message)]}
        else:
            db.commit()
            reminders.send_reminders(context.runtime(), now(), done.school_year)
            return redirect_with_success(
                gettext("Saved. %(count)s stored recordings were re-tagged.", count=done.retagged),
                "admin.school_calendar",
            )
    status = 403 if "totp" in errors else 422 if errors else 409 if pending else 200
    return _render_calendar(errors, pending), status


def _render_calendar(
    errors: dict[str, list[str]], pending: calendar.Consequence | None = None
) -> str:
    db = context.db_session()
    settings = context.settings()
    today = now().astimezone(settings.zone).date()
    return render_template(
        "admin_calendar.html",
        years=[
            (entry, year_end.progress(db, entry.school_year)) for entry in calendar.known_years(db)
        ],
        current_year=calendar.school_year_of(today),
        shred_hour=settings.shred_hour,
        errors=errors,
        form=request.form,
        pending=pending,
    )


@blueprint.post("/year-end")
@require_roles(Role.ADMIN)
def run_year_end() -> BaseResponse | tuple[str, int]:
    """The early year-end from the browser: the admin's second factor, and the school year
    typed again as the confirmation. The year closes at once; the scheduler finishes it."""
    db = context.db_session()
    school_year = request.form.get("school_year", "").strip()
    try:
        if request.form.get("confirm_year", "").strip() != school_year or not school_year:
            raise ValidationFailed(
                {"confirm_year": [gettext("Type the school year again to confirm.")]}
            )
        _second_factor_confirmed()
        db.commit()  # the used code's time step, so that it cannot be replayed
    except ValidationFailed as exc:
        db.rollback()
        return _render_calendar({"year_end": translated(exc).get("confirm_year", [])}), 422
    except authentication.SecondFactorRequired as exc:
        db.rollback()
        return _render_calendar({"year_end": [gettext(exc.message)]}), 403
    year_end.close_now(context.runtime(), school_year, now(), actor=current_actor())
    return redirect_with_success(
        gettext(
            "The school year %(year)s is closed: nobody can watch, upload or order its "
            "recordings any more. The scheduled lifecycle run destroys its key and "
            "recordings within the hour and issues the deletion certificate.",
            year=school_year,
        ),
        "admin.school_calendar",
    )
