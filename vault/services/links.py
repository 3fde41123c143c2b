"""Invitation and reset links, and the replacement of a lost second factor.

A link for a privileged account is never shown to whoever made it; a reset of an account
with a second factor asks for it; a lost second factor is replaced on the other privileged
role's approval (or at the console, in ``account_admin``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vault.keyring import Keyring
from vault.models import (
    AccountLink,
    AuditEvent,
    User,
)
from vault.services import audit
from vault.services.accounts import (
    LINK_LIFETIME,
    end_all_sessions,
    requires_totp,
    revoke_all_tokens,
    set_password,
    validate_password,
)
from vault.services.actors import Actor
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.authentication import (
    SecondFactors,
    SignInFailed,
    check_second_factor,
    enrol_totp,
    new_totp_secret,
    pending_totp_name,
)
from vault.services.errors import (
    N_,
    Conflict,
    PermissionDenied,
    ServiceError,
    ValidationFailed,
)
from vault.services.passwords import Passwords


class LinkInvalid(ServiceError):
    message = N_("This link is invalid, has expired or has already been used.")


# -- invitation and reset links ----------------------------------------------------------------


class LinkPurpose(StrEnum):
    INVITATION = "invitation"
    RESET = "reset"
    # A lost second factor: the holder proves their password and enrols a new one.
    SECOND_FACTOR = "second_factor"


def is_privileged(user: User) -> bool:
    """A director, auditor or administrator, or any account with a second factor: whoever
    holds a link for it could become that person, so such a link is never shown to the one
    who made it (the admin), only e-mailed to the holder or handed out at the console."""
    return requires_totp(user.roles) or user.totp_enabled


PRIVILEGED_LINKS_BY_MAIL = N_(
    "A link for a director, auditor or administrator, or for any account with a second "
    "factor, is only e-mailed to its holder: give their address and configure e-mail, or use "
    "the server console (recvault user add, recvault user reset-second-factor)."
)


def approve_second_factor_reset(
    session: Session, actor: Actor, approver: User, holder: User, now: datetime
) -> AccountLink:
    """A director's lost second factor is reset on the auditor's approval, and an auditor's
    on the director's: the two who check each other, never the admin."""
    approves = ("auditor" in approver.roles and "director" in holder.roles) or (
        "director" in approver.roles and "auditor" in holder.roles
    )
    if approver.id == holder.id or not approves:
        raise PermissionDenied(
            N_(
                "A director's second factor is reset on the auditor's approval, and an "
                "auditor's on the director's."
            )
        )
    if not holder.totp_enabled:
        raise Conflict(N_("This account has no second factor to reset."))
    audit.record(
        session,
        audit.Event(
            AuditAction.ACCOUNT_SECOND_FACTOR_RESET_APPROVED,
            actor_id=approver.id,
            object_id=str(holder.id),
            details={"via": actor.via},
            context=actor.context,
        ),
    )
    return create_link(session, actor, holder, LinkPurpose.SECOND_FACTOR, now)


def create_link(
    session: Session, actor: Actor, user: User, purpose: LinkPurpose, now: datetime
) -> AccountLink:
    # A new link supersedes older unused ones of the same purpose.
    session.execute(
        update(AccountLink)
        .where(
            AccountLink.user_id == user.id,
            AccountLink.purpose == purpose.value,
            AccountLink.used_at.is_(None),
        )
        .values(used_at=now)
    )
    link = AccountLink(
        user_id=user.id, purpose=purpose.value, created_at=now, expires_at=now + LINK_LIFETIME
    )
    session.add(link)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ACCOUNT_LINK_ISSUED,
            object_id=str(user.id),
            details={"purpose": purpose.value, "via": actor.via},
        ),
    )
    return link


@dataclass(frozen=True)
class LinkTarget:
    link: AccountLink
    user: User
    needs_totp: bool
    pending_totp_secret: str | None
    # A reset of an account with a second factor asks for it (a code or a recovery code):
    # the link alone, in whoever's hands, never replaces it.
    proves_second_factor: bool
    # A second-factor link keeps the password and asks for it instead.
    keeps_password: bool


