"""Accounts and sign-in: lockout, TOTP, server-side sessions, CSRF, links, tokens, roles."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pyotp
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.support.audit_trail import audit_actions
from tests.support.backends import missing_backend
from tests.support.clock import stepping_clock
from tests.support.console import Console
from tests.support.mailbox import Mailbox, smtp_server
from tests.support.people import PASSWORD, Person, add_person, sign_in
from tests.support.streaming_support import user_id
from tests.support.webclient import csrf_token_from
from vault.app import create_app
from vault.models import AccountLink, ApiToken, AuditEvent, LoginSession, User
from vault.services import accounts, authentication
from vault.services.actors import OPERATOR
from vault.services.audit import RequestContext
from vault.services.errors import ValidationFailed
from vault.services.runtime import Runtime
from vault.settings import Settings


def app_with(settings: Settings, runtime: Runtime, **changes: object) -> Flask:
    """The app under changed settings, on the same database and store."""
    changed = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    return create_app(changed, dataclasses.replace(runtime, settings=changed))


@pytest.fixture
def admin(runtime: Runtime) -> Person:
    return add_person(runtime, "it-admin", "admin", name="Pēteris Krūmiņš")


def is_signed_in(client: FlaskClient) -> bool:
    return client.get("/account").status_code == 200


# -- sign-in and lockout ------------------------------------------------------------------------


def test_sign_in_rotates_the_session_and_answers_302(app: Flask, teacher: Person) -> None:
    client = app.test_client()
    client.get("/login")
    before = client.get_cookie("vault_session")
    assert before is not None
    response = sign_in(client, teacher)
    assert response.status_code == 302
    after = client.get_cookie("vault_session")
    assert after is not None and after.value != before.value
    assert is_signed_in(client)
    me = client.get("/api/v1/me").get_json()
    assert me == {"username": "skolotaja", "name": "Anna Bērziņa", "roles": ["teacher"]}


def test_wrong_password_is_refused_in_both_languages(app: Flask, teacher: Person) -> None:
    client = app.test_client()
    response = sign_in(client, teacher, password="wrong password!")
    assert response.status_code == 401
    assert "Nepareizs lietotājvārds, parole vai kods." in response.get_data(as_text=True)
    client.set_cookie("vault_lang", "en")
    english = sign_in(client, teacher, password="wrong password!")
    assert "Wrong username, password or code." in english.get_data(as_text=True)
    assert not is_signed_in(client)


def test_lockout_per_address_spares_the_account_elsewhere(
    app: Flask, runtime: Runtime, director: Person
) -> None:
    attacker = app.test_client()
    for _ in range(accounts.PAIR_FAILURE_LIMIT):
        assert (
            sign_in(
                attacker, director, ip="203.0.113.9", password="guess-guess-guess", totp="000000"
            ).status_code
            == 401
        )
    locked = sign_in(attacker, director, ip="203.0.113.9")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    page = locked.get_data(as_text=True)
    # It names what is paused, and the username stays in its field.
    assert "Pierakstīšanās kā direktore no šīs ierīces ir apturēta" in page
    assert 'name="username" autocomplete="username" required autofocus value="direktore"' in page
    attacker.set_cookie("vault_lang", "en")
    english = sign_in(attacker, director, ip="203.0.113.9", password="x", totp="0")
    assert "Signing in as direktore from this device is paused" in english.get_data(as_text=True)

    owner = app.test_client()
    assert sign_in(owner, director, ip="198.51.100.20").status_code == 302
    assert is_signed_in(owner)
    actions = audit_actions(runtime)
    assert "auth:login_locked" in actions
    assert actions.count("auth:login_failed") >= accounts.PAIR_FAILURE_LIMIT
    assert "auth:login_succeeded" in actions


def test_attacks_from_many_addresses_only_slow_the_account(
    runtime: Runtime, teacher: Person
) -> None:
    waits: list[float] = []
    now = runtime.clock()
    factors = authentication.SecondFactors(
        runtime.keyring, accounts.Secrets.from_secret_key(runtime.settings.read_secret_key())
    )
    with runtime.sessions() as session:
        for address in range(4):
            for _ in range(accounts.PAIR_FAILURE_LIMIT - 1):
                with pytest.raises(authentication.SignInFailed):
                    authentication.sign_in(
                        session,
                        factors,
                        runtime.passwords,
                        authentication.Credentials(teacher.username, "nope-nope-nope"),
                        RequestContext(ip_address=f"203.0.113.{address}"),
                        now,
                        sleep=waits.append,
                    )
        result = authentication.sign_in(
            session,
            factors,
            runtime.passwords,
            authentication.Credentials(teacher.username, PASSWORD),
            RequestContext(ip_address="198.51.100.1"),
            now,
            sleep=waits.append,
        )
    assert result.user.username == teacher.username
    assert waits, "the account-wide slowdown should have applied"
    assert max(waits) <= accounts.ACCOUNT_SLOWDOWN_MAX_SECONDS


# -- second factor -----------------------------------------------------------------------------


def test_director_without_totp_cannot_get_in(app: Flask, runtime: Runtime) -> None:
    with runtime.sessions() as session, session.begin():
        accounts.create_user(
            session,
            runtime.passwords,
            OPERATOR,
            accounts.NewAccount(
                username="direktors2",
                full_name="Bez TOTP",
                email=None,
                roles=["director"],
                password=PASSWORD,
            ),
        )
    client = app.test_client()
    person = Person("direktors2", PASSWORD, None, (), stepping_clock(runtime))
    response = sign_in(client, person, totp="123456")
    assert response.status_code == 401
    assert "divfaktoru" in response.get_data(as_text=True)
    assert not is_signed_in(client)


def test_director_needs_the_code(app: Flask, director: Person) -> None:
    client = app.test_client()
    assert sign_in(client, director, totp="").status_code == 401
    assert sign_in(client, director, totp="123456").status_code in (401,)
    assert not is_signed_in(client)


def test_a_reused_totp_code_is_refused(app: Flask, director: Person) -> None:
    code = director.fresh_code()
    first = app.test_client()
    assert sign_in(first, director, totp=code).status_code == 302
    second = app.test_client()
    assert sign_in(second, director, totp=code).status_code == 401
    assert not is_signed_in(second)


def test_a_recovery_code_works_once(app: Flask, runtime: Runtime, director: Person) -> None:
    code = director.recovery_codes[0]
    first = app.test_client()
    assert sign_in(first, director, totp=code).status_code == 302
    assert is_signed_in(first)
    second = app.test_client()
    assert sign_in(second, director, totp=code).status_code == 401
    assert "account:recovery_code_used" in audit_actions(runtime)


def test_a_privileged_role_granted_later_ends_password_only_sessions(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    client = app.test_client()
    assert sign_in(client, teacher).status_code == 302
    with runtime.sessions() as session, session.begin():
        user = accounts.find_user(session, teacher.username)
        assert user is not None
        accounts.set_roles(session, OPERATOR, user, ["teacher", "director"])
    assert not is_signed_in(client)


# -- sessions ----------------------------------------------------------------------------------


def age_sessions(runtime: Runtime, username: str, **values: datetime) -> None:
    with runtime.sessions() as session, session.begin():
        user = accounts.find_user(session, username)
        assert user is not None
        session.execute(
            update(LoginSession).where(LoginSession.user_id == user.id).values(**values)
        )


def test_an_idle_session_expires(app: Flask, runtime: Runtime, teacher: Person) -> None:
    client = app.test_client()
    sign_in(client, teacher)
    assert is_signed_in(client)
    age_sessions(
        runtime,
        teacher.username,
        last_seen_at=runtime.clock() - accounts.IDLE_TIMEOUT - timedelta(seconds=5),
    )
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert "auth:session_ended" in audit_actions(runtime)


def test_the_absolute_timeout_ends_a_busy_session(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    client = app.test_client()
    sign_in(client, teacher)
    age_sessions(
        runtime,
        teacher.username,
        created_at=runtime.clock() - accounts.ABSOLUTE_TIMEOUT - timedelta(minutes=1),
    )
    assert not is_signed_in(client)


def test_after_sign_out_the_old_cookie_is_rejected(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    client = app.test_client()
    sign_in(client, teacher)
    stolen = client.get_cookie("vault_session")
    assert stolen is not None
    token = csrf_token_from(client, "/account")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("vault_session", stolen.value)
    assert not is_signed_in(replay)
    assert replay.get("/api/v1/me").status_code == 401
    assert "auth:logout" in audit_actions(runtime)


def test_disabling_an_account_ends_its_sessions(
    app: Flask, runtime: Runtime, teacher: Person, admin: Person
) -> None:
    victim = app.test_client()
    sign_in(victim, teacher)
    assert is_signed_in(victim)
    operator = app.test_client()
    assert sign_in(operator, admin).status_code == 302
    with runtime.sessions() as session:
        user = accounts.find_user(session, teacher.username)
        assert user is not None
        teacher_id = user.id
    token = csrf_token_from(operator, f"/admin/users/{teacher_id}")
    response = operator.post(f"/admin/users/{teacher_id}/disable", data={"csrf_token": token})
    assert response.status_code == 302
    assert not is_signed_in(victim)
    assert sign_in(app.test_client(), teacher).status_code == 401
    assert "account:disabled" in audit_actions(runtime)


def test_changing_the_password_ends_every_session(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, teacher)
    sign_in(phone, teacher)
    token = csrf_token_from(laptop, "/account")
    new_password = "a much longer new passphrase"
    response = laptop.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": new_password,
            "new_password_repeat": new_password,
        },
    )
    assert response.status_code == 302
    assert not is_signed_in(laptop)
    assert not is_signed_in(phone)
    assert sign_in(app.test_client(), teacher, password=new_password).status_code == 302


# -- CSRF --------------------------------------------------------------------------------------


def test_a_form_without_csrf_token_gets_400(app: Flask, teacher: Person) -> None:
    client = app.test_client()
    sign_in(client, teacher)
    response = client.post("/account/tokens", data={"name": "laptop", "days": "30"})
    assert response.status_code == 400
    assert not client.get("/account").get_data(as_text=True).count("rv_")


def test_a_json_post_with_the_cookie_but_no_header_gets_400(app: Flask, teacher: Person) -> None:
    client = app.test_client()
    sign_in(client, teacher)
    response = client.post("/account/tokens", json={"name": "laptop", "days": "30"})
    assert response.status_code == 400
    token = csrf_token_from(client, "/account")
    allowed = client.post(
        "/account/tokens", data={"name": "laptop", "days": "30"}, headers={"X-CSRF-Token": token}
    )
    assert allowed.status_code == 201


def test_sign_in_form_without_csrf_token_gets_400(app: Flask, teacher: Person) -> None:
    response = app.test_client().post(
        "/login", data={"username": teacher.username, "password": PASSWORD}
    )
    assert response.status_code == 400


# -- invitation and reset links ----------------------------------------------------------------


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as served:
        yield served


@pytest.fixture
def mail_app(settings: Settings, runtime: Runtime, mailbox: tuple[Mailbox, int]) -> Flask:
    return app_with(
        settings,
        runtime,
        smtp_url=f"smtp://127.0.0.1:{mailbox[1]}",
        mail_from="vault@school.example.lv",
    )


LINK = re.compile(r"https?://\S+/account/setup/\S+")


def invite(client: FlaskClient, username: str, *roles: str) -> str:
    token = csrf_token_from(client, "/admin/users")
    response = client.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": username,
            "full_name": "Jauna Skolotāja",
            "email": f"{username}@school.example.lv",
            "roles": list(roles),
        },
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def test_an_invitation_link_works_once_through_real_smtp(
    mail_app: Flask, runtime: Runtime, admin: Person, mailbox: tuple[Mailbox, int]
) -> None:
    operator = mail_app.test_client()
    assert sign_in(operator, admin).status_code == 302
    page = invite(operator, "jauna", "teacher")
    assert "/account/setup/" not in page, "with SMTP the link goes by e-mail only"
    box, _ = mailbox
    assert len(box.messages) == 1
    body = box.messages[0].get_payload(decode=True)
    assert isinstance(body, bytes)
    match = LINK.search(body.decode())
    assert match
    path = "/account/setup/" + match.group(0).split("/account/setup/")[1]

    newcomer = mail_app.test_client()
    assert newcomer.get(path).status_code == 200
    token = csrf_token_from(newcomer, path)
    chosen = "my own long passphrase"
    done = newcomer.post(
        path, data={"csrf_token": token, "password": chosen, "password_repeat": chosen}
    )
    assert done.status_code == 200
    person = Person("jauna", chosen, None, (), stepping_clock(runtime))
    assert sign_in(mail_app.test_client(), person).status_code == 302

    again = mail_app.test_client()
    assert again.get(path).status_code == 410
    actions = audit_actions(runtime)
    assert {
        "account:created",
        "account:link_issued",
        "account:link_redeemed",
        "account:link_rejected",
    } <= set(actions)


def mailed_link(mailbox: tuple[Mailbox, int], index: int = -1) -> str:
    """The path of the set-up link in a message the test's SMTP server received."""
    body = mailbox[0].messages[index].get_payload(decode=True)
    assert isinstance(body, bytes)
    match = LINK.search(body.decode())
    assert match
    return "/account/setup/" + match.group(0).split("/account/setup/")[1].rstrip(".")


