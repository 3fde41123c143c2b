"""Responses the page views share."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, url_for
from flask_babel import gettext
from werkzeug.wrappers import Response as BaseResponse

from vault.services.errors import ValidationFailed


def redirect_with_success(message: str, endpoint: str, **values: Any) -> BaseResponse:
    """Post/redirect/get: the page the browser is sent to shows ``message`` once, and reloading
    it does not repeat the act."""
    flash(message, "success")
    return redirect(url_for(endpoint, **values))


def translated(errors: ValidationFailed | dict[str, list[str]]) -> dict[str, list[str]]:
    """A refusal's field messages in the reader's language, field by field."""
    fields = errors.field_errors if isinstance(errors, ValidationFailed) else errors
    return {name: [gettext(message) for message in messages] for name, messages in fields.items()}
