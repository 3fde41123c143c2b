"""The operator's account tasks at the server console (`recvault user`, `token`, `demo`).

Each runs in its own transaction and is audited with no actor id and ``via: cli``: the
operator is whoever holds a shell on the server, not an account.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from vault.models import ApiToken, User
from vault.services import accounts, audit, authentication, tokens
from vault.services.accounts import Role
from vault.services.actors import OPERATOR
from vault.services.audit import AuditAction
from vault.services.errors import N_, Conflict, NotFound
from vault.services.mail import MailNotSent, configured_mailer
from vault.services.runtime import Runtime


@dataclass(frozen=True)
class CreatedAccount:
    username: str
    roles: tuple[str, ...]
    password: str | None
    totp_secret: str | None
    recovery_codes: tuple[str, ...]


def _secrets(runtime: Runtime) -> accounts.Secrets:
    return accounts.Secrets.from_secret_key(runtime.settings.read_secret_key())


def _second_factors(runtime: Runtime) -> authentication.SecondFactors:
    return authentication.SecondFactors(runtime.keyring, _secrets(runtime))


def _user(session: Session, username: str) -> User:
    user = accounts.find_user(session, username)
    if user is None:
        raise NotFound(N_("No such account."))
    return user


@dataclass(frozen=True)
class ReplacedSecondFactor:
    totp_secret: str
    recovery_codes: tuple[str, ...]
    announced_to: str | None


# Bilingual: the console has no language of its own, and the holder must understand it.
SECOND_FACTOR_RESET_NOTICE = (
    "Jūsu Recording Vault konta otrais faktors tika atiestatīts servera konsolē ({at} UTC). "
    "Ja to nelūdzāt, nekavējoties ziņojiet datu aizsardzības speciālistam.\n\n"
    "The second factor of your Recording Vault account was reset at the server console "
    "({at} UTC). If you did not ask for this, tell the data-protection officer at once.\n"
)


def reset_second_factor(runtime: Runtime, username: str, now: datetime) -> ReplacedSecondFactor:
    """`recvault user reset-second-factor`: a lost authenticator, replaced at the console.

    The password stays, so the operator who sees the new seed still cannot sign in as the
    holder. Every session and token of the account ends, the act is audited, and the holder
    is told by e-mail where e-mail is configured.
    """
    with runtime.sessions() as session, session.begin():
        user = _user(session, username)
        if not user.totp_enabled:
            raise Conflict(N_("This account has no second factor to reset."))
        secret, codes = authentication.enrol_totp_directly(
            session, _second_factors(runtime), user, now
        )
        accounts.end_all_sessions(session, user.id, "second_factor_replaced", now)
        accounts.revoke_all_tokens(session, user.id, now)
        audit.record(
            session,
            audit.Event(
                AuditAction.ACCOUNT_SECOND_FACTOR_RESET_AT_CONSOLE,
                object_id=str(user.id),
                details={"via": OPERATOR.via},
            ),
        )
        email = user.email
    announced = None
    mailer = configured_mailer(runtime.settings)
    if mailer is not None and email:
        notice = SECOND_FACTOR_RESET_NOTICE.format(at=now.strftime("%Y-%m-%d %H:%M"))
        try:
            mailer.send(
                email, "Recording Vault: otrais faktors atiestatīts / second factor reset", notice
            )
            announced = email
        except MailNotSent:
            announced = None
    return ReplacedSecondFactor(secret, tuple(codes), announced)


def add_account(
    runtime: Runtime,
    *,
    username: str,
    full_name: str,
    email: str | None,
    roles: Iterable[str],
    password: str,
    now: datetime,
) -> CreatedAccount:
    with runtime.sessions() as session, session.begin():
        user = accounts.create_user(
            session,
            runtime.passwords,
            OPERATOR,
            accounts.NewAccount(
                username=username,
                full_name=full_name,
                email=email,
                roles=roles,
                password=password,
            ),
        )
        user.password_changed_at = now
        secret: str | None = None
        codes: list[str] = []
        if accounts.requires_totp(user.roles):
            secret, codes = authentication.enrol_totp_directly(
                session, _second_factors(runtime), user, now
            )
        return CreatedAccount(
            user.username, tuple(sorted(user.roles)), password, secret, tuple(codes)
        )


def disable_account(runtime: Runtime, username: str, now: datetime) -> None:
    with runtime.sessions() as session, session.begin():
        accounts.set_disabled(session, OPERATOR, _user(session, username), True, now)


def issue_token(runtime: Runtime, username: str, name: str, ttl: str, now: datetime) -> str:
    with runtime.sessions() as session, session.begin():
        user = _user(session, username)
        issued = tokens.create_token(
            session, _secrets(runtime), OPERATOR, user, name, tokens.parse_lifetime(ttl), now
        )
        return issued.token


def tokens_of(runtime: Runtime, username: str) -> list[ApiToken]:
    with runtime.sessions() as session:
        return tokens.list_tokens(session, _user(session, username).id)


def revoke_token(runtime: Runtime, token_id: uuid.UUID, now: datetime) -> None:
    with runtime.sessions() as session, session.begin():
        tokens.revoke_token(session, OPERATOR, token_id, now, owner_id=None)


DEMO_ACCOUNTS: tuple[tuple[str, str, Role], ...] = (
    ("skolotaja", "Anna Bērziņa", Role.TEACHER),
    ("psihologs", "Jānis Kalniņš", Role.STAFF),
    ("direktore", "Ilze Ozola", Role.DIRECTOR),
    ("dpo", "Māris Liepa", Role.AUDITOR),
    ("it-admin", "Pēteris Krūmiņš", Role.ADMIN),
)


def seed_demo(
    runtime: Runtime, make_password: Callable[[], str], now: datetime
) -> list[CreatedAccount]:
    """One account per role; refuses a database that already has accounts."""
    with runtime.sessions() as session:
        if accounts.count_users(session):
            raise Conflict(N_("The database already has accounts; demo data was not added."))
    created = [
        add_account(
            runtime,
            username=username,
            full_name=name,
            email=None,
            roles=[role],
            password=make_password(),
            now=now,
        )
        for username, name, role in DEMO_ACCOUNTS
    ]
    with runtime.sessions() as session, session.begin():
        audit.record(
            session, audit.Event(AuditAction.SYSTEM_DEMO_SEEDED, details={"accounts": len(created)})
        )
    return created
