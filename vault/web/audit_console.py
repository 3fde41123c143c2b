"""The auditor's console (``/audit``): searching the audit log, its exports, and what an
officer compares with the copies kept away from the server.

The criteria are the export API's own (``audit_export.parse_request``), so a wrong value gets
the same message here as there, and the export links carry the criteria exactly as given.
The views only translate HTTP into calls of ``vault.services.audit_search`` and back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request, url_for

from vault.services import audit_chain, audit_export, audit_search
from vault.services.accounts import Role
from vault.services.audit import AuditAction, Outcome
from vault.services.audit_export import AuditFilter
from vault.services.audit_search import EventPage
from vault.services.errors import ValidationFailed
from vault.web import context
from vault.web.auth import now
from vault.web.responses import translated
from vault.web.security import require_roles

blueprint = Blueprint("audit_console", __name__)

MOMENT_FORMAT = "%Y-%m-%d %H:%M:%S"


def _criteria() -> dict[str, str]:
    """The criteria as the auditor gave them, empty ones left out: what the page links carry."""
    given = {name: (request.args.get(name) or "").strip() for name in audit_export.FILTER_FIELDS}
    return {name: value for name, value in given.items() if value}


def _search(criteria: dict[str, str]) -> tuple[AuditFilter, EventPage]:
    """The criteria and the requested page; every wrong value, the page cursor's included,
    refused at once."""
    db = context.db_session()
    errors: dict[str, list[str]] = {}
    audit_filter = None
    try:
        audit_filter = audit_export.parse_request(
            db, criteria, context.settings().zone
        ).audit_filter
    except ValidationFailed as exc:
        errors.update(exc.field_errors)
    before = None
    try:
        before = audit_search.cursor(request.args.get("before"))
    except ValidationFailed as exc:
        errors.update(exc.field_errors)
    if errors or audit_filter is None:
        raise ValidationFailed(errors)
    return audit_filter, audit_search.search(db, audit_filter, before)


@blueprint.get("/audit")
@require_roles(Role.AUDITOR)
def search() -> Response:
    criteria = _criteria()
    zone = context.settings().zone
    audit_filter = AuditFilter()
    page: EventPage | None = None
    errors: dict[str, list[str]] = {}
    try:
        audit_filter, page = _search(criteria)
    except ValidationFailed as exc:
        errors = translated(exc.field_errors)

    def local(moment: datetime) -> str:
        return moment.astimezone(zone).strftime(MOMENT_FORMAT)

    def page_link(before: int | None) -> str:
        values: dict[str, Any] = dict(criteria)
        if before is not None:
            values["before"] = before
        return url_for(".search", **values)

    def export_link(export_format: audit_export.ExportFormat) -> str:
        values: dict[str, Any] = {**criteria, "format": export_format.value}
        return url_for("audit_export_api.events", **values)

    state = audit_search.chain_state(context.db_session(), context.runtime().keyring)
    body = render_template(
        "audit_console.html",
        criteria=criteria,
        errors=errors,
        page=page,
        filtered_recording=audit_filter.recording_id,
        state=state,
        actions=sorted(AuditAction, key=lambda action: action.value),
        outcomes=list(Outcome),
        action_label=audit_search.action_label,
        outcome_label=audit_search.outcome_label,
        local=local,
        page_link=page_link,
        export_link=export_link,
        export_formats=audit_export.ExportFormat,
        details_text=audit_chain.canonical,
        checkpoints_file=f"audit-checkpoints-{now().astimezone(zone).date().isoformat()}.json",
    )
    response = Response(body, status=422 if errors else 200, mimetype="text/html")
    # The log names accounts and recordings: keep the page out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)