def open_link(session: Session, keyring: Keyring, link_id: uuid.UUID, now: datetime) -> LinkTarget:
    """The account a live link is for; prepares a TOTP seed when the role needs one."""
    link = session.get(AccountLink, link_id)
    user = session.get(User, link.user_id) if link is not None else None
    if (
        link is None
        or user is None
        or link.used_at is not None
        or link.expires_at <= now
        or user.disabled_at is not None
    ):
        audit.record(
            session,
            audit.Event(
                AuditAction.ACCOUNT_LINK_REJECTED, outcome=Outcome.DENIED, object_id=str(link_id)
            ),
        )
        session.commit()
        raise LinkInvalid()
    replaces_factor = link.purpose == LinkPurpose.SECOND_FACTOR.value
    needs_totp = replaces_factor or (requires_totp(user.roles) and not user.totp_enabled)
    pending = None
    if needs_totp:
        # Sealed in the database, so the form's second request may reach another worker.
        sealed = keyring.unseal(session, pending_totp_name(link.id))
        if sealed is None:
            pending = new_totp_secret()
            keyring.seal(session, pending_totp_name(link.id), pending.encode())
            session.commit()
        else:
            pending = sealed.decode()
    return LinkTarget(
        link=link,
        user=user,
        needs_totp=needs_totp,
        pending_totp_secret=pending,
        proves_second_factor=user.totp_enabled and not replaces_factor,
        keeps_password=replaces_factor,
    )


CURRENT_CODE_MESSAGE = N_("Enter a code from your authenticator app or one of your recovery codes.")
# Wrong passwords or codes a link survives: guessing the proof through a leaked link ends here.
MAX_LINK_PROOF_FAILURES = 5


def _refuse_link(
    session: Session, target: LinkTarget, reason: str, context: RequestContext, now: datetime
) -> None:
    """Audit a failed proof on a link (committed at once) and spend the link after too many."""
    earlier = session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.action == AuditAction.ACCOUNT_LINK_REJECTED.value,
            AuditEvent.object_id == str(target.link.id),
        )
    )
    if (earlier or 0) + 1 >= MAX_LINK_PROOF_FAILURES:
        target.link.used_at = now
    audit.record(
        session,
        audit.Event(
            AuditAction.ACCOUNT_LINK_REJECTED,
            outcome=Outcome.DENIED,
            actor_id=target.user.id,
            object_id=str(target.link.id),
            details={"reason": reason, "purpose": target.link.purpose},
            context=context,
        ),
    )
    session.commit()


@dataclass(frozen=True)
class LinkAnswers:
    """What the link's form sends: the new (or, for a second-factor link, the current)
    password, a code from the newly paired app, and a code from the factor being replaced."""

    password: str
    totp: str = ""
    current_code: str = ""


def redeem_link(
    session: Session,
    factors: SecondFactors,
    passwords: Passwords,
    link_id: uuid.UUID,
    answers: LinkAnswers,
    context: RequestContext,
    now: datetime,
) -> list[str]:
    """Set the password (and enrol TOTP where needed); the link is spent. Returns recovery codes.

    A second-factor link instead asks for the current password and replaces the second
    factor; a reset of an account that has one asks for it (``current_code``).
    """
    target = open_link(session, factors.keyring, link_id, now)
    user = target.user
    password = answers.password
    actor = Actor(user_id=user.id, context=context)
    if target.keeps_password:
        if not passwords.verify(user.password_hash, password):
            _refuse_link(session, target, "password_not_proven", context, now)
            raise ValidationFailed({"password": [N_("The password is wrong.")]})
    else:
        validate_password(password, user.username)
    if target.proves_second_factor:
        try:
            check_second_factor(session, factors, user, answers.current_code, now)
        except SignInFailed:
            _refuse_link(session, target, "second_factor_not_proven", context, now)
            raise ValidationFailed({"current_code": [CURRENT_CODE_MESSAGE]}) from None
    codes: list[str] = []
    if target.pending_totp_secret is not None:
        codes = enrol_totp(
            session, factors, actor, user, target.pending_totp_secret, answers.totp, now
        )
        factors.keyring.forget(session, pending_totp_name(target.link.id))
    target.link.used_at = now
    if target.keeps_password:
        # The old second factor is gone: so is every session and token that relied on it.
        end_all_sessions(session, user.id, "second_factor_replaced", now)
        revoke_all_tokens(session, user.id, now)
    else:
        set_password(session, passwords, actor, user, password, now)
    audit.record(
        session,
        audit.Event(
            AuditAction.ACCOUNT_LINK_REDEEMED,
            actor_id=user.id,
            object_id=str(target.link.id),
            details={"purpose": target.link.purpose},
            context=context,
        ),
    )
    return codes
