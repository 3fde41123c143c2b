"""The record of processing activities (GDPR art. 30), for the director and the auditor.

Per purpose of procedure §12 and §13: the categories of data and of data subjects, the
recipients (by role), the processors (the platforms actually used), the retention; the
technical and organisational measures as the running configuration has them, not as a
document once said; and the counts per school year. Everything is read when asked, so the
record cannot drift from the vault.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault import crypto
from vault.models import (
    AccessOrder,
    AccessOrderRecording,
    AuditCheckpoint,
    MasterKeyVersion,
    Recording,
    SchoolYearKey,
    View,
)
from vault.services import calendar
from vault.services.accounts import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, TOTP_ROLES
from vault.services.privacy_notice import platforms_used, recipient_roles
from vault.services.recordings import Purpose
from vault.services.runtime import Runtime

LEGAL_BASIS = "GDPR art. 6(1)(e)"
# The procedure's paragraph that defines each purpose.
PROCEDURE_PARAGRAPH = {Purpose.METHODOLOGICAL: "§12", Purpose.QUALITY_SAFETY: "§13"}
DATA_SUBJECTS = ("teachers", "pupils")
DATA_CATEGORIES = ("image and voice of teachers and pupils", "names of staff")


def processing_record(runtime: Runtime, now: datetime) -> dict[str, Any]:
    """The art. 30 record as a JSON document (the printable page renders the same)."""
    settings = runtime.settings
    with runtime.sessions() as session:
        return {
            "generated_at": now.isoformat(),
            "controller": {"name": settings.school_name, "address": settings.school_address},
            "dpo_contact": settings.dpo_contact,
            "purposes": [_purpose(session, runtime, purpose) for purpose in Purpose],
            "measures": _measures(session, runtime),
            "school_years": _counts(session),
        }


def _purpose(session: Session, runtime: Runtime, purpose: Purpose) -> dict[str, Any]:
    settings = runtime.settings
    return {
        "purpose": purpose.value,
        "procedure": PROCEDURE_PARAGRAPH[purpose],
        "legal_basis": LEGAL_BASIS,
        "data_subjects": list(DATA_SUBJECTS),
        "data_categories": list(DATA_CATEGORIES),
        "recipients": list(recipient_roles(session, purpose.value)),
        "processors": list(platforms_used(session, purpose.value)),
        "retention": {
            "until": "the last school day of the recording's school year",
            "shred_hour": settings.shred_hour,
            "time_zone": settings.timezone,
            "tombstone_days": settings.tombstone_days,
        },
    }


def _measures(session: Session, runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    current = runtime.keyring.current_version(session)
    return {
        "encryption": {
            "cipher": "AES-256-GCM, a data key per recording",
            "format_version": crypto.FORMAT_VERSION,
            "chunk_size_bytes": crypto.DEFAULT_CHUNK_SIZE,
            "at_rest": "every recording byte is encrypted before it leaves the app",
        },
        "key_hierarchy": {
            "master_key_provider": runtime.keyring.provider_name,
            "master_key_version": current.version if current is not None else None,
            "master_key_versions_destroyed": session.scalar(
                select(func.count())
                .select_from(MasterKeyVersion)
                .where(MasterKeyVersion.destroyed_at.is_not(None))
            ),
            "school_year_keys_destroyed": session.scalar(
                select(func.count())
                .select_from(SchoolYearKey)
                .where(SchoolYearKey.wrapped_key.is_(None))
            ),
        },
        "storage": {
            "backend": _backend(settings.storage_url),
            "object_tags": ["classification=restricted", "school-year", "retain-until"],
        },
        "database": runtime.engine.dialect.name,
        "audit_log": {
            "hash_chain": True,
            "signed_checkpoints": session.scalar(select(func.count()).select_from(AuditCheckpoint)),
            "witness_store": settings.audit_witness_url is not None,
            "retention_days": settings.audit_retention_days,
        },
        "authentication": {
            "second_factor_roles": sorted(role.value for role in TOTP_ROLES),
            "session_idle_timeout_minutes": int(IDLE_TIMEOUT.total_seconds() // 60),
            "session_absolute_timeout_hours": int(ABSOLUTE_TIMEOUT.total_seconds() // 3600),
            "view_idle_timeout_seconds": settings.view_idle_timeout_seconds,
        },
    }


def _backend(storage_url: str) -> str:
    scheme = urlsplit(storage_url).scheme
    return {"s3": "S3-compatible object storage", "file": "local directory"}.get(scheme, scheme)


def _counts(session: Session) -> list[dict[str, Any]]:
    """Per school year: recordings, orders naming them, views, deletions."""
    years = []
    for entry in calendar.known_years(session):
        year = entry.school_year
        in_year = Recording.school_year == year
        statuses = dict(
            session.execute(
                select(Recording.status, func.count()).where(in_year).group_by(Recording.status)
            ).all()
        )
        orders = session.scalar(
            select(func.count(func.distinct(AccessOrder.id)))
            .join(AccessOrderRecording, AccessOrderRecording.order_id == AccessOrder.id)
            .join(Recording, Recording.id == AccessOrderRecording.recording_id)
            .where(in_year)
        )
        views = session.scalar(
            select(func.count(View.id))
            .join(Recording, Recording.id == View.recording_id)
            .where(in_year)
        )
        years.append(
            {
                "school_year": year,
                "last_day": entry.last_day.isoformat(),
                "recordings": sum(statuses.values()),
                "orders": orders or 0,
                "views": views or 0,
                "deleted_early": statuses.get("deleted", 0),
                "shredded": statuses.get("shredded", 0),
            }
        )
    return years
