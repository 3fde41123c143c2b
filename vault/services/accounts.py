"""Accounts, sign-in, sessions, second factor, API tokens and account links.

Threats this module answers:
- password guessing: Argon2id hashes, a lockout per (account, address), and a gentle
  account-wide slowdown that cannot be turned into a lockout of the director from
  everywhere by one attacker;
- stolen cookies: sessions live in the database and end on sign-out, on disabling, on a
  password change and after idle or absolute timeouts;
- replayed one-time codes: each TOTP time step is accepted once;
- leaked databases: session tokens, API tokens and recovery codes are stored only as
  keyed hashes, TOTP seeds only wrapped by the master key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from vault.keyring import Keyring
from vault.models import (
    AccountLink,
    ApiToken,
    AuditEvent,
    LoginAttempt,
    LoginSession,
    RecoveryCode,
    User,
    UserRole,
)
from vault.services import audit
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.errors import (
    N_,
    Conflict,
    NotFound,
    PermissionDenied,
    ServiceError,
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


class SignInFailed(ServiceError):
    message = N_("Wrong username, password or code.")


class SecondFactorNotEnrolled(ServiceError):
    message = N_(
        "Your role requires two-factor authentication, which is not set up yet. "
        "Ask the administrator for a set-up link."
    )


class LockedOut(ServiceError):
    message = N_(
        "Too many failed sign-in attempts from this address. Try again in %(minutes)s minutes."
    )

    def __init__(self, retry_after_seconds: int) -> None:
        minutes = max(1, (retry_after_seconds + 59) // 60)
        super().__init__(None, minutes=minutes)
        self.retry_after_seconds = retry_after_seconds


class LinkInvalid(ServiceError):
    message = N_("This link is invalid, has expired or has already been used.")


class SecondFactorRequired(ServiceError):
    message = N_("Enter a current code from your authenticator app.")


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
class Actor:
    """Who performs an act: a signed-in user, or the operator at the server's console."""

    user_id: uuid.UUID | None
    context: RequestContext | None = None
    via: str = "web"


OPERATOR = Actor(user_id=None, via="cli")


