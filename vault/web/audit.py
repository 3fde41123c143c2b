"""The material an officer needs to check the audit log offline: the signed checkpoints and
the signing key's public half (the auditor's).

The views only translate HTTP into calls of ``vault.services.audit_checkpoints`` and back.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from vault.services import audit_checkpoints
from vault.services.accounts import Role
from vault.services.errors import N_, ValidationFailed
from vault.web import context
from vault.web.security import require_roles

api = Blueprint("audit_checkpoints_api", __name__, url_prefix="/api/v1/audit")

DEFAULT_LISTED = 100


def _whole_number(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValidationFailed({name: [N_("Give a whole number of at least 1.")]})
    return int(raw)


@api.get("/checkpoints")
@require_roles(Role.AUDITOR)
def checkpoints() -> Response:
    limit = _whole_number("limit") or DEFAULT_LISTED
    before = _whole_number("before")
    consistency_from = _whole_number("consistency_from")
    db = context.db_session()
    answer: dict[str, Any] = {
        "checkpoints": [
            item.as_json() for item in audit_checkpoints.listed(db, limit, before=before)
        ]
    }
    if consistency_from is not None:
        answer["consistency"] = audit_checkpoints.consistency_to_latest(db, consistency_from)
    return jsonify(answer)


@api.get("/public-key")
@require_roles(Role.AUDITOR)
def public_key() -> Response:
    identity = audit_checkpoints.public_identity(context.db_session(), context.runtime().keyring)
    return jsonify(
        algorithm="Ed25519", fingerprint=identity.fingerprint, public_key_pem=identity.pem
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(api)
