"""Personal API tokens: made by their owner (or the operator), stored only as keyed hashes,
revoked with a password change, and every rejection counted against the audit log's flood
guard."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import (
    ApiToken,
    User,
)
from vault.services import audit
from vault.services.accounts import (
    LAST_SEEN_RESOLUTION,
    MAX_TOKEN_LIFETIME,
    TOKEN_PREFIX,
    Secrets,
)
from vault.services.actors import Actor
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.errors import (
    N_,
    Conflict,
    NotFound,
    ValidationFailed,
)

# -- API tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: ApiToken


def create_token(
    session: Session,
    secrets_: Secrets,
    actor: Actor,
    user: User,
    name: str,
    lifetime: timedelta,
    now: datetime,
) -> IssuedToken:
    if not name.strip() or len(name) > 100:
        raise ValidationFailed({"name": [N_("Give the token a name of up to 100 characters.")]})
    if lifetime <= timedelta(0) or lifetime > MAX_TOKEN_LIFETIME:
        raise ValidationFailed({"ttl": [N_("A token lives between one day and one year.")]})
    if user.disabled_at is not None:
        raise Conflict(N_("The account is disabled."))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        user_id=user.id,
        name=name.strip(),
        token_hmac=secrets_.digest("api-token", token),
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.TOKEN_CREATED,
            object_id=str(record.id),
            details={
                "owner": str(user.id),
                "via": actor.via,
                "expires_at": record.expires_at.isoformat(),
            },
        ),
    )
    return IssuedToken(token=token, record=record)


def list_tokens(session: Session, user_id: uuid.UUID) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at.desc())
        )
    )


def revoke_token(
    session: Session,
    actor: Actor,
    token_id: uuid.UUID,
    now: datetime,
    *,
    owner_id: uuid.UUID | None,
) -> ApiToken:
    """Revoke one token; ``owner_id`` limits it to that user's tokens (None: the operator)."""
    record = session.get(ApiToken, token_id)
    if record is None or (owner_id is not None and record.user_id != owner_id):
        raise NotFound()
    if record.revoked_at is None:
        record.revoked_at = now
        audit.record(
            session,
            audit.by(
                actor,
                AuditAction.TOKEN_REVOKED,
                object_id=str(record.id),
                details={"via": actor.via},
            ),
        )
    return record


def authenticate_token(
    session: Session, secrets_: Secrets, token: str, context: RequestContext, now: datetime
) -> User | None:
    """The user a bearer token belongs to, if it is live; every rejection is audited."""
    record = None
    if token.startswith(TOKEN_PREFIX) and len(token) < 200:
        record = session.scalars(
            select(ApiToken).where(ApiToken.token_hmac == secrets_.digest("api-token", token))
        ).one_or_none()
    user = session.get(User, record.user_id) if record is not None else None
    reason = None
    if record is None or user is None:
        reason = "unknown"
    elif record.revoked_at is not None:
        reason = "revoked"
    elif record.expires_at <= now:
        reason = "expired"
    elif user.disabled_at is not None:
        reason = "disabled"
    if reason is not None:
        rejected = audit.Event(
            AuditAction.AUTH_TOKEN_REJECTED,
            outcome=Outcome.DENIED,
            actor_id=user.id if user else None,
            object_id=str(record.id) if record else None,
            details={"reason": reason},
            context=context,
        )
        audit.unauthenticated_denial(session, rejected, context.ip_address, now)
        return None
    assert record is not None and user is not None
    if record.last_used_at is None or now - record.last_used_at > LAST_SEEN_RESOLUTION:
        record.last_used_at = now
        session.commit()
    return user


def parse_lifetime(text: str) -> timedelta:
    """'30d', '12h' or a number of days."""
    value = text.strip().lower()
    units = {"d": 86400, "h": 3600}
    multiplier = units.get(value[-1:])
    number = value[:-1] if multiplier else value
    if not number.isdigit():
        raise ValidationFailed({"ttl": [N_("Write the lifetime as days, e.g. 30d.")]})
    return timedelta(seconds=int(number) * (multiplier or 86400))
