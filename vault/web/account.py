"""The signed-in person's own account: password, personal API tokens."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import logout_user
from werkzeug.wrappers import Response as BaseResponse

from vault.services import accounts, authentication, links, tokens
from vault.services.accounts import Role
from vault.services.actors import Channel
from vault.services.errors import N_, Conflict, NotFound, PermissionDenied, ValidationFailed
from vault.services.links import LinkPurpose
from vault.web import context
from vault.web.auth import (
    account_secrets,
    current_actor,
    link_url,
    mail_reaches,
    now,
    second_factors,
    send_link,
)
from vault.web.responses import redirect_with_success, translated
from vault.web.security import require_roles

blueprint = Blueprint("account", __name__, url_prefix="/account")

DEFAULT_TOKEN_DAYS = 30


def _render(status: int = 200, **extra: object) -> Response:
    db = context.db_session()
    actor = current_actor()
    user = accounts.get_user(db, actor.account_id)
    page = render_template(
        "account.html",
        user=user,
        tokens=tokens.list_tokens(db, actor.account_id),
        needs_totp=accounts.requires_totp(user.roles),
        approves_second_factors="director" in user.roles or "auditor" in user.roles,
        now=now(),
        default_token_days=DEFAULT_TOKEN_DAYS,
        errors=extra.pop("errors", {}),
        **extra,
    )
    response = Response(page, status=status, mimetype="text/html")
    # The page may show a new token once; it must not linger in any cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("")
def overview() -> Response:
    return _render()


@blueprint.post("/password")
def change_password() -> BaseResponse:
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    if request.form.get("new_password", "") != request.form.get("new_password_repeat", ""):
        return _render(
            422, errors={"new_password_repeat": [gettext("The passwords do not match.")]}
        )
    try:
        accounts.change_password(
            db,
            context.runtime().passwords,
            current_actor(),
            user,
            request.form.get("current_password", ""),
            request.form.get("new_password", ""),
            now(),
        )
    except ValidationFailed as exc:
        db.rollback()
        return _render(422, errors=translated(exc))
    db.commit()
    logout_user()
    return redirect_with_success(
        gettext("Your password was changed. Please sign in again."), "auth.login"
    )


@blueprint.post("/tokens")
def create_token() -> Response:
    if current_actor().via is Channel.API_TOKEN:
        # A token must not mint tokens: a leaked one would otherwise renew itself forever.
        raise PermissionDenied(N_("API tokens are created from a signed-in browser session."))
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    secrets_ = account_secrets()
    try:
        if accounts.requires_totp(user.roles):
            authentication.verify_second_factor(
                db, second_factors(), user, request.form.get("totp", ""), now()
            )
        days = request.form.get("days", str(DEFAULT_TOKEN_DAYS)).strip()
        if not days.isdigit():
            raise ValidationFailed({"days": [gettext("Enter a whole number of days.")]})
        # The token is always the signed-in person's own: no form field can name another.
        issued = tokens.create_token(
            db,
            secrets_,
            current_actor(),
            user,
            request.form.get("name", ""),
            timedelta(days=int(days)),
            now(),
        )
    except authentication.SecondFactorRequired as exc:
        db.rollback()
        return _render(403, errors={"totp": [gettext(exc.message)]})
    except ValidationFailed as exc:
        db.rollback()
        errors = translated(exc)
        # The service names the lifetime as the API does; the form asks for it in days.
        if "ttl" in errors:
            errors.setdefault("days", []).extend(errors.pop("ttl"))
        return _render(422, errors=errors)
    db.commit()
    return _render(201, new_token=issued.token, new_token_name=issued.record.name)


@blueprint.post("/second-factor-resets")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def approve_second_factor_reset() -> BaseResponse:
    """The auditor approves a director's lost second factor, or the director an auditor's:
    the link goes to the holder's e-mail only, never to the approver's screen."""
    db = context.db_session()
    approver = accounts.get_user(db, current_actor().account_id)
    holder = accounts.find_user(db, request.form.get("username", ""))
    if holder is None:
        raise NotFound()
    if not mail_reaches(holder):
        raise Conflict(links.PRIVILEGED_LINKS_BY_MAIL)
    link = links.approve_second_factor_reset(db, current_actor(), approver, holder, now())
    db.commit()
    if send_link(holder, link_url(link.id, LinkPurpose.SECOND_FACTOR), LinkPurpose.SECOND_FACTOR):
        flash(gettext("The link was sent to the account holder by e-mail."), "success")
    return redirect(url_for("account.overview"))


@blueprint.post("/tokens/<uuid:token_id>/revoke")
def revoke_token(token_id: uuid.UUID) -> BaseResponse:
    db = context.db_session()
    tokens.revoke_token(db, current_actor(), token_id, now(), owner_id=current_actor().account_id)
    db.commit()
    return redirect_with_success(gettext("The token was revoked."), "account.overview")
