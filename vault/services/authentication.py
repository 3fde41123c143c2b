"""Sign-in, server-side sessions and the second factor (TOTP and recovery codes).

Threats this module answers:
- password guessing: Argon2id hashes, a lockout per (account, address), and a gentle
  account-wide slowdown that cannot be turned into a lockout of the director from
  everywhere by one attacker;
- stolen cookies: sessions live in the database and end on sign-out, on disabling, on a
  password change and after idle or absolute timeouts;
- replayed one-time codes: each TOTP time step is accepted once;
- leaked databases: session tokens and recovery codes are stored only as keyed hashes,
  TOTP seeds only wrapped by the master key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.keyring import Keyring
from vault.models import (
    LoginAttempt,
    LoginSession,
    RecoveryCode,
    User,
)
from vault.services import audit
from vault.services.accounts import (
    ABSOLUTE_TIMEOUT,
    ACCOUNT_SLOWDOWN_AFTER,
    ACCOUNT_SLOWDOWN_MAX_SECONDS,
    ACCOUNT_SLOWDOWN_STEP_SECONDS,
    IDLE_TIMEOUT,
    LAST_SEEN_RESOLUTION,
    LOCKOUT_WINDOW,
    PAIR_FAILURE_LIMIT,
    RECOVERY_CODE_COUNT,
    Secrets,
    find_user,
    normalise_username,
    requires_totp,
)
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.errors import (
    N_,
    ServiceError,
    ValidationFailed,
)
from vault.services.passwords import Passwords


class SignInFailed(ServiceError):
    message = N_("Wrong username, password or code.")


class SecondFactorNotEnrolled(ServiceError):
    message = N_(
        "Your role requires two-factor authentication, which is not set up yet. "
        "Ask the administrator for a set-up link."
    )


class LockedOut(ServiceError):
    message = N_(
        "Signing in as %(username)s from this device is paused after too many failed "
        "attempts. Try again in %(minutes)s minutes. Other accounts, and this one on "
        "another device, are not affected."
    )

    def __init__(self, retry_after_seconds: int, username: str) -> None:
        minutes = max(1, (retry_after_seconds + 59) // 60)
        super().__init__(None, minutes=minutes, username=username)
        self.retry_after_seconds = retry_after_seconds


class SecondFactorRequired(ServiceError):
    message = N_("Enter a current code from your authenticator app.")


# -- second factor ----------------------------------------------------------------------------


def _totp_secret_name(user_id: uuid.UUID) -> str:
    return f"totp:{user_id}"


def pending_totp_name(link_id: uuid.UUID) -> str:
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


@dataclass(frozen=True)
class SecondFactors:
    """What keeps the second factors: the keyring seals each TOTP seed, and the secrets
    turn recovery codes into the digests the database holds."""

    keyring: Keyring
    secrets: Secrets


def enrol_totp(
    session: Session,
    factors: SecondFactors,
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
    factors.keyring.seal(session, _totp_secret_name(user.id), secret.encode())
    user.totp_enabled = True
    user.totp_last_step = step
    codes = _new_recovery_codes(session, factors.secrets, user.id)
    audit.record(
        session,
        audit.by(actor, AuditAction.ACCOUNT_TOTP_ENROLLED, object_id=str(user.id)),
    )
    return codes


def enrol_totp_directly(
    session: Session, factors: SecondFactors, user: User, now: datetime
) -> tuple[str, list[str]]:
    """For the operator's console (`recvault user add`, `recvault demo`): seed printed once."""
    secret = new_totp_secret()
    codes = enrol_totp(session, factors, OPERATOR, user, secret, pyotp.TOTP(secret).at(now), now)
    # The console code was generated, not typed: free its step so the person's first real
    # sign-in within the same 30 seconds is not refused as a replay.
    user.totp_last_step = None
    return secret, codes


def check_second_factor(
    session: Session, factors: SecondFactors, user: User, code: str, now: datetime
) -> str:
    """Accept a fresh TOTP code or an unused recovery code; returns which one was used."""
    secret = factors.keyring.unseal(session, _totp_secret_name(user.id))
    if secret is not None:
        step = _match_totp_step(secret.decode(), code, now)
        if step is not None and (user.totp_last_step is None or step > user.totp_last_step):
            user.totp_last_step = step
            return "totp"
    raw = code.strip().lower().replace("-", "").replace(" ", "")
    if len(raw) == 10:
        digest = factors.secrets.digest("recovery", raw)
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
    session: Session, factors: SecondFactors, user: User, code: str, now: datetime
) -> None:
    """Step-up check before a sensitive act (creating a token); raises if the code is wrong."""
    try:
        check_second_factor(session, factors, user, code, now)
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


@dataclass(frozen=True)
class Credentials:
    """What the sign-in form sends: the second factor is a TOTP code or a recovery code."""

    username: str
    password: str
    second_factor: str = ""


def sign_in(
    session: Session,
    factors: SecondFactors,
    passwords: Passwords,
    credentials: Credentials,
    context: RequestContext,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> SignIn:
    """Check the credentials and open a session. Commits: failures must be counted too."""
    name = normalise_username(credentials.username)[:64]
    attempts = _Attempts(session, name, context.ip_address or "unknown", context, now)
    window_start = now - LOCKOUT_WINDOW

    pair_failures = _recent_failures(session, name, window_start, attempts.ip_address)
    if len(pair_failures) >= PAIR_FAILURE_LIMIT:
        retry_after = pair_failures[-PAIR_FAILURE_LIMIT] + LOCKOUT_WINDOW - now
        attempts.record(AuditAction.AUTH_LOGIN_LOCKED, Outcome.DENIED, None, "locked")
        raise LockedOut(max(int(retry_after.total_seconds()), 1), name)

    account_failures = len(_recent_failures(session, name, window_start))
    if account_failures > ACCOUNT_SLOWDOWN_AFTER:
        excess = account_failures - ACCOUNT_SLOWDOWN_AFTER
        sleep(min(ACCOUNT_SLOWDOWN_MAX_SECONDS, ACCOUNT_SLOWDOWN_STEP_SECONDS * excess))

    user = find_user(session, name)
    password_ok = passwords.verify(
        user.password_hash if user is not None else None, credentials.password
    )
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
            method = check_second_factor(session, factors, user, credentials.second_factor, now)
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
