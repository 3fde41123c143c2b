"""Access orders (director's pages and the JSON API), the designated person's list, and the
director's register of recordings.

The views only translate HTTP into calls of ``vault.services.orders`` and back; who may do
what is decided there and in the one access policy.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from vault.models import User
from vault.services import accounts, orders
from vault.services import register as recordings_register
from vault.services.access import Status
from vault.services.accounts import Role
from vault.services.actors import Channel
from vault.services.errors import ValidationFailed
from vault.services.recordings import PURPOSE_LABELS
from vault.web import context
from vault.web.auth import current_actor, now
from vault.web.responses import translated
from vault.web.security import require_roles

pages = Blueprint("orders", __name__)
api = Blueprint("orders_api", __name__, url_prefix="/api/v1")

DESIGNATABLE = tuple(sorted({Role.TEACHER, Role.STAFF, Role.DIRECTOR}))


def _user() -> User:
    return accounts.get_user(context.db_session(), current_actor().account_id)


def _second_factor_session() -> bool:
    """A browser session (never an API token); a director's session always passed TOTP,
    because ``auth`` refuses a privileged role's cookie session without it."""
    actor = current_actor()
    return actor.via is Channel.BROWSER and actor.login_session_id is not None


def _today() -> date:
    return now().astimezone(context.settings().zone).date()


def _no_store(response: Response) -> Response:
    # Orders and the register name pupils' classes and staff; keep them out of caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def _issue(raw: dict[str, Any]) -> orders.OrderDocument:
    db = context.db_session()
    settings = context.settings()
    order = orders.issue(
        db,
        current_actor(),
        _user(),
        raw,
        now(),
        settings.zone,
        second_factor_session=_second_factor_session(),
    )
    db.commit()
    return orders.document(db, order, _today())


def _revoke(order_id: uuid.UUID, reason: str) -> orders.OrderDocument:
    db = context.db_session()
    order = orders.revoke(db, current_actor(), _user(), order_id, reason, now())
    db.commit()
    return orders.document(db, order, _today())


# -- JSON API ---------------------------------------------------------------------------------


@api.post("/orders")
def api_issue() -> tuple[Response, int]:
    raw = request.get_json(silent=True)
    issued = _issue(raw if isinstance(raw, dict) else {})
    response = jsonify(issued.as_json())
    response.headers["Location"] = url_for("orders_api.api_order", order_id=issued.order.id)
    return _no_store(response), 201


@api.get("/orders")
def api_orders() -> Response:
    found = orders.list_orders(
        context.db_session(), current_actor(), _user(), now(), context.settings().zone
    )
    return _no_store(jsonify(orders=[item.as_json() for item in found]))


@api.get("/orders/<uuid:order_id>")
def api_order(order_id: uuid.UUID) -> Response:
    found = orders.read(
        context.db_session(), current_actor(), _user(), order_id, now(), context.settings().zone
    )
    return _no_store(jsonify(found.as_json()))


@api.post("/orders/<uuid:order_id>/revoke")
def api_revoke(order_id: uuid.UUID) -> Response:
    raw = request.get_json(silent=True)
    reason = raw.get("reason") if isinstance(raw, dict) else None
    revoked = _revoke(order_id, reason if isinstance(reason, str) else "")
    return _no_store(jsonify(revoked.as_json()))


# -- the director's pages ---------------------------------------------------------------------
# Issuing and revoking carry no role decorator: the service refuses a non-director itself and
# audits the refusal, which a decorator's bare 403 would not.


def form_to_order(form: MultiDict[str, str]) -> dict[str, Any]:
    """The order form, in the shape of the API's JSON body."""
    raw: dict[str, Any] = {
        name: form.get(name, "")
        for name in ("number", "issued_on", "purpose", "valid_from", "valid_until")
    }
    raw["grantees"] = form.getlist("grantees")
    if form.get("selection") == "filter":
        raw["filter"] = {
            "teacher": form.get("filter_teacher", ""),
            "class_group": form.get("filter_class_group", ""),
            "from": form.get("filter_from", ""),
            "to": form.get("filter_to", ""),
        }
    else:
        raw["recording_ids"] = form.getlist("recording_ids")
    return raw


