"""Recordings: registration, the teacher's pages, download, early deletion, certificates,
and the director's methodological-work requests. Pages and the JSON API share the services,
so both follow the same rules."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from vault.models import Certificate, MethodologicalRequest, Recording
from vault.services import accounts, certificates, deletion, fairness, media, recordings
from vault.services.access import Action, decide
from vault.services.accounts import Role
from vault.services.errors import NotFound, PermissionDenied, ValidationFailed
from vault.services.recordings import (
    DEVICE_LABELS,
    PLATFORM_LABELS,
    PURPOSE_LABELS,
    VISIBILITY_LABELS,
    Device,
    Platform,
    Purpose,
    Visibility,
)
from vault.web import context
from vault.web.auth import current_actor, now
from vault.web.responses import redirect_with_success, translated
from vault.web.security import audited_refusal, require_roles

pages = Blueprint("recordings", __name__)
api = Blueprint("recordings_api", __name__, url_prefix="/api/v1")

TUS_CREATION_PATH = "/api/v1/uploads"


def _today() -> date:
    return now().astimezone(context.settings().zone).date()


def _get(recording_id: uuid.UUID, action: Action) -> Recording:
    settings = context.settings()
    return recordings.get(
        context.db_session(),
        current_actor(),
        recording_id,
        action,
        now(),
        settings.zone,
    )


def recording_json(recording: Recording) -> dict[str, Any]:
    owner = accounts.get_user(context.db_session(), recording.owner_id)
    return {
        "id": str(recording.id),
        "title": recording.title,
        "subject": recording.subject,
        "class_group": recording.class_group,
        "lesson_date": recording.lesson_date.isoformat(),
        "platform": recording.platform,
        "purpose": recording.purpose,
        "aim": recording.aim,
        "visible": recording.visible,
        "subjects_informed": {
            "method": recording.subjects_informed_method,
            "at": recording.subjects_informed_at.isoformat(),
        },
        "third_party_warning": recording.third_party_warning,
        "device": recording.device,
        "request_id": str(recording.request_id) if recording.request_id else None,
        "school_year": recording.school_year,
        "retain_until": recording.retain_until.isoformat(),
        "status": recording.status,
        "classification": "restricted",
        "owner": owner.username,
        "owner_disabled": owner.disabled_at is not None,
        "size_bytes": recording.size_bytes,
        "content_type": recording.content_type,
        "plaintext_sha256": recording.plaintext_sha256,
        "created_at": recording.created_at.isoformat(),
        "available_at": recording.available_at.isoformat() if recording.available_at else None,
        "deleted_at": recording.deleted_at.isoformat() if recording.deleted_at else None,
        "certificate_id": str(recording.certificate_id) if recording.certificate_id else None,
    }


def _register(raw: Mapping[str, Any]) -> Recording:
    db = context.db_session()
    owner = accounts.get_user(db, current_actor().account_id)
    recording = recordings.register_fields(
        db, current_actor(), owner, raw, now(), context.settings().zone
    )
    db.commit()
    return recording


def _visible_recordings(status: str | None, school_year: str | None) -> list[Recording]:
    db = context.db_session()
    settings = context.settings()
    return recordings.visible_to(db, current_actor(), now(), settings.zone, status, school_year)


# -- JSON API -----------------------------------------------------------------------------------


@api.post("/recordings")
@require_roles(Role.TEACHER)
def api_register() -> tuple[Response, int]:
    recording = _register(_json_body())
    response = jsonify(
        id=str(recording.id),
        status=recording.status,
        upload_url=TUS_CREATION_PATH,
        school_year=recording.school_year,
        retain_until=recording.retain_until.isoformat(),
    )
    response.headers["Location"] = url_for(
        "recordings_api.api_recording", recording_id=recording.id
    )
    return response, 201


@api.get("/recordings")
def api_list() -> Response:
    found = _visible_recordings(request.args.get("status"), request.args.get("school_year"))
    return jsonify(recordings=[recording_json(r) for r in found])


@api.get("/recordings/<uuid:recording_id>")
def api_recording(recording_id: uuid.UUID) -> Response:
    return jsonify(recording_json(_get(recording_id, Action.VIEW_METADATA)))


@api.delete("/recordings/<uuid:recording_id>")
def api_delete(recording_id: uuid.UUID) -> tuple[str, int]:
    _delete(recording_id)
    return "", 204


def _deletion_context() -> deletion.DeletionContext:
    runtime = context.runtime()
    return deletion.DeletionContext(
        runtime.keyring, runtime.store, now(), runtime.settings.zone, runtime.settings.shred_hour
    )


def _delete(recording_id: uuid.UUID) -> Certificate:
    return deletion.delete_early(
        context.db_session(), _deletion_context(), current_actor(), recording_id
    )


@api.post("/recordings/<uuid:recording_id>/restrict")
def api_restrict(recording_id: uuid.UUID) -> Response:
    body = _json_body()
    recording = _restrict(recording_id, str(body.get("reason", "")), body.get("lift") is True)
    return jsonify(recording_json(recording))


@api.post("/recordings/<uuid:recording_id>/erase")
def api_erase(recording_id: uuid.UUID) -> Response:
    certificate = _erase(recording_id, str(_json_body().get("reason", "")))
    return jsonify(status="deleted", certificate_id=str(certificate.id))


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed({"body": [gettext("Send the fields as a JSON object.")]})
    return body


def _restrict(recording_id: uuid.UUID, reason: str, lift: bool) -> Recording:
    return deletion.restrict(
        context.db_session(),
        current_actor(),
        recording_id,
        lift=lift,
        request_reason=reason,
        now=now(),
        zone=context.settings().zone,
    )


def _erase(recording_id: uuid.UUID, reason: str) -> Certificate:
    return deletion.erase(
        context.db_session(), _deletion_context(), current_actor(), recording_id, reason
    )


@api.get("/recordings/<uuid:recording_id>/download")
def api_download(recording_id: uuid.UUID) -> Response:
    runtime = context.runtime()
    recording, opened = media.download(
        context.db_session(),
        runtime.keyring,
        runtime.store,
        current_actor(),
        recording_id,
        now(),
        runtime.settings.zone,
    )

    actor, zone = current_actor(), runtime.settings.zone

    def recheck() -> None:
        with runtime.sessions() as session:
            media.recheck_download(session, actor, recording_id, runtime.clock(), zone)

    body = media.rechecked(
        opened.stream(0, opened.size), recheck, float(runtime.settings.stream_recheck_seconds)
    )
    # A download holds a thread like a stream: counted with the owner's streams.
    slot = runtime.slots.take({("streams", actor.user_id): fairness.STREAMS_PER_USER})
    response = Response(
        fairness.HoldingBody(stream_with_context(body), slot), mimetype=opened.content_type
    )
    response.headers["Content-Length"] = str(opened.size)
    response.headers["Cache-Control"] = "no-store"
    filename = (
        f"{recording.lesson_date.isoformat()}-{recording.id}{_extension(opened.content_type)}"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


EXTENSIONS = {
    "video/mp4": ".mp4",
    "audio/mp4": ".m4a",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "audio/ogg": ".ogg",
    "video/ogg": ".ogv",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
}


def _extension(content_type: str) -> str:
    return EXTENSIONS.get(content_type, ".bin")


@api.post("/requests")
@require_roles(Role.DIRECTOR)
def api_create_request() -> tuple[Response, int]:
    made = _create_request(_json_body())
    return jsonify(_request_json(made)), 201


def _create_request(raw: Mapping[str, Any]) -> MethodologicalRequest:
    db = context.db_session()
    director = accounts.get_user(db, current_actor().account_id)
    made = recordings.create_request(
        db,
        current_actor(),
        director,
        str(raw.get("teacher", "")),
        str(raw.get("lesson", "")),
        str(raw.get("aim", "")),
    )
    db.commit()
    return made


def _request_json(made: MethodologicalRequest) -> dict[str, Any]:
    db = context.db_session()
    teacher = accounts.get_user(db, made.teacher_id)
    return {
        "id": str(made.id),
        "teacher": teacher.username,
        "lesson": made.lesson,
        "aim": made.aim,
        "created_at": made.created_at.isoformat(),
    }


@api.get("/requests")
@require_roles(Role.DIRECTOR, Role.TEACHER, Role.AUDITOR)
def api_requests() -> Response:
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    return jsonify(requests=[_request_json(r) for r in recordings.requests_for(db, user)])


def _certificate_scope(certificate: Certificate) -> frozenset[str] | None:
    """None if the reader may read the whole certificate; otherwise the ids of their own
    recordings in a year's certificate, the part a teacher is shown."""
    actor = current_actor()
    if actor.has_role(Role.AUDITOR, Role.DIRECTOR) or certificate.owner_id == actor.user_id:
        return None
    if actor.user_id is not None and (
        own := certificates.recordings_of_reader(
            context.db_session(), certificate.id, actor.user_id
        )
    ):
        return own
    raise audited_refusal(
        "not_permitted", actor.user_id, PermissionDenied(), object_id=str(certificate.id)
    )


