"""The tus 1.0 header values the upload service accepts: ``Upload-Metadata`` and offsets.

Both arrive from the client as text and are checked strictly, so a malformed request is
refused (400) before it reaches the upload's state.
"""

from __future__ import annotations

import base64
import binascii

from vault.services.errors import N_, ServiceError


class BadUploadRequest(ServiceError):
    """A tus request the protocol does not allow (mapped to 400 Bad Request)."""

    message = N_("The upload request is malformed.")


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    result: dict[str, str] = {}
    for raw_item in (header or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, _, encoded = item.partition(" ")
        encoded = encoded.strip()
        if not key or " " in encoded or key in result:
            raise BadUploadRequest(N_("Upload-Metadata is malformed."))
        try:
            result[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadUploadRequest(N_("Upload-Metadata is malformed.")) from None
    return result


def parse_offset(text: str | None, name: str) -> int:
    """A non-negative decimal header value (``Upload-Length``, ``Upload-Offset``)."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19:
        raise BadUploadRequest(N_("The %(header)s header must be a whole number."), header=name)
    return int(text)
