"""Helpers for driving the app as a browser does."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token_from(client: FlaskClient, path: str = "/") -> str:
    """The token the layout exposes in <meta name="csrf-token">, as a page's script reads it."""
    body = client.get(path).get_data(as_text=True)
    match = CSRF_META.search(body)
    assert match, "the layout must expose the CSRF token"
    return match.group(1)