def test_an_invited_director_enrols_totp_through_the_link(
    mail_app: Flask, runtime: Runtime, admin: Person, mailbox: tuple[Mailbox, int]
) -> None:
    app = mail_app
    operator = app.test_client()
    assert sign_in(operator, admin).status_code == 302
    page = invite(operator, "jaunadir", "director")
    assert "/account/setup/" not in page, "a director's link goes to the director alone"
    path = mailed_link(mailbox)
    newcomer = app.test_client()
    form = newcomer.get(path).get_data(as_text=True)
    assert 'src="data:image/svg+xml' in form
    secret_match = re.search(r"<code>([A-Z2-7]{32})</code>", form)
    assert secret_match
    secret = secret_match.group(1)
    token = csrf_token_from(newcomer, path)
    chosen = "director long passphrase"
    wrong = newcomer.post(
        path,
        data={"csrf_token": token, "password": chosen, "password_repeat": chosen, "totp": "000000"},
    )
    assert wrong.status_code == 422
    code = pyotp.TOTP(secret).at(runtime.clock())
    done = newcomer.post(
        path,
        data={"csrf_token": token, "password": chosen, "password_repeat": chosen, "totp": code},
    )
    assert done.status_code == 200
    assert (
        len(
            re.findall(
                r"<li><code>[0-9a-f]{5}-[0-9a-f]{5}</code></li>", done.get_data(as_text=True)
            )
        )
        == 10
    )
    person = Person("jaunadir", chosen, secret, (), stepping_clock(runtime), next_step_offset=1)
    assert sign_in(app.test_client(), person).status_code == 302
    assert "account:totp_enrolled" in audit_actions(runtime)


