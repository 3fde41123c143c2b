"""The auditor's exports of the audit log (JSON API), streamed.

A JSON Lines export carries its manifest as its first line. A CSV export cannot (a
spreadsheet would show it as an event), so every export names its own event in the chain in
``X-Audit-Export-Seq`` and links to ``/api/v1/audit/exports/<seq>``, which gives the manifest
back from that event.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for

from vault.services import audit_export
from vault.services.accounts import Role
from vault.services.audit_export import ExportFormat
from vault.web import context
from vault.web.auth import current_actor
from vault.web.security import require_roles

api = Blueprint("audit_export_api", __name__, url_prefix="/api/v1/audit")

MEDIA_TYPES = {
    ExportFormat.JSONL: "application/jsonl",
    ExportFormat.CSV: "text/csv; charset=utf-8; header=present",
}


def _private(response: Response) -> Response:
    # The log names accounts and recordings: keep it out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/events")
@require_roles(Role.AUDITOR)
def events() -> Response:
    db = context.db_session()
    raw = {name: request.args.get(name) for name in (*audit_export.FILTER_FIELDS, "format")}
    wanted = audit_export.parse_request(db, raw, context.settings().zone)
    runtime = context.runtime()
    manifest = audit_export.start(db, current_actor(), wanted, runtime.keyring, runtime.clock())

    def body() -> Iterator[bytes]:
        # A session of the stream's own, closed when the stream ends or is broken off; the
        # request's session is torn down with the view, not with a streamed body, and would
        # otherwise keep its read transaction (and its locks) open.
        with runtime.sessions() as reading:
            yield from audit_export.lines(reading, manifest)

    response = Response(stream_with_context(body()), mimetype=MEDIA_TYPES[manifest.export_format])
    filename = f"audit-events-{manifest.export_seq}.{manifest.export_format.value}"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Audit-Export-Seq"] = str(manifest.export_seq)
    manifest_url = url_for(".export_manifest", export_seq=manifest.export_seq)
    response.headers["Link"] = f'<{manifest_url}>; rel="describedby"'
    return _private(response)


@api.get("/exports/<int:export_seq>")
@require_roles(Role.AUDITOR)
def export_manifest(export_seq: int) -> Response:
    manifest = audit_export.manifest_of(context.db_session(), export_seq)
    return _private(jsonify(manifest.as_json()))