def _readable_certificates() -> list[Certificate]:
    """Every certificate for the auditor and the director; an owner's own otherwise."""
    actor = current_actor()
    everyone = actor.has_role(Role.AUDITOR, Role.DIRECTOR)
    return certificates.for_owner_or_all(context.db_session(), None if everyone else actor.user_id)


@api.get("/certificates")
def api_certificates() -> Response:
    return jsonify(certificates=[_certificate_summary(c) for c in _readable_certificates()])


def _certificate_summary(certificate: Certificate) -> dict[str, Any]:
    return {
        "id": str(certificate.id),
        "kind": certificate.kind,
        "school_year": certificate.school_year,
        "recording_id": str(certificate.recording_id) if certificate.recording_id else None,
        "issued_at": certificate.issued_at.isoformat(),
    }


def _load_certificate(certificate_id: uuid.UUID) -> tuple[Certificate, frozenset[str] | None]:
    found = context.db_session().get(Certificate, certificate_id)
    if found is None:
        raise NotFound()
    return found, _certificate_scope(found)


@api.get("/certificates/<uuid:certificate_id>")
def api_certificate(certificate_id: uuid.UUID) -> Response:
    certificate, scope = _load_certificate(certificate_id)
    if scope is not None:
        # The signed document names every teacher's recordings of the year.
        raise audited_refusal(
            "not_permitted",
            current_actor().user_id,
            PermissionDenied(),
            object_id=str(certificate.id),
        )
    identity, _ = certificates.ensure_signing_key(context.db_session(), context.runtime().keyring)
    return jsonify(certificates.exported(certificate, identity))


