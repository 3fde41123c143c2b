"""Erasing a person's request details from the audit log (art. 17) keeps the chain intact,
and leaves their address nowhere in the database."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from tests.support.console import Console
from tests.support.people import Person
from tests.support.streaming_support import user_id
from vault.models import AuditEvent, AuditEventContext, LoginAttempt
from vault.services import audit, audit_chain
from vault.services.runtime import Runtime

ADDRESS = "198.51.100.23"
OTHER_ADDRESS = "198.51.100.99"


def failed_sign_ins(
    runtime: Runtime, username: str, actor_id: uuid.UUID | None, address: str
) -> None:
    """What a mistyped password leaves behind: a counted attempt and an event with details."""
    with runtime.sessions() as session, session.begin():
        for _ in range(3):
            session.add(
                LoginAttempt(
                    username=username,
                    ip_address=address,
                    attempted_at=runtime.clock(),
                    succeeded=False,
                )
            )
            audit.record(
                session,
                audit.Event(
                    audit.AuditAction.AUTH_LOGIN_FAILED,
                    actor_id=actor_id,
                    context=audit.RequestContext(ip_address=address, user_agent="Firefox/140"),
                ),
            )


def database_text(runtime: Runtime) -> str:
    """Every row of every table that may hold an address, as text."""
    with runtime.sessions() as session:
        rows = [
            *session.execute(
                select(AuditEvent.object_id, AuditEvent.details, AuditEvent.context_commitment)
            ).all(),
            *session.execute(
                select(
                    AuditEventContext.ip_address,
                    AuditEventContext.user_agent,
                    AuditEventContext.request_text,
                )
            ).all(),
            *session.execute(select(LoginAttempt.username, LoginAttempt.ip_address)).all(),
        ]
    return repr(rows)


def test_erasing_a_persons_details_keeps_the_chain_and_leaves_no_address(
    runtime: Runtime, recvault: Console, teacher: Person, director: Person
) -> None:
    failed_sign_ins(runtime, teacher.username, user_id(runtime, teacher.username), ADDRESS)
    failed_sign_ins(runtime, director.username, user_id(runtime, director.username), OTHER_ADDRESS)
    assert ADDRESS in database_text(runtime)

    erased = recvault("audit", "erase-details", teacher.username)
    assert erased.exit_code == 0, erased.output
    assert "3 events" in erased.output

    stored = database_text(runtime)
    assert ADDRESS not in stored
    assert OTHER_ADDRESS in stored  # only the person asked about
    with runtime.sessions() as session:
        verdict = audit_chain.verify(session)
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert verdict.intact
    assert last is not None and last.action == "audit:details_erased"
    assert last.details == {"events": 3, "sign_in_attempts": 3, "role": "operator"}


def test_erasing_an_unknown_account_says_so(runtime: Runtime, recvault: Console) -> None:
    result = recvault("audit", "erase-details", "nobody")
    assert result.exit_code != 0
    assert "No such account" in result.output
