"""Accounts: users and their roles, passwords, and ending an account's access.

Sign-in, sessions and the second factor are in ``authentication``, API tokens in
``tokens``, invitation and reset links in ``links``.

Threats this module answers:
- stolen cookies and tokens: disabling an account or changing its password ends every
  session and revokes every API token at once;
- an administrator acting as someone else: nobody changes their own roles, and the admin
  role is never combined with the director's or the auditor's.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vault.models import (
    ApiToken,
    LoginSession,
    User,
    UserRole,
)
from vault.services import audit
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import (
    N_,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from vault.services.passwords import Passwords


class Role(StrEnum):
    TEACHER = "teacher"
    STAFF = "staff"
    DIRECTOR = "director"
    AUDITOR = "auditor"
    ADMIN = "admin"


ROLE_LABELS: dict[Role, str] = {
    Role.TEACHER: N_("Teacher"),
    Role.STAFF: N_("Staff member"),
    Role.DIRECTOR: N_("Director"),
    Role.AUDITOR: N_("Auditor (data-protection officer)"),
    Role.ADMIN: N_("Administrator (school IT)"),
}

# Roles whose sign-in needs a second factor: they grant access, read the whole log, or run
# the machine.
TOTP_ROLES = frozenset({Role.DIRECTOR, Role.AUDITOR, Role.ADMIN})
# Separation of duties: whoever runs the machine can neither grant access nor hide it.
INCOMPATIBLE_WITH_ADMIN = frozenset({Role.DIRECTOR, Role.AUDITOR})

IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
# Writing last_seen_at on every request would turn each stream range into a write.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)

LOCKOUT_WINDOW = timedelta(minutes=15)
PAIR_FAILURE_LIMIT = 5
# Past this many failures from all addresses together, each attempt on the account waits a
# little; it never refuses, so the owner still gets in from their own address.
ACCOUNT_SLOWDOWN_AFTER = 10
ACCOUNT_SLOWDOWN_STEP_SECONDS = 0.2
ACCOUNT_SLOWDOWN_MAX_SECONDS = 2.0

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
RECOVERY_CODE_COUNT = 10
LINK_LIFETIME = timedelta(hours=48)
MAX_TOKEN_LIFETIME = timedelta(days=366)
TOKEN_PREFIX = "rv_"  # noqa: S105 - a public marker that makes leaked tokens greppable


@dataclass(frozen=True)
class Secrets:
    """Server-side keys for keyed hashes; derived from the instance secret, never stored."""

    hmac_key: bytes

    @classmethod
    def from_secret_key(cls, secret_key: bytes) -> Secrets:
        return cls(hmac.new(secret_key, b"recording-vault/account-hmac/v1", "sha256").digest())

    def digest(self, purpose: str, value: str) -> str:
        return hmac.new(self.hmac_key, f"{purpose}:{value}".encode(), "sha256").hexdigest()


# -- roles and validation -------------------------------------------------------------------


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    roles: set[Role] = set()
    for value in values:
        try:
            roles.add(Role(value))
        except ValueError:
            raise ValidationFailed({"roles": [N_("Unknown role.")]}) from None
    if not roles:
        raise ValidationFailed({"roles": [N_("Choose at least one role.")]})
    if Role.ADMIN in roles and roles & INCOMPATIBLE_WITH_ADMIN:
        raise ValidationFailed(
            {"roles": [N_("The administrator role cannot be combined with director or auditor.")]}
        )
    return frozenset(roles)


def requires_totp(roles: Iterable[str]) -> bool:
    return any(role in TOTP_ROLES for role in roles)


def normalise_username(username: str) -> str:
    return username.strip().lower()


def _validate_username(username: str) -> str:
    name = normalise_username(username)
    if not (3 <= len(name) <= 64) or not all(c.isalnum() or c in "._-" for c in name):
        raise ValidationFailed(
            {"username": [N_("Use 3 to 64 letters, digits, dots, hyphens or underscores.")]}
        )
    return name


def validate_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed({"password": [N_("Use at least 12 characters.")]})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed({"password": [N_("The password is too long.")]})
    if normalise_username(username) in password.lower():
        raise ValidationFailed({"password": [N_("The password must not contain the username.")]})


# -- accounts ---------------------------------------------------------------------------------


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(
        select(User).where(User.username == normalise_username(username))
    ).one_or_none()


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


@dataclass(frozen=True)
class NewAccount:
    """An account to create; without a password, the person sets one through an invitation."""

    username: str
    full_name: str
    roles: Iterable[str]
    email: str | None = None
    password: str | None = None


def create_user(session: Session, passwords: Passwords, actor: Actor, new: NewAccount) -> User:
    name = _validate_username(new.username)
    role_set = parse_roles(new.roles)
    full_name, email, password = new.full_name, new.email, new.password
    field_errors: dict[str, list[str]] = {}
    if not full_name.strip():
        field_errors["full_name"] = [N_("Enter the person's full name.")]
    if email and ("@" not in email or len(email) > 254):
        field_errors["email"] = [N_("Enter a valid e-mail address.")]
    if field_errors:
        raise ValidationFailed(field_errors)
    if password is not None:
        validate_password(password, name)
    if find_user(session, name) is not None:
        raise ValidationFailed({"username": [N_("This username is already taken.")]})
    user = User(
        username=name,
        full_name=full_name.strip(),
        email=email.strip() if email else None,
        password_hash=passwords.hash(password) if password is not None else None,
        role_rows=[UserRole(role=role.value) for role in sorted(role_set)],
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ACCOUNT_CREATED,
            object_id=str(user.id),
            details={"roles": sorted(role_set), "via": actor.via},
        ),
    )
    return user


def set_roles(session: Session, actor: Actor, user: User, roles: Iterable[str]) -> None:
    if actor.user_id == user.id:
        # An administrator who could add "teacher" or "director" to their own account would
        # grant themselves what separation of duties keeps from them.
        raise PermissionDenied(N_("Nobody may change their own roles."))
    role_set = parse_roles(roles)
    before = sorted(user.roles)
    if sorted(role_set) == before:
        return
    user.role_rows = [UserRole(role=role.value) for role in sorted(role_set)]
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ACCOUNT_ROLES_CHANGED,
            object_id=str(user.id),
            details={"before": before, "after": sorted(role_set), "via": actor.via},
        ),
    )


def set_disabled(session: Session, actor: Actor, user: User, disabled: bool, now: datetime) -> None:
    if disabled == (user.disabled_at is not None):
        return
    if disabled and actor.user_id == user.id:
        raise Conflict(N_("You cannot disable your own account."))
    user.disabled_at = now if disabled else None
    if disabled:
        end_all_sessions(session, user.id, "disabled", now)
        revoke_all_tokens(session, user.id, now)
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ACCOUNT_DISABLED if disabled else AuditAction.ACCOUNT_ENABLED,
            object_id=str(user.id),
            details={"via": actor.via},
        ),
    )


def change_password(
    session: Session,
    passwords: Passwords,
    actor: Actor,
    user: User,
    current: str,
    new: str,
    now: datetime,
) -> None:
    if not passwords.verify(user.password_hash, current):
        raise ValidationFailed({"current_password": [N_("The current password is wrong.")]})
    validate_password(new, user.username)
    set_password(session, passwords, actor, user, new, now)


def set_password(
    session: Session, passwords: Passwords, actor: Actor, user: User, new: str, now: datetime
) -> None:
    user.password_hash = passwords.hash(new)
    user.password_changed_at = now
    # A changed password ends every session and every API token: a thief's stolen cookie or
    # token dies with the old password.
    end_all_sessions(session, user.id, "password_changed", now)
    revoke_all_tokens(session, user.id, now)
    audit.record(
        session,
        audit.by(actor, AuditAction.ACCOUNT_PASSWORD_CHANGED, object_id=str(user.id)),
    )


def end_all_sessions(session: Session, user_id: uuid.UUID, reason: str, now: datetime) -> None:
    session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )


def revoke_all_tokens(session: Session, user_id: uuid.UUID, now: datetime) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