# -- pages ----------------------------------------------------------------------------------------


def form_to_registration(form: MultiDict[str, str]) -> dict[str, Any]:
    """The registration form, shaped like the API's JSON object."""
    return {
        **{
            name: form.get(name, "")
            for name in (
                "title",
                "subject",
                "class_group",
                "lesson_date",
                "platform",
                "purpose",
                "aim",
                "visible",
                "device",
                "request_id",
            )
        },
        "subjects_informed": {
            "method": form.get("subjects_informed_method", ""),
            "at": form.get("subjects_informed_at", ""),
        },
        "third_party_warning": form.get("third_party_warning") == "yes",
    }


def _form_page(form: Mapping[str, Any], errors: Mapping[str, list[str]], status: int) -> Response:
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    page = render_template(
        "recording_form.html",
        form=form,
        errors=errors,
        platforms=[(p.value, PLATFORM_LABELS[p]) for p in Platform],
        purposes=[(p.value, PURPOSE_LABELS[p]) for p in Purpose],
        visibilities=[(v.value, VISIBILITY_LABELS[v]) for v in Visibility],
        devices=[(d.value, DEVICE_LABELS[d]) for d in Device],
        requests=[r for r in recordings.requests_for(db, user) if r.teacher_id == user.id],
        today=_today().isoformat(),
    )
    return Response(page, status=status, mimetype="text/html")


@pages.get("/recordings")
@require_roles(Role.TEACHER)
def mine() -> str:
    db = context.db_session()
    found = recordings.own_recordings(db, current_actor().account_id)
    return render_template(
        "recordings_mine.html", recordings=found, today=_today(), purpose_labels=PURPOSE_LABELS
    )


@pages.route("/recordings/new", methods=["GET", "POST"])
@require_roles(Role.TEACHER)
def register() -> BaseResponse:
    if request.method == "GET":
        return _form_page({}, {}, 200)
    try:
        recording = _register(form_to_registration(request.form))
    except ValidationFailed as exc:
        context.db_session().rollback()
        return _form_page(request.form, translated(exc), 422)
    return redirect(url_for("recordings.upload", recording_id=recording.id))