def create_user(
    session: Session,
    passwords: Passwords,
    actor: Actor,
    *,
    username: str,
    full_name: str,
    email: str | None,
    roles: Iterable[str],
    password: str | None,
) -> User:
    name = _validate_username(username)
    role_set = parse_roles(roles)
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
        audit.Event(
            AuditAction.ACCOUNT_CREATED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            details={"roles": sorted(role_set), "via": actor.via},
            context=actor.context,
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
        audit.Event(
            AuditAction.ACCOUNT_ROLES_CHANGED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            details={"before": before, "after": sorted(role_set), "via": actor.via},
            context=actor.context,
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
        audit.Event(
            AuditAction.ACCOUNT_DISABLED if disabled else AuditAction.ACCOUNT_ENABLED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            details={"via": actor.via},
            context=actor.context,
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
    _set_password(session, passwords, actor, user, new, now)


def _set_password(
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
        audit.Event(
            AuditAction.ACCOUNT_PASSWORD_CHANGED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            context=actor.context,
        ),
    )


# -- second factor ----------------------------------------------------------------------------


def _totp_secret_name(user_id: uuid.UUID) -> str:
    return f"totp:{user_id}"


def _pending_totp_name(link_id: uuid.UUID) -> str:
    return f"totp-pending:{link_id}"


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def _match_totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step a code belongs to (current, or one either side for clock drift)."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def _new_recovery_codes(session: Session, secrets_: Secrets, user_id: uuid.UUID) -> list[str]:
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = secrets.token_hex(5)  # 40 bits; each code works once, behind the lockout
        code = f"{raw[:5]}-{raw[5:]}"
        codes.append(code)
        session.add(RecoveryCode(user_id=user_id, code_hmac=secrets_.digest("recovery", raw)))
    return codes


def enrol_totp(
    session: Session,
    keyring: Keyring,
    secrets_: Secrets,
    actor: Actor,
    user: User,
    secret: str,
    code: str,
    now: datetime,
) -> list[str]:
    """Confirm a new TOTP seed with a code from the app; returns fresh recovery codes."""
    step = _match_totp_step(secret, code, now)
    if step is None:
        raise ValidationFailed(
            {"totp": [N_("The code does not match. Check the time on your phone.")]}
        )
    keyring.seal(session, _totp_secret_name(user.id), secret.encode())
    user.totp_enabled = True
    user.totp_last_step = step
    codes = _new_recovery_codes(session, secrets_, user.id)
    audit.record(
        session,
        audit.Event(
            AuditAction.ACCOUNT_TOTP_ENROLLED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            context=actor.context,
        ),
    )
    return codes


def enrol_totp_directly(
    session: Session, keyring: Keyring, secrets_: Secrets, user: User, now: datetime
) -> tuple[str, list[str]]:
    """For the operator's console (`recvault user add`, `recvault demo`): seed printed once."""
    secret = new_totp_secret()
    codes = enrol_totp(
        session,
        keyring,
        secrets_,
        OPERATOR,
        user,
        secret,
        pyotp.TOTP(secret).at(now),
        now,
    )
    # The console code was generated, not typed: free its step so the person's first real
    # sign-in within the same 30 seconds is not refused as a replay.
    user.totp_last_step = None
    return secret, codes


def _check_second_factor(
    session: Session, keyring: Keyring, secrets_: Secrets, user: User, code: str, now: datetime
) -> str:
    """Accept a fresh TOTP code or an unused recovery code; returns which one was used."""
    secret = keyring.unseal(session, _totp_secret_name(user.id))
    if secret is not None:
        step = _match_totp_step(secret.decode(), code, now)
        if step is not None and (user.totp_last_step is None or step > user.totp_last_step):
            user.totp_last_step = step
            return "totp"
    raw = code.strip().lower().replace("-", "").replace(" ", "")
    if len(raw) == 10:
        digest = secrets_.digest("recovery", raw)
        for recovery in session.scalars(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        ):
            if hmac.compare_digest(recovery.code_hmac, digest):
                recovery.used_at = now
                return "recovery_code"
    raise SignInFailed()


def verify_second_factor(
    session: Session, keyring: Keyring, secrets_: Secrets, user: User, code: str, now: datetime
) -> None:
    """Step-up check before a sensitive act (creating a token); raises if the code is wrong."""
    try:
        _check_second_factor(session, keyring, secrets_, user, code, now)
    except SignInFailed:
        raise SecondFactorRequired() from None


# -- sign-in ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    user: User
    session_token: str


def _recent_failures(
    session: Session, username: str, since: datetime, ip_address: str | None = None
) -> list[datetime]:
    """Failures since ``since`` and since the last success (of the pair, if an address is given)."""
    query = select(LoginAttempt.attempted_at, LoginAttempt.succeeded).where(
        LoginAttempt.username == username, LoginAttempt.attempted_at >= since
    )
    if ip_address is not None:
        query = query.where(LoginAttempt.ip_address == ip_address)
    failures: list[datetime] = []
    for attempted_at, succeeded in session.execute(query.order_by(LoginAttempt.attempted_at)):
        failures = [] if succeeded else [*failures, attempted_at]
    return failures


def sign_in(
    session: Session,
    keyring: Keyring,
    secrets_: Secrets,
    passwords: Passwords,
    *,
    username: str,
    password: str,
    totp: str,
    context: RequestContext,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> SignIn:
    """Check the credentials and open a session. Commits: failures must be counted too."""
    name = normalise_username(username)[:64]
    attempts = _Attempts(session, name, context.ip_address or "unknown", context, now)
    window_start = now - LOCKOUT_WINDOW

    pair_failures = _recent_failures(session, name, window_start, attempts.ip_address)
    if len(pair_failures) >= PAIR_FAILURE_LIMIT:
        retry_after = pair_failures[-PAIR_FAILURE_LIMIT] + LOCKOUT_WINDOW - now
        attempts.record(AuditAction.AUTH_LOGIN_LOCKED, Outcome.DENIED, None, "locked")
        raise LockedOut(max(int(retry_after.total_seconds()), 1))

    account_failures = len(_recent_failures(session, name, window_start))
    if account_failures > ACCOUNT_SLOWDOWN_AFTER:
        excess = account_failures - ACCOUNT_SLOWDOWN_AFTER
        sleep(min(ACCOUNT_SLOWDOWN_MAX_SECONDS, ACCOUNT_SLOWDOWN_STEP_SECONDS * excess))

    user = find_user(session, name)
    password_ok = passwords.verify(user.password_hash if user is not None else None, password)
    if user is None:
        attempts.failed(None, "unknown_user")
        raise SignInFailed()
    if not password_ok:
        attempts.failed(user, "bad_password")
        raise SignInFailed()
    if user.disabled_at is not None:
        attempts.failed(user, "disabled")
        raise SignInFailed()

    second_factor = requires_totp(user.roles) or user.totp_enabled
    if second_factor:
        if not user.totp_enabled:
            attempts.failed(user, "totp_not_enrolled")
            raise SecondFactorNotEnrolled()
        try:
            method = _check_second_factor(session, keyring, secrets_, user, totp, now)
        except SignInFailed:
            attempts.failed(user, "bad_second_factor")
            raise
        if method == "recovery_code":
            audit.record(
                session,
                audit.Event(
                    AuditAction.ACCOUNT_RECOVERY_CODE_USED, actor_id=user.id, context=context
                ),
            )

    token = secrets.token_urlsafe(32)
    session.add(
        LoginSession(
            id=_session_id(token),
            user_id=user.id,
            second_factor=second_factor,
            created_at=now,
            last_seen_at=now,
        )
    )
    attempts.record(
        AuditAction.AUTH_LOGIN_SUCCEEDED, Outcome.SUCCESS, user, None, second_factor=second_factor
    )
    return SignIn(user=user, session_token=token)


@dataclass(frozen=True)
class _Attempts:
    """One sign-in attempt's record: a counted row for the lockout and an audit event,
    committed at once so that a refused attempt still counts."""

    session: Session
    username: str
    ip_address: str
    context: RequestContext
    now: datetime

    def failed(self, user: User | None, reason: str) -> None:
        self.record(AuditAction.AUTH_LOGIN_FAILED, Outcome.FAILURE, user, reason)

    def record(
        self,
        action: AuditAction,
        outcome: Outcome,
        user: User | None,
        reason: str | None,
        **details: object,
    ) -> None:
        # A lockout refusal is not itself a guess, so it does not extend the lockout.
        if action is not AuditAction.AUTH_LOGIN_LOCKED:
            self.session.add(
                LoginAttempt(
                    username=self.username,
                    ip_address=self.ip_address,
                    attempted_at=self.now,
                    succeeded=outcome is Outcome.SUCCESS,
                )
            )
        audit.record(
            self.session,
            audit.Event(
                action,
                outcome=outcome,
                actor_id=user.id if user else None,
                details={**({"reason": reason} if reason else {}), **details},
                context=self.context,
            ),
        )
        self.session.commit()


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ActiveSession:
    user: User
    session_id: str
    second_factor: bool


def resolve_session(session: Session, token: str, now: datetime) -> ActiveSession | None:
    """The live session a cookie token names, or None (ending it if it has timed out)."""
    row = session.get(LoginSession, _session_id(token))
    if row is None or row.ended_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        return None
    if now - row.last_seen_at > IDLE_TIMEOUT:
        _end(session, row, "idle_timeout", now)
        return None
    if now - row.created_at > ABSOLUTE_TIMEOUT:
        _end(session, row, "absolute_timeout", now)
        return None
    if now - row.last_seen_at > LAST_SEEN_RESOLUTION:
        row.last_seen_at = now
        session.commit()
    return ActiveSession(user=user, session_id=row.id, second_factor=row.second_factor)


def _end(session: Session, row: LoginSession, reason: str, now: datetime) -> None:
    row.ended_at = now
    row.end_reason = reason
    audit.record(
        session,
        audit.Event(
            AuditAction.AUTH_SESSION_ENDED, actor_id=row.user_id, details={"reason": reason}
        ),
    )
    session.commit()


def sign_out(session: Session, session_id: str, context: RequestContext, now: datetime) -> None:
    row = session.get(LoginSession, session_id)
    if row is None or row.ended_at is not None:
        return
    row.ended_at = now
    row.end_reason = "sign_out"
    audit.record(
        session, audit.Event(AuditAction.AUTH_LOGOUT, actor_id=row.user_id, context=context)
    )
    session.commit()


def end_all_sessions(session: Session, user_id: uuid.UUID, reason: str, now: datetime) -> None:
    session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
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
        audit.Event(
            AuditAction.TOKEN_CREATED,
            actor_id=actor.user_id,
            object_id=str(record.id),
            details={
                "owner": str(user.id),
                "via": actor.via,
                "expires_at": record.expires_at.isoformat(),
            },
            context=actor.context,
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
            audit.Event(
                AuditAction.TOKEN_REVOKED,
                actor_id=actor.user_id,
                object_id=str(record.id),
                details={"via": actor.via},
                context=actor.context,
            ),
        )
    return record


def revoke_all_tokens(session: Session, user_id: uuid.UUID, now: datetime) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


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
        audit.Event(
            AuditAction.ACCOUNT_LINK_ISSUED,
            actor_id=actor.user_id,
            object_id=str(user.id),
            details={"purpose": purpose.value, "via": actor.via},
            context=actor.context,
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
        sealed = keyring.unseal(session, _pending_totp_name(link.id))
        if sealed is None:
            pending = new_totp_secret()
            keyring.seal(session, _pending_totp_name(link.id), pending.encode())
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


def redeem_link(
    session: Session,
    keyring: Keyring,
    secrets_: Secrets,
    passwords: Passwords,
    link_id: uuid.UUID,
    *,
    password: str,
    totp: str,
    current_code: str = "",
    context: RequestContext,
    now: datetime,
) -> list[str]:
    """Set the password (and enrol TOTP where needed); the link is spent. Returns recovery codes.

    A second-factor link instead asks for the current password and replaces the second
    factor; a reset of an account that has one asks for it (``current_code``).
    """
    target = open_link(session, keyring, link_id, now)
    user = target.user
    actor = Actor(user_id=user.id, context=context)
    if target.keeps_password:
        if not passwords.verify(user.password_hash, password):
            _refuse_link(session, target, "password_not_proven", context, now)
            raise ValidationFailed({"password": [N_("The password is wrong.")]})
    else:
        validate_password(password, user.username)
    if target.proves_second_factor:
        try:
            _check_second_factor(session, keyring, secrets_, user, current_code, now)
        except SignInFailed:
            _refuse_link(session, target, "second_factor_not_proven", context, now)
            raise ValidationFailed({"current_code": [CURRENT_CODE_MESSAGE]}) from None
    codes: list[str] = []
    if target.pending_totp_secret is not None:
        codes = enrol_totp(
            session, keyring, secrets_, actor, user, target.pending_totp_secret, totp, now
        )
        keyring.forget(session, _pending_totp_name(target.link.id))
    target.link.used_at = now
    if target.keeps_password:
        # The old second factor is gone: so is every session and token that relied on it.
        end_all_sessions(session, user.id, "second_factor_replaced", now)
        revoke_all_tokens(session, user.id, now)
    else:
        _set_password(session, passwords, actor, user, password, now)
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
