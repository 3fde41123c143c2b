"""Data-protection outputs: the public privacy notice (arts. 12-13), the record of processing
(art. 30) and the data-subject report (art. 15), as printable pages and as JSON.

The notice's legal wording is in the templates under ``privacy/``. A school's officer
overrides any of them by putting a file of the same name under ``templates/privacy/`` in
the instance folder; nothing else can be overridden there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, render_template, request
from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader, TemplateNotFound

from vault.services import privacy_notice, processing_record, subject_report
from vault.services.accounts import Role
from vault.services.errors import ValidationFailed
from vault.services.recordings import PURPOSE_LABELS
from vault.web import context
from vault.web.auth import current_actor, now
from vault.web.responses import translated
from vault.web.security import require_roles

pages = Blueprint("reports", __name__)
api = Blueprint("reports_api", __name__, url_prefix="/api/v1/reports")

OVERRIDABLE_PREFIX = "privacy/"


class PrivacyOverrides(BaseLoader):
    """The instance folder's ``templates/privacy/*.html``, and nothing outside that prefix."""

    def __init__(self, directory: Path) -> None:
        self._files = FileSystemLoader(str(directory))

    def get_source(self, environment: Environment, template: str) -> Any:
        if not template.startswith(OVERRIDABLE_PREFIX):
            raise TemplateNotFound(template)
        return self._files.get_source(environment, template)


@pages.get("/privacy")
def privacy() -> str:
    """Public: the people in the recordings read it without an account."""
    facts = privacy_notice.notice_facts(context.db_session(), context.settings(), now())
    return render_template("privacy.html", facts=facts)


@pages.get("/reports/processing")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def processing() -> str:
    record = processing_record.processing_record(context.runtime(), now())
    return render_template("report_processing.html", record=record, purposes=PURPOSE_LABELS)


@api.get("/processing")
@require_roles(Role.DIRECTOR, Role.AUDITOR)
def api_processing() -> Response:
    return jsonify(processing_record.processing_record(context.runtime(), now()))


def _subject_report(arguments: dict[str, str]) -> subject_report.SubjectReport:
    db = context.db_session()
    period = subject_report.parse_period(arguments.get("from", ""), arguments.get("to", ""))
    report = subject_report.subject_report(
        db, current_actor(), arguments.get("class_group", ""), period, context.settings()
    )
    db.commit()
    return report


@pages.get("/reports/subject")
@require_roles(Role.AUDITOR)
def subject() -> tuple[str, int]:
    arguments = request.args.to_dict()
    if not arguments:
        return render_template("report_subject.html", report=None, form={}, errors={}), 200
    try:
        report = _subject_report(arguments)
    except ValidationFailed as exc:
        context.db_session().rollback()
        return render_template(
            "report_subject.html", report=None, form=arguments, errors=translated(exc)
        ), 422
    return render_template(
        "report_subject.html", report=report, form=arguments, errors={}, purposes=PURPOSE_LABELS
    ), 200


@api.get("/subject")
@require_roles(Role.AUDITOR)
def api_subject() -> Response:
    report = _subject_report(request.args.to_dict())
    return jsonify(subject_report.as_json(report))


def init_app(app: Flask) -> None:
    overrides = PrivacyOverrides(context.settings_of(app).instance_dir / "templates")
    app.jinja_loader = ChoiceLoader([overrides, app.jinja_loader])  # type: ignore[list-item]
    app.register_blueprint(pages)
    app.register_blueprint(api)
