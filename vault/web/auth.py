"""Sign-in, sign-out, account links, and who the current request acts as.

A browser session is a random token in the (signed) session cookie, looked up in the
database on every request. A request with an ``Authorization: Bearer`` header is judged
by that token alone, and the session cookie is ignored, so a cross-site request cannot
borrow the cookie while claiming token semantics (which are exempt from CSRF checks).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar
from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user, login_user, logout_user
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from vault.models import User
from vault.services import accounts, authentication, links, tokens
from vault.services.actors import Actor, Channel
from vault.services.audit import RequestContext
from vault.services.errors import ServiceError, ValidationFailed
from vault.services.links import LinkPurpose
from vault.services.mail import MailNotSent, configured_mailer
from vault.web import context

blueprint = Blueprint("auth", __name__)

LOGIN_RATE_LIMIT = "20 per minute; 200 per hour"
LINK_SALT = "account-link"


@dataclass(frozen=True)
class SignedIn(Actor):
    """The request's actor as Flask-Login carries it: the names the pages show, and the
    session cookie's token, which is Flask-Login's id for it and never leaves this layer."""

    username: str = ""
    full_name: str = ""
    cookie_token: str | None = field(default=None, repr=False)

    is_authenticated: ClassVar[bool] = True
    is_active: ClassVar[bool] = True
    is_anonymous: ClassVar[bool] = False

    @classmethod
    def for_request(
        cls,
        user: User,
        *,
        via: Channel,
        login_session_id: str | None = None,
        cookie_token: str | None = None,
    ) -> SignedIn:
        return cls(
            user.id,
            user.roles,
            via,
            login_session_id,
            request_context(),
            user.username,
            user.full_name,
            cookie_token,
        )

    def get_id(self) -> str | None:
        return self.cookie_token


def now() -> datetime:
    return context.runtime().clock()


def request_context() -> RequestContext:
    return RequestContext(
        ip_address=request.remote_addr, user_agent=request.user_agent.string or None
    )


def account_secrets() -> accounts.Secrets:
    return accounts.Secrets.from_secret_key(current_app.config["SECRET_KEY"])


def second_factors() -> authentication.SecondFactors:
    return authentication.SecondFactors(context.runtime().keyring, account_secrets())


def current_actor() -> SignedIn:
    """Who the current (signed-in) request acts as; views behind ``login_required`` only."""
    actor: SignedIn = current_user._get_current_object()
    return actor


def _load_from_cookie(token: str) -> SignedIn | None:
    if request.authorization is not None:
        return None
    active = authentication.resolve_session(context.db_session(), token, now())
    if active is None:
        return None
    # A session opened before a privileged role was granted lacks the second factor.
    if accounts.requires_totp(active.user.roles) and not active.second_factor:
        return None
    return SignedIn.for_request(
        active.user, via=Channel.BROWSER, login_session_id=active.session_id, cookie_token=token
    )


def _load_from_bearer(req: object) -> SignedIn | None:
    auth = request.authorization
    if auth is None or auth.type != "bearer" or not auth.token:
        return None
    user = tokens.authenticate_token(
        context.db_session(), account_secrets(), auth.token, request_context(), now()
    )
    return SignedIn.for_request(user, via=Channel.API_TOKEN) if user is not None else None


def _link_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=LINK_SALT)


def link_url(link_id: uuid.UUID, purpose: LinkPurpose) -> str:
    token = _link_serializer().dumps({"link": str(link_id), "purpose": purpose.value})
    return context.settings().base_url + url_for("auth.link_setup", token=token)


def mail_reaches(user: User) -> bool:
    return bool(context.settings().smtp_url and user.email)


def send_link(user: User, url: str, purpose: LinkPurpose) -> bool:
    """E-mail a link to its holder; False (with the reason flashed) if it could not go."""
    mailer = configured_mailer(context.settings())
    assert mailer is not None and user.email
    if purpose is LinkPurpose.INVITATION:
        subject = gettext("Your Recording Vault account")
        body = gettext(
            "An account was created for you. Set your password within 48 hours: %(url)s", url=url
        )
    elif purpose is LinkPurpose.SECOND_FACTOR:
        subject = gettext("Set up a new second factor for Recording Vault")
        body = gettext(
            "A reset of your second factor was approved. Within 48 hours, open this link, "
            "enter your password and set up your authenticator app again: %(url)s. If you did "
            "not ask for this, tell your data-protection officer at once.",
            url=url,
        )
    else:
        subject = gettext("Reset your Recording Vault password")
        body = gettext("Set a new password within 48 hours: %(url)s", url=url)
    try:
        mailer.send(user.email, subject, body)
    except MailNotSent as exc:
        if links.is_privileged(user):
            flash(gettext("The e-mail could not be sent, so no link was handed over."), "error")
        else:
            flash(gettext(exc.message), "error")
        return False
    return True


def _link_id_from(token: str) -> uuid.UUID:
    max_age = int(accounts.LINK_LIFETIME.total_seconds())
    try:
        payload = _link_serializer().loads(token, max_age=max_age)
        return uuid.UUID(payload["link"])
    except (BadSignature, SignatureExpired, KeyError, TypeError, ValueError):
        raise links.LinkInvalid() from None


def _safe_next(target: str | None) -> str:
    if not target:
        return url_for("pages.index")
    target = target.replace("\\", "/")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str | tuple[str, int]:
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(url_for("pages.index"))
        return render_template("login.html", next=request.args.get("next", ""))
    try:
        result = authentication.sign_in(
            context.db_session(),
            second_factors(),
            context.runtime().passwords,
            authentication.Credentials(
                username=request.form.get("username", ""),
                password=request.form.get("password", ""),
                second_factor=request.form.get("totp", ""),
            ),
            request_context(),
            now(),
        )
    except authentication.LockedOut as exc:
        page = render_template(
            "login.html",
            error=gettext(exc.message, **exc.params),
            next="",
            username=request.form.get("username", ""),
        )
        response = Response(page, status=429)
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response
    except (authentication.SignInFailed, authentication.SecondFactorNotEnrolled) as exc:
        return render_template(
            "login.html",
            error=gettext(exc.message),
            next=request.form.get("next", ""),
            username=request.form.get("username", ""),
        ), 401
    # A fresh cookie session at sign-in: whatever the browser held before (a planted
    # session, an old CSRF token) does not survive into the signed-in session.
    session.clear()
    login_user(
        SignedIn.for_request(result.user, via=Channel.BROWSER, cookie_token=result.session_token)
    )
    return redirect(_safe_next(request.form.get("next")), code=302)


@blueprint.post("/logout")
def logout() -> BaseResponse:
    actor = current_actor()
    if actor.login_session_id is not None:
        authentication.sign_out(
            context.db_session(), actor.login_session_id, request_context(), now()
        )
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@blueprint.route("/account/setup/<token>", methods=["GET", "POST"])
def link_setup(token: str) -> BaseResponse | str | tuple[str, int]:
    db = context.db_session()
    try:
        link_id = _link_id_from(token)
        target = links.open_link(db, context.runtime().keyring, link_id, now())
    except links.LinkInvalid as exc:
        return render_template(
            "error.html",
            status=410,
            title=gettext("Link not valid"),
            message=gettext(exc.message),
            field_errors={},
        ), 410
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        repeated = request.form.get("password", "") == request.form.get("password_repeat", "")
        if not (target.keeps_password or repeated):
            errors = {"password_repeat": [gettext("The passwords do not match.")]}
        else:
            try:
                codes = links.redeem_link(
                    db,
                    second_factors(),
                    context.runtime().passwords,
                    link_id,
                    links.LinkAnswers(
                        password=request.form.get("password", ""),
                        totp=request.form.get("totp", ""),
                        current_code=request.form.get("current_code", ""),
                    ),
                    request_context(),
                    now(),
                )
                db.commit()
            except ValidationFailed as exc:
                db.rollback()
                errors = {k: [gettext(m) for m in v] for k, v in exc.field_errors.items()}
            else:
                return render_template("account_ready.html", recovery_codes=codes)
    qr_svg = None
    if target.pending_totp_secret is not None:
        uri = authentication.totp_uri(
            target.pending_totp_secret, target.user.username, gettext("Recording Vault")
        )
        qr_svg = segno.make(uri, error="m").svg_data_uri(scale=5)
    return render_template(
        "link_setup.html",
        target=target,
        qr_svg=qr_svg,
        errors=errors,
        purpose=target.link.purpose,
    ), (422 if errors else 200)


def init_app(app: Flask) -> None:
    login_manager = LoginManager()
    login_manager.session_protection = None  # sessions are checked on the server instead
    login_manager.user_loader(_load_from_cookie)
    login_manager.request_loader(_load_from_bearer)
    login_manager.init_app(app)
    settings = context.settings_of(app)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.ratelimit_storage_url or "memory://",
        headers_enabled=True,
        strategy="moving-window",
    )
    limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])(blueprint)
    app.register_blueprint(blueprint)


def flash_service_error(exc: ServiceError) -> None:
    flash(gettext(exc.message, **exc.params) if exc.params else gettext(exc.message), "error")