def _form_page(form: MultiDict[str, str], errors: dict[str, list[str]], status: int) -> Response:
    db = context.db_session()
    teachers, classes, _years = recordings_register.filter_choices(db)
    page = render_template(
        "orders_new.html",
        form=form,
        errors=errors,
        people=orders.designatable_people(db),
        recordings=orders.watchable_recordings(db),
        teachers=teachers,
        classes=classes,
        today=_today(),
    )
    return _no_store(Response(page, status=status, mimetype="text/html"))


@pages.get("/orders")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def index() -> Response:
    found = orders.list_orders(
        context.db_session(), current_actor(), _user(), now(), context.settings().zone
    )
    page = render_template("orders.html", orders=found, state_labels=orders.ORDER_STATE_LABELS)
    return _no_store(Response(page, mimetype="text/html"))


@pages.get("/orders/new")
@require_roles(Role.DIRECTOR)
def new() -> Response:
    today = _today().isoformat()
    return _form_page(
        MultiDict({"issued_on": today, "valid_from": today, "selection": "pick"}), {}, 200
    )


@pages.post("/orders")
def issue() -> BaseResponse:
    try:
        issued = _issue(form_to_order(request.form))
    except ValidationFailed as exc:
        context.db_session().rollback()
        errors = translated(exc)
        if exc.params:
            errors.setdefault("", []).append(gettext(exc.message, **exc.params))
        return _form_page(request.form, errors, 422)
    flash(gettext("Order %(number)s was issued.", number=issued.order.number), "success")
    return redirect(url_for("orders.detail", order_id=issued.order.id), code=303)


def _document_page(
    order_id: uuid.UUID, errors: dict[str, list[str]], status: int, *, can_revoke: bool
) -> Response:
    found = orders.read(
        context.db_session(), current_actor(), _user(), order_id, now(), context.settings().zone
    )
    page = render_template(
        "orders_document.html",
        document=found,
        state_labels=orders.ORDER_STATE_LABELS,
        can_revoke=can_revoke,
        school_address=context.settings().school_address,
        errors=errors,
    )
    return _no_store(Response(page, status=status, mimetype="text/html"))


@pages.get("/orders/<uuid:order_id>")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def detail(order_id: uuid.UUID) -> Response:
    return _document_page(order_id, {}, 200, can_revoke=Role.DIRECTOR in current_actor().roles)


@pages.post("/orders/<uuid:order_id>/revoke")
def revoke(order_id: uuid.UUID) -> BaseResponse:
    try:
        revoked = _revoke(order_id, request.form.get("reason", ""))
    except ValidationFailed as exc:
        context.db_session().rollback()
        return _document_page(order_id, translated(exc), 422, can_revoke=True)
    flash(gettext("Order %(number)s was revoked.", number=revoked.order.number), "success")
    return redirect(url_for("orders.detail", order_id=order_id), code=303)


# -- the designated person's list -------------------------------------------------------------


@pages.get("/available")
@require_roles(*DESIGNATABLE)
def available() -> Response:
    found = orders.available_to(context.db_session(), _user(), now(), context.settings().zone)
    page = render_template(
        "available.html",
        items=found,
        status_labels=orders.STATUS_LABELS,
        detail_endpoint=_endpoint_if_registered("recordings.detail"),
        watch_endpoint=_endpoint_if_registered("watch.page"),
    )
    return _no_store(Response(page, mimetype="text/html"))


def _endpoint_if_registered(endpoint: str) -> str | None:
    return endpoint if endpoint in current_app.view_functions else None


# -- the register -----------------------------------------------------------------------------


@pages.get("/register")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def register() -> Response:
    db = context.db_session()
    selection = recordings_register.RegisterFilter(
        teacher=request.args.get("teacher") or None,
        class_group=request.args.get("class_group") or None,
        status=request.args.get("status") or None,
        school_year=request.args.get("school_year") or None,
    )
    rows = recordings_register.read(
        db, current_actor(), _user(), selection, now(), context.settings().zone
    )
    teachers, classes, years = recordings_register.filter_choices(db)
    page = render_template(
        "register.html",
        rows=rows,
        selection=selection,
        teachers=teachers,
        classes=classes,
        years=years,
        statuses=list(Status),
        status_labels=orders.STATUS_LABELS,
        purpose_labels=PURPOSE_LABELS,
    )
    return _no_store(Response(page, mimetype="text/html"))


def init_app(app: Flask) -> None:
    app.register_blueprint(pages)
    app.register_blueprint(api)
