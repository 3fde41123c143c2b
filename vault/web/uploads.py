"""tus 1.0 at /api/v1/uploads: core, creation and termination (the HTTP side only).

The upload's state machine, the encryption and the storage live in
``vault.services.uploads``; this module reads the tus headers, hands the request body to it
as a stream, and writes the tus headers back. The body is never read with ``get_data()`` or
parsed as a form: that would hold up to 100 MiB of plaintext in memory, and Werkzeug's form
parser spools large bodies to temporary files, i.e. plaintext on disk.

Every response of the blueprint (errors included) carries ``Tus-Resumable`` and
``Cache-Control: no-store``: offsets change with every request and must never be cached.
Authentication and CSRF are the app's (a bearer token, or the session cookie plus
``X-CSRF-Token``), and every operation is authorised by the one access policy.
"""

from __future__ import annotations

import uuid
from typing import IO

from flask import Blueprint, Response, request, url_for
from werkzeug.exceptions import ClientDisconnected

from vault.services import fairness, tus, uploads
from vault.services.errors import N_
from vault.web.auth import current_actor, now
from vault.web.context import runtime, settings
from vault.web.errors import error_response

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"

blueprint = Blueprint("uploads", __name__, url_prefix="/api/v1/uploads")


class RequestBody:
    """The request body as the service reads it, into buffers it owns and reuses.

    A client that goes away mid-body reads as an early end of the body, so the bytes that
    did arrive are still encrypted and acknowledged, and the resumed upload continues
    from there instead of resending them.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.disconnected = False

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        if self.disconnected:
            return 0
        try:
            return self._stream.readinto(buffer)  # type: ignore[attr-defined, no-any-return]
        except ClientDisconnected:
            self.disconnected = True
            return 0


@blueprint.before_request
def require_tus_version() -> Response | None:
    """tus: a request for a protocol version the server does not speak gets 412."""
    if request.method == "OPTIONS" or request.headers.get("Tus-Resumable") == TUS_VERSION:
        return None
    return error_response(
        412,
        N_("This server speaks tus version 1.0.0 (send Tus-Resumable: 1.0.0)."),
        headers={"Tus-Version": TUS_VERSION},
    )


@blueprint.after_request
def add_tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    if not response.content_length and not response.is_streamed:
        # An answer without a body has no media type (Werkzeug would say text/html).
        response.headers.pop("Content-Type", None)
    return response


def _discovery() -> Response:
    response = Response(status=204)
    response.headers["Tus-Version"] = TUS_VERSION
    response.headers["Tus-Extension"] = TUS_EXTENSIONS
    response.headers["Tus-Max-Size"] = str(settings().max_upload_bytes)
    return response


@blueprint.route("", methods=["POST", "OPTIONS"], provide_automatic_options=False)
def create() -> Response:
    """OPTIONS: what the server supports. POST: tus creation for one registered recording."""
    if request.method == "OPTIONS":
        return _discovery()
    if "Upload-Defer-Length" in request.headers:
        return error_response(
            400, N_("The upload length must be known when the upload is created.")
        )
    length = tus.parse_offset(request.headers.get("Upload-Length"), "Upload-Length")
    metadata = tus.parse_metadata(request.headers.get("Upload-Metadata"))
    state = uploads.create_upload(runtime(), current_actor(), length, metadata, now())
    response = Response(status=201)
    response.headers["Location"] = url_for("uploads.offset", upload_id=state.upload_id)
    response.headers["Upload-Offset"] = str(state.offset)
    return response


def _offset_response(state: uploads.UploadState, status: int) -> Response:
    response = Response(status=status)
    response.headers["Upload-Offset"] = str(state.offset)
    response.headers["Upload-Length"] = str(state.length)
    return response


@blueprint.route("/<uuid:upload_id>", methods=["HEAD", "OPTIONS"], provide_automatic_options=False)
def offset(upload_id: uuid.UUID) -> Response:
    """tus HEAD: how many bytes the server holds, so a client knows where to resume.
    OPTIONS: what the server supports, as on the creation URL."""
    if request.method == "OPTIONS":
        return _discovery()
    state = uploads.status(runtime(), current_actor(), upload_id, now())
    return _offset_response(state, 200)


@blueprint.patch("/<uuid:upload_id>")
def append(upload_id: uuid.UUID) -> Response:
    """tus PATCH: the next bytes of the file, at the offset the server acknowledged."""
    if request.mimetype != OFFSET_CONTENT_TYPE:
        return error_response(415, N_("Send the file's bytes as application/offset+octet-stream."))
    start = tus.parse_offset(request.headers.get("Upload-Offset"), "Upload-Offset")
    # request.stream is the socket's body, limited to Content-Length: read in pieces by the
    # service, it is never buffered whole nor written to a temporary file.
    body = RequestBody(request.stream)
    actor = current_actor()
    slot = runtime().slots.take({("uploads", actor.account_id): fairness.UPLOADS_PER_USER})
    try:
        state = uploads.append(
            runtime(), actor, upload_id, start, body, now(), content_length=request.content_length
        )
    finally:
        slot.release()
    return _offset_response(state, 204)


@blueprint.delete("/<uuid:upload_id>")
def terminate(upload_id: uuid.UUID) -> Response:
    """tus termination: the unfinished upload and everything stored for it are removed."""
    uploads.terminate(runtime(), current_actor(), upload_id, now())
    return Response(status=204)
