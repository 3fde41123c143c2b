"""Responses the page views share."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, url_for
from werkzeug.wrappers import Response as BaseResponse


def redirect_with_success(message: str, endpoint: str, **values: Any) -> BaseResponse:
    """Post/redirect/get: the page the browser is sent to shows ``message`` once, and reloading
    it does not repeat the act."""
    flash(message, "success")
    return redirect(url_for(endpoint, **values))