@pages.get("/recordings/<uuid:recording_id>")
def detail(recording_id: uuid.UUID) -> str:
    recording = _get(recording_id, Action.VIEW_METADATA)
    actor = current_actor()

    def allowed(action: Action) -> bool:
        # Whether to offer the form; its route asks the policy again (and audits a refusal).
        return decide(
            context.db_session(), actor, action, recording, now(), context.settings().zone
        ).allowed

    return render_template(
        "recording_detail.html",
        recording=recording,
        owner=accounts.get_user(context.db_session(), recording.owner_id),
        is_owner=recording.owner_id == actor.user_id,
        may_upload=allowed(Action.UPLOAD),
        may_restrict=allowed(Action.RESTRICT),
        may_erase=allowed(Action.ERASE),
        today=_today(),
        labels={
            "platform": PLATFORM_LABELS,
            "purpose": PURPOSE_LABELS,
            "visible": VISIBILITY_LABELS,
            "device": DEVICE_LABELS,
        },
    )


@pages.get("/recordings/<uuid:recording_id>/upload")
def upload(recording_id: uuid.UUID) -> str:
    recording = _get(recording_id, Action.UPLOAD)
    return render_template(
        "recording_upload.html",
        recording=recording,
        creation_url=TUS_CREATION_PATH,
        max_bytes=context.settings().max_upload_bytes,
    )


def _to_detail(recording_id: uuid.UUID, message: str) -> BaseResponse:
    return redirect_with_success(message, "recordings.detail", recording_id=recording_id)


def _to_certificate(certificate: Certificate, message: str) -> BaseResponse:
    return redirect_with_success(message, "recordings.certificate", certificate_id=certificate.id)


@pages.route("/recordings/<uuid:recording_id>/delete", methods=["GET", "POST"])
def delete(recording_id: uuid.UUID) -> BaseResponse | str:
    if request.method == "GET":
        recording = _get(recording_id, Action.DELETE)
        return render_template("recording_delete.html", recording=recording)
    certificate = _delete(recording_id)
    return _to_certificate(
        certificate, gettext("The recording was deleted. Its deletion certificate is below.")
    )


@pages.post("/recordings/<uuid:recording_id>/take-responsibility")
def take_responsibility(recording_id: uuid.UUID) -> BaseResponse:
    recordings.take_responsibility(
        context.db_session(),
        current_actor(),
        recording_id,
        now(),
        context.settings().zone,
    )
    return _to_detail(
        recording_id,
        gettext("You are now responsible for this recording, including its deletion."),
    )


@pages.post("/recordings/<uuid:recording_id>/restrict")
def restrict(recording_id: uuid.UUID) -> BaseResponse:
    lift = request.form.get("lift") == "1"
    _restrict(recording_id, request.form.get("reason", ""), lift)
    return _to_detail(
        recording_id,
        gettext("The restriction was lifted.")
        if lift
        else gettext("The recording is restricted: it is kept, but nobody can watch it."),
    )


@pages.post("/recordings/<uuid:recording_id>/erase")
def erase(recording_id: uuid.UUID) -> BaseResponse:
    certificate = _erase(recording_id, request.form.get("reason", ""))
    return _to_certificate(
        certificate, gettext("The recording was erased. Its deletion certificate is below.")
    )


@pages.get("/certificates")
def certificate_list() -> str:
    return render_template("certificates.html", certificates=_readable_certificates())


@pages.get("/certificates/<uuid:certificate_id>")
def certificate(certificate_id: uuid.UUID) -> str:
    found, scope = _load_certificate(certificate_id)
    identity, _ = certificates.ensure_signing_key(context.db_session(), context.runtime().keyring)
    document = certificates.exported(found, identity)
    return render_template(
        "certificate.html",
        document=document,
        certificate=found,
        verification=certificates.verify_document(document, identity.fingerprint),
        scope=scope,
    )


@pages.route("/requests", methods=["GET", "POST"])
@require_roles(Role.DIRECTOR, Role.TEACHER, Role.AUDITOR)
def requests_page() -> BaseResponse | tuple[str, int]:
    db = context.db_session()
    user = accounts.get_user(db, current_actor().account_id)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        if Role.DIRECTOR not in user.roles:
            raise PermissionDenied()
        try:
            _create_request(request.form)
        except ValidationFailed as exc:
            db.rollback()
            errors = translated(exc)
        else:
            return redirect_with_success(
                gettext("The request was sent to the teacher."), "recordings.requests_page"
            )
    teachers = [u for u in accounts.list_users(db) if Role.TEACHER in u.roles and not u.disabled_at]
    return render_template(
        "requests.html",
        requests=[_request_json(r) for r in recordings.requests_for(db, user)],
        is_director=Role.DIRECTOR in user.roles,
        teachers=teachers,
        errors=errors,
        form=request.form,
    ), (422 if errors else 200)
