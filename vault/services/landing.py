"""What each role finds on its home page after signing in: its own work, not a welcome.

A teacher: the recordings that need attention (unfinished or failed uploads) and the
director's requests still waiting for a recording. The director: the requests still open,
the orders about to lapse. Staff: what orders let them watch. The auditor: the register,
the requests and the certificates. The admin: the accounts waiting for their holders, the
storage, the keys, and a school name still missing from the settings. An account with
several roles sees each part.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.models import (
    AccessOrder,
    Certificate,
    MethodologicalRequest,
    Recording,
    User,
)
from vault.services import health, orders
from vault.services.access import Status
from vault.services.accounts import Role
from vault.services.runtime import Runtime

#: Orders ending within this many days are shown to the director as about to lapse.
LAPSING_WITHIN = timedelta(days=7)
NEEDS_ATTENTION = (Status.REGISTERED.value, Status.UPLOADING.value, Status.FAILED.value)


@dataclass(frozen=True)
class OpenRequest:
    request: MethodologicalRequest
    teacher: str


@dataclass(frozen=True)
class Landing:
    """The parts of the home page for one signed-in person; empty for roles they lack."""

    roles: frozenset[str]
    unfinished: list[Recording] = field(default_factory=list)
    open_requests: list[OpenRequest] = field(default_factory=list)
    lapsing_orders: list[AccessOrder] = field(default_factory=list)
    available: list[orders.Available] = field(default_factory=list)
    certificates: int = 0
    accounts_waiting: int = 0
    storage_ok: bool = True
    database_ok: bool = True
    master_key: str | None = None
    #: The school's name is not configured, so printed orders and certificates lack it.
    school_name_missing: bool = False


def landing(runtime: Runtime, user_id: uuid.UUID, now: datetime) -> Landing:
    with runtime.sessions() as session:
        user = session.get(User, user_id)
        assert user is not None
        roles = user.roles
        page = Landing(roles=roles)
        if Role.TEACHER.value in roles:
            page.unfinished.extend(
                session.scalars(
                    select(Recording)
                    .where(Recording.owner_id == user.id, Recording.status.in_(NEEDS_ATTENTION))
                    .order_by(Recording.lesson_date.desc())
                )
            )
        if roles & {Role.DIRECTOR.value, Role.AUDITOR.value}:
            page.open_requests.extend(_open_requests(session, None))
        elif Role.TEACHER.value in roles:
            page.open_requests.extend(_open_requests(session, user.id))
        if Role.DIRECTOR.value in roles:
            page.lapsing_orders.extend(_lapsing_orders(session, runtime, now))
        if roles & {Role.STAFF.value, Role.TEACHER.value, Role.DIRECTOR.value}:
            page.available.extend(orders.available_to(session, user, now, runtime.settings.zone))
        if roles & {Role.AUDITOR.value, Role.DIRECTOR.value}:
            page = replace(
                page,
                certificates=session.scalar(select(func.count()).select_from(Certificate)) or 0,
            )
        if Role.ADMIN.value in roles:
            page = replace(page, **_machine(session, runtime))
        return page


def _lapsing_orders(session: Session, runtime: Runtime, now: datetime) -> list[AccessOrder]:
    today = now.astimezone(runtime.settings.zone).date()
    return list(
        session.scalars(
            select(AccessOrder)
            .where(
                AccessOrder.revoked_at.is_(None),
                AccessOrder.valid_from <= today,
                AccessOrder.valid_until >= today,
                AccessOrder.valid_until <= today + LAPSING_WITHIN,
            )
            .order_by(AccessOrder.valid_until)
        )
    )


def _machine(session: Session, runtime: Runtime) -> dict[str, Any]:
    """The admin's part: accounts waiting for their holders, the machine's health, and
    whether the settings name the school."""
    current = runtime.keyring.current_version(session)
    report = health.check(runtime.sessions, runtime.store)
    return {
        "accounts_waiting": session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.password_hash.is_(None), User.disabled_at.is_(None))
        )
        or 0,
        "master_key": f"v{current.version} ({runtime.keyring.provider_name})" if current else None,
        "storage_ok": report.storage_ok,
        "database_ok": report.database_ok,
        "school_name_missing": not runtime.settings.school_name.strip(),
    }


def _open_requests(session: Session, teacher_id: uuid.UUID | None) -> list[OpenRequest]:
    """The director's requests that no recording answers yet (all, or one teacher's)."""
    answered = select(Recording.request_id).where(Recording.request_id.is_not(None))
    query = (
        select(MethodologicalRequest, User.full_name)
        .join(User, User.id == MethodologicalRequest.teacher_id)
        .where(MethodologicalRequest.id.not_in(answered))
        .order_by(MethodologicalRequest.created_at.desc())
    )
    if teacher_id is not None:
        query = query.where(MethodologicalRequest.teacher_id == teacher_id)
    return [OpenRequest(request, name) for request, name in session.execute(query)]
