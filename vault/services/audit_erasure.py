"""Erasing one person's request details from the audit log (GDPR art. 17), chain intact.

The events themselves stay: they name accounts by pseudonymous id and are the school's proof
of who accessed what. What a request carried about the person (the address, the browser's
user agent, the free text of a request) lives beside the events and goes, with the salt of
each event's commitment to it, so the chain still verifies and the commitment can no longer
be tested against a guessed address. The sign-in attempts counted for the lockout keep the
account's name but lose the address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from vault.models import AuditEvent, AuditEventContext, LoginAttempt, User
from vault.services import audit
from vault.services.accounts import find_user
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, NotFound
from vault.services.runtime import Runtime

ERASED_ADDRESS = ""


@dataclass(frozen=True)
class Erased:
    events: int
    sign_in_attempts: int


def erase_details_of(session: Session, actor: Actor, person: User) -> Erased:
    """Erase the request details of every event ``person`` acted in, and the addresses of
    their sign-in attempts; the erasure is itself an event (naming nobody's details)."""
    own_events = select(AuditEvent.id).where(AuditEvent.actor_id == person.id)
    events = cast(
        CursorResult[Any],
        session.execute(
            update(AuditEventContext)
            .where(AuditEventContext.event_id.in_(own_events))
            .values(ip_address=None, user_agent=None, request_text=None, salt=None)
            .execution_options(synchronize_session=False)
        ),
    )
    attempts = cast(
        CursorResult[Any],
        session.execute(
            update(LoginAttempt)
            .where(LoginAttempt.username == person.username)
            .values(ip_address=ERASED_ADDRESS)
            .execution_options(synchronize_session=False)
        ),
    )
    erased = Erased(events.rowcount, attempts.rowcount)
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.AUDIT_DETAILS_ERASED,
            object_id=str(person.id),
            details={"events": erased.events, "sign_in_attempts": erased.sign_in_attempts},
        ),
    )
    return erased


def erase_details_at_console(runtime: Runtime, username: str) -> Erased:
    """`recvault audit erase-details`: the data-protection officer's request, carried out by
    the operator (audited as the console)."""
    with runtime.sessions() as session, session.begin():
        person = find_user(session, username)
        if person is None:
            raise NotFound(N_("No such account."))
        return erase_details_of(session, OPERATOR, person)
