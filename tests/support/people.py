"""Accounts for tests, created through the operator's service, and browser sign-in helpers.

Loaded as a plugin by the root conftest: its fixtures are the people many modules meet, and a
module that needs someone else under the same name defines its own fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.clock import SteppingClock, stepping_clock
from tests.support.recording_support import keep_year_open
from tests.support.webclient import csrf_token_from
from vault.services import account_admin
from vault.services.runtime import Runtime

PASSWORD = "correct horse battery staple"
TOTP_STEP_SECONDS = 30


@dataclass
class Person:
    username: str
    password: str
    totp_secret: str | None
    recovery_codes: tuple[str, ...]
    # The clock the server checks codes against: the app's own.
    clock: SteppingClock
    # Each sign-in consumes a TOTP time step; tests move forward one step per code.
    next_step_offset: int = 0

    def fresh_code(self) -> str:
        assert self.totp_secret is not None
        # Accepted window: the current step and one either side; walk forward within it.
        offset = self.next_step_offset
        self.next_step_offset += 1
        if offset > 1:
            # Every step up to the window's end is used: move the clock into the next step,
            # whose window ends one step further, and take that step (the one before it,
            # now the current one, was used as the last window's end).
            into_step = self.clock().timestamp() % TOTP_STEP_SECONDS
            self.clock.advance(timedelta(seconds=TOTP_STEP_SECONDS - into_step + 0.5))
            self.next_step_offset = 2
            offset = 1
        at = self.clock().timestamp() + TOTP_STEP_SECONDS * offset
        return pyotp.TOTP(self.totp_secret).at(at)


def add_person(runtime: Runtime, username: str, *roles: str, name: str | None = None) -> Person:
    created = account_admin.add_account(
        runtime,
        username=username,
        full_name=name or username.title(),
        email=f"{username}@school.example.lv",
        roles=roles,
        password=PASSWORD,
        now=runtime.clock(),
    )
    return Person(
        username, PASSWORD, created.totp_secret, created.recovery_codes, stepping_clock(runtime)
    )


@pytest.fixture
def teacher(runtime: Runtime) -> Person:
    """A teacher who can register today's lessons."""
    keep_year_open(runtime)
    return add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")


@pytest.fixture
def director(runtime: Runtime) -> Person:
    return add_person(runtime, "direktore", "director", name="Ilze Ozola")


def sign_in(
    client: FlaskClient,
    person: Person,
    *,
    ip: str = "127.0.0.1",
    password: str | None = None,
    totp: str | None = None,
) -> TestResponse:
    token = csrf_token_from(client, "/login")
    code = totp if totp is not None else (person.fresh_code() if person.totp_secret else "")
    return client.post(
        "/login",
        data={
            "username": person.username,
            "password": person.password if password is None else password,
            "totp": code,
            "csrf_token": token,
        },
        environ_base={"REMOTE_ADDR": ip},
    )


def signed_in(app: Flask, person: Person) -> FlaskClient:
    """A fresh browser of the app, through which ``person`` has signed in."""
    client = app.test_client()
    sign_in(client, person)
    return client
