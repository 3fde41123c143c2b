"""The JSON API under /api/v1; each route is documented in docs/openapi.yaml."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask_login import current_user

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


@blueprint.get("/me")
def me() -> Response:
    return jsonify(
        username=current_user.username,
        name=current_user.full_name,
        roles=sorted(current_user.roles),
    )