def test_an_expired_link_is_refused(app: Flask, runtime: Runtime, admin: Person) -> None:
    operator = app.test_client()
    sign_in(operator, admin)
    page = invite(operator, "velais", "teacher")
    match = re.search(r"/account/setup/[^<\s\"]+", page)
    assert match
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(AccountLink).values(expires_at=runtime.clock() - timedelta(minutes=1))
        )
    assert app.test_client().get(match.group(0)).status_code == 410


def test_a_forged_link_is_refused(app: Flask) -> None:
    assert app.test_client().get(f"/account/setup/{uuid.uuid4()}.forged").status_code == 410


# -- personal API tokens -----------------------------------------------------------------------


def create_token_through_the_page(client: FlaskClient, **extra: str) -> str:
    token = csrf_token_from(client, "/account")
    response = client.post(
        "/account/tokens", data={"csrf_token": token, "name": "script", "days": "30", **extra}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    match = re.search(r'id="new-token">(rv_[^<]+)<', response.get_data(as_text=True))
    assert match
    return match.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_bearer_token_works_until_revoked(app: Flask, runtime: Runtime, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    token = create_token_through_the_page(browser)
    api = app.test_client()
    me = api.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200 and me.get_json()["username"] == teacher.username
    with runtime.sessions() as session:
        record = session.scalars(select(ApiToken)).one()
        assert record.token_hmac != token and token not in record.token_hmac
        assert record.last_used_at is not None
    csrf = csrf_token_from(browser, "/account")
    browser.post(f"/account/tokens/{record.id}/revoke", data={"csrf_token": csrf})
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert {"token:created", "token:revoked", "auth:token_rejected"} <= set(audit_actions(runtime))


def test_an_expired_or_forged_token_gets_401(app: Flask, runtime: Runtime, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    token = create_token_through_the_page(browser)
    with runtime.sessions() as session, session.begin():
        session.execute(update(ApiToken).values(expires_at=runtime.clock() - timedelta(seconds=1)))
    api = app.test_client()
    response = api.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert api.get("/api/v1/me", headers=bearer(token[:-2] + "xx")).status_code == 401


def test_a_bearer_request_ignores_the_cookie(app: Flask, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    assert browser.get("/api/v1/me", headers=bearer("rv_not-a-real-token")).status_code == 401


def test_privileged_roles_need_a_fresh_code_for_a_token(app: Flask, director: Person) -> None:
    browser = app.test_client()
    sign_in(browser, director)
    csrf = csrf_token_from(browser, "/account")
    refused = browser.post(
        "/account/tokens", data={"csrf_token": csrf, "name": "x", "days": "7", "totp": "000000"}
    )
    assert refused.status_code == 403
    create_token_through_the_page(browser, totp=director.fresh_code())


def test_an_admin_cannot_mint_a_token_for_the_director(
    app: Flask, runtime: Runtime, admin: Person, director: Person
) -> None:
    browser = app.test_client()
    sign_in(browser, admin)
    with runtime.sessions() as session:
        director_user = accounts.find_user(session, director.username)
        assert director_user is not None
        director_id = director_user.id
    csrf = csrf_token_from(browser, "/account")
    for path in (f"/admin/users/{director_id}/tokens", "/api/v1/tokens"):
        response = browser.post(path, data={"csrf_token": csrf, "username": director.username})
        assert response.status_code in (404, 405)
    token = create_token_through_the_page(
        browser, username=director.username, user_id=str(director_id), totp=admin.fresh_code()
    )
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).get_json()["username"] == (
        admin.username
    )
    with runtime.sessions() as session:
        assert session.scalars(select(ApiToken).where(ApiToken.user_id == director_id)).all() == []


def test_the_cli_token_is_printed_alone_and_audited(
    recvault: Console, runtime: Runtime, teacher: Person, app: Flask
) -> None:
    result = recvault("token", "create", teacher.username, "--ttl", "2d")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert re.fullmatch(r"rv_[A-Za-z0-9_-]{43}", token)
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 200
    with runtime.sessions() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "token:created")
        ).one()
    assert event.details["via"] == "cli"
    listed = recvault("token", "list", teacher.username)
    assert token not in listed.output and "active" in listed.output
    token_id = listed.output.split("\t")[0]
    revoked = recvault("token", "revoke", token_id)
    assert revoked.exit_code == 0
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 401


# -- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("combination", [["admin", "director"], ["admin", "auditor"]])
def test_admin_cannot_be_combined_with_director_or_auditor(
    app: Flask,
    runtime: Runtime,
    admin: Person,
    teacher: Person,
    combination: list[str],
    recvault: Console,
) -> None:
    with pytest.raises(ValidationFailed):
        accounts.parse_roles(combination)
    browser = app.test_client()
    sign_in(browser, admin)
    with runtime.sessions() as session:
        user = accounts.find_user(session, teacher.username)
        assert user is not None
        teacher_id = user.id
    csrf = csrf_token_from(browser, f"/admin/users/{teacher_id}")
    response = browser.post(
        f"/admin/users/{teacher_id}/roles", data={"csrf_token": csrf, "roles": combination}
    )
    assert response.status_code == 422
    with runtime.sessions() as session:
        assert session.get(User, teacher_id).roles == {"teacher"}  # type: ignore[union-attr]
    result = recvault(
        "user",
        "add",
        "dual",
        "--name",
        "Dual Role",
        "--role",
        combination[0],
        "--role",
        combination[1],
    )
    assert result.exit_code != 0 and "administrator role cannot be combined" in result.output


def test_only_admins_reach_the_admin_pages(app: Flask, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    assert browser.get("/admin/users").status_code == 403


def test_cli_user_add_prints_totp_for_privileged_roles(recvault: Console, runtime: Runtime) -> None:
    result = recvault("user", "add", "dpo", "--name", "Māris Liepa", "--role", "auditor")
    assert result.exit_code == 0, result.output
    assert re.search(r"totp secret: [A-Z2-7]{32}", result.output)
    listed = recvault("user", "list")
    assert "dpo\tauditor\tactive" in listed.output
    disabled = recvault("user", "disable", "dpo")
    assert disabled.exit_code == 0
    assert "account:disabled" in audit_actions(runtime)


def test_demo_seeds_every_role_once(recvault: Console) -> None:
    result = recvault("demo", "--json")
    assert result.exit_code == 0, result.output
    seeded = json.loads(result.output)
    assert sorted(role for entry in seeded for role in entry["roles"]) == sorted(
        role.value for role in accounts.Role
    )
    for entry in seeded:
        assert set(entry) == {"username", "password", "roles", "totp_secret"}
        assert (entry["totp_secret"] is not None) == accounts.requires_totp(entry["roles"])
    again = recvault("demo")
    assert again.exit_code != 0 and "already has accounts" in again.output


def limiter_app(settings: Settings, runtime: Runtime, storage_url: str | None) -> Flask:
    return app_with(settings, runtime, ratelimit_storage_url=storage_url)


def hammer(client: FlaskClient, attempts: int, prefix: str, ip: str = "203.0.113.77") -> list[int]:
    token = csrf_token_from(client, "/login")
    return [
        client.post(
            "/login",
            data={"username": f"{prefix}{n}", "password": "x" * 12, "csrf_token": token},
            environ_base={"REMOTE_ADDR": ip},
        ).status_code
        for n in range(attempts)
    ]


def test_sign_in_is_rate_limited_per_address(settings: Settings, runtime: Runtime) -> None:
    client = limiter_app(settings, runtime, None).test_client()
    statuses = hammer(client, 21, "nobody")
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    other = client.post(
        "/login",
        data={"username": "x", "password": "y"},
        environ_base={"REMOTE_ADDR": "198.51.100.5"},
    )
    assert other.status_code != 429


def test_rate_limits_are_shared_through_redis(settings: Settings, runtime: Runtime) -> None:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError:
        missing_backend("Redis on 127.0.0.1:6379 (shared rate-limit storage)")
    url = "redis://127.0.0.1:6379"
    # A fresh documentation address per run, so earlier runs' counters do not interfere.
    address = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    first = limiter_app(settings, runtime, url).test_client()
    second = limiter_app(settings, runtime, url).test_client()
    assert hammer(first, 20, "shared", address) == [401] * 20
    assert hammer(second, 1, "other", address) == [429]


def test_nobody_changes_their_own_roles(app: Flask, runtime: Runtime, admin: Person) -> None:
    """An administrator who adds "teacher" to their own account could be named in orders."""
    browser = app.test_client()
    sign_in(browser, admin)
    own_id = user_id(runtime, admin.username)
    csrf = csrf_token_from(browser, f"/admin/users/{own_id}")
    response = browser.post(
        f"/admin/users/{own_id}/roles", data={"csrf_token": csrf, "roles": ["admin", "teacher"]}
    )
    assert response.status_code == 403
    with runtime.sessions() as session:
        assert session.get(User, own_id).roles == {"admin"}  # type: ignore[union-attr]


def test_a_password_change_revokes_every_api_token(app: Flask, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    token = create_token_through_the_page(browser)
    api = app.test_client()
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 200
    new_password = "a much longer new passphrase"
    changed = browser.post(
        "/account/password",
        data={
            "csrf_token": csrf_token_from(browser, "/account"),
            "current_password": PASSWORD,
            "new_password": new_password,
            "new_password_repeat": new_password,
        },
    )
    assert changed.status_code == 302
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_a_token_cannot_mint_tokens(app: Flask, runtime: Runtime, teacher: Person) -> None:
    browser = app.test_client()
    sign_in(browser, teacher)
    token = create_token_through_the_page(browser)
    minted = app.test_client().post(
        "/account/tokens", data={"name": "renewal", "days": "365"}, headers=bearer(token)
    )
    assert minted.status_code == 403
    with runtime.sessions() as session:
        assert len(session.scalars(select(ApiToken)).all()) == 1


# -- the admin never becomes a privileged person ----------------------------------------------


def link_in(page: str) -> str | None:
    match = re.search(r"/account/setup/[^<\s\"]+", page)
    return match.group(0) if match else None


def login_sessions_of(runtime: Runtime, username: str) -> int:
    owner = user_id(runtime, username)
    with runtime.sessions() as session:
        return len(session.scalars(select(LoginSession).where(LoginSession.user_id == owner)).all())


def test_the_admin_never_sees_a_link_for_a_privileged_account(
    app: Flask, runtime: Runtime, admin: Person, director: Person, teacher: Person
) -> None:
    operator = app.test_client()
    sign_in(operator, admin)
    token = csrf_token_from(operator, "/admin/users")
    invited = operator.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": "jaunadir",
            "full_name": "Jauna Direktore",
            "email": "jaunadir@school.example.lv",
            "roles": ["director"],
        },
    )
    assert invited.status_code == 422 and link_in(invited.get_data(as_text=True)) is None
    with runtime.sessions() as session:
        assert accounts.find_user(session, "jaunadir") is None
    ids = {person.username: user_id(runtime, person.username) for person in (director, teacher)}
    refused = operator.post(
        f"/admin/users/{ids['direktore']}/reset-link", data={"csrf_token": token}
    )
    assert refused.status_code == 409 and link_in(refused.get_data(as_text=True)) is None
    # An unprivileged account's link is still handed to the admin when no e-mail is set up.
    shown = operator.post(
        f"/admin/users/{ids[teacher.username]}/reset-link", data={"csrf_token": token}
    )
    assert shown.status_code == 200 and link_in(shown.get_data(as_text=True)) is not None


def test_the_admin_cannot_reach_a_director_session(
    mail_app: Flask, runtime: Runtime, admin: Person, director: Person, mailbox: tuple[Mailbox, int]
) -> None:
    """Every admin act in sequence: a reset link (intercepted from the mail), the director
    role taken away and a reset again, a token. None opens a director session."""
    operator = mail_app.test_client()
    sign_in(operator, admin)
    token = csrf_token_from(operator, "/admin/users")
    director_id = user_id(runtime, director.username)
    sessions_before = login_sessions_of(runtime, director.username)

    # 1. A reset link, read from the director's mailbox by someone who has it.
    page = operator.post(f"/admin/users/{director_id}/reset-link", data={"csrf_token": token})
    assert page.status_code == 200 and link_in(page.get_data(as_text=True)) is None
    path = mailed_link(mailbox)
    intruder = mail_app.test_client()
    form = intruder.get(path).get_data(as_text=True)
    assert 'src="data:image/svg+xml' not in form, "no new authenticator is offered"
    chosen = "the intruder's long passphrase"
    for guess in ("000000", "12345-67890", ""):
        taken = intruder.post(
            path,
            data={
                "csrf_token": csrf_token_from(intruder, path),
                "password": chosen,
                "password_repeat": chosen,
                "current_code": guess,
                "totp": "000000",
            },
        )
        assert taken.status_code == 422
    assert sign_in(mail_app.test_client(), director).status_code == 302  # the old password
    assert sign_in(mail_app.test_client(), director, password=chosen).status_code == 401

    # 2. The director role taken away, then a reset: the second factor still stands.
    operator.post(
        f"/admin/users/{director_id}/roles", data={"csrf_token": token, "roles": ["staff"]}
    )
    again = operator.post(f"/admin/users/{director_id}/reset-link", data={"csrf_token": token})
    assert link_in(again.get_data(as_text=True)) is None
    form = mail_app.test_client().get(mailed_link(mailbox)).get_data(as_text=True)
    assert 'name="current_code"' in form and 'src="data:image/svg+xml' not in form

    # 3. A token for the director, through the account page's form: never someone else's.
    operator.post("/account/tokens", data={"csrf_token": token, "name": "x", "days": "1"})
    with runtime.sessions() as session:
        owners = set(session.scalars(select(ApiToken.user_id)))
    assert director_id not in owners
    # The only director sessions are the director's own two sign-ins above.
    assert login_sessions_of(runtime, director.username) == sessions_before + 1
    events = audit_actions(runtime)
    assert events.count("account:link_issued") == 2
    assert events.count("account:link_rejected") >= 3


def test_a_reset_with_the_current_code_keeps_the_authenticator(
    mail_app: Flask, runtime: Runtime, admin: Person, director: Person, mailbox: tuple[Mailbox, int]
) -> None:
    operator = mail_app.test_client()
    sign_in(operator, admin)
    operator.post(
        f"/admin/users/{user_id(runtime, director.username)}/reset-link",
        data={"csrf_token": csrf_token_from(operator, "/admin/users")},
    )
    path = mailed_link(mailbox)
    holder = mail_app.test_client()
    chosen = "the director's new passphrase"
    done = holder.post(
        path,
        data={
            "csrf_token": csrf_token_from(holder, path),
            "password": chosen,
            "password_repeat": chosen,
            "current_code": director.fresh_code(),
        },
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    director.password = chosen
    assert sign_in(mail_app.test_client(), director).status_code == 302  # same authenticator


def test_the_auditor_approves_a_directors_second_factor_reset(
    mail_app: Flask,
    runtime: Runtime,
    admin: Person,
    director: Person,
    teacher: Person,
    mailbox: tuple[Mailbox, int],
) -> None:
    auditor = add_person(runtime, "dpo", "auditor", name="Māris Liepa")
    for person, status in ((admin, 403), (teacher, 403), (director, 403)):
        client = mail_app.test_client()
        sign_in(client, person)
        refused = client.post(
            "/account/second-factor-resets",
            data={"csrf_token": csrf_token_from(client, "/account"), "username": "direktore"},
        )
        assert refused.status_code == status, person.username
    assert mailbox[0].messages == []

    approver = mail_app.test_client()
    sign_in(approver, auditor)
    page = approver.post(
        "/account/second-factor-resets",
        data={"csrf_token": csrf_token_from(approver, "/account"), "username": "direktore"},
        follow_redirects=True,
    )
    assert page.status_code == 200 and link_in(page.get_data(as_text=True)) is None
    (message,) = mailbox[0].messages
    assert message["To"] == "direktore@school.example.lv"
    path = mailed_link(mailbox)
    holder = mail_app.test_client()
    form = holder.get(path).get_data(as_text=True)
    secret_match = re.search(r"<code>([A-Z2-7]{32})</code>", form)
    assert secret_match and 'name="password_repeat"' not in form
    new_secret = secret_match.group(1)
    wrong = holder.post(
        path,
        data={
            "csrf_token": csrf_token_from(holder, path),
            "password": "not the password at all",
            "totp": pyotp.TOTP(new_secret).at(runtime.clock()),
        },
    )
    assert wrong.status_code == 422
    done = holder.post(
        path,
        data={
            "csrf_token": csrf_token_from(holder, path),
            "password": PASSWORD,
            "totp": pyotp.TOTP(new_secret).at(runtime.clock()),
        },
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    old = dataclasses.replace(director, next_step_offset=1)
    assert sign_in(mail_app.test_client(), old).status_code == 401
    renewed = dataclasses.replace(director, totp_secret=new_secret, next_step_offset=1)
    assert sign_in(mail_app.test_client(), renewed).status_code == 302
    assert "account:second_factor_reset_approved" in audit_actions(runtime)


def test_the_console_replaces_a_lost_authenticator_and_says_so(
    runtime: Runtime, recvault: Console, director: Person, app: Flask
) -> None:
    signed_in = app.test_client()
    sign_in(signed_in, director)
    result = recvault("user", "reset-second-factor", "direktore")
    assert result.exit_code == 0, result.output
    match = re.search(r"totp secret: ([A-Z2-7]{32})", result.output)
    assert match and "tell them in person" in result.output
    assert not is_signed_in(signed_in)
    renewed = dataclasses.replace(director, totp_secret=match.group(1), next_step_offset=1)
    assert sign_in(app.test_client(), renewed).status_code == 302
    assert "account:second_factor_reset_at_console" in audit_actions(runtime)
    assert recvault("user", "reset-second-factor", "nobody").exit_code != 0
