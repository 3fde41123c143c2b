"""Helpers for the streaming tests: a school with an available recording, an order naming a
designated person, signed-in browsers that start views, and audit look-ups."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bench import seeding
from tests.support.people import Person, add_person, sign_in
from tests.support.recording_support import register, sample_media, store_plaintext
from tests.support.webclient import csrf_token_from
from vault.models import AuditEvent, User
from vault.services import account_admin, accounts, orders
from vault.services.actors import Actor
from vault.services.runtime import Runtime


@dataclass
class School:
    teacher: Person
    viewer: Person
    other: Person
    director: Person
    auditor: Person
    recording_id: uuid.UUID
    order_id: uuid.UUID
    order_number: str
    plaintext: bytes


def issue_order(
    runtime: Runtime,
    grantees: list[str],
    recording_ids: list[uuid.UUID],
    number: str,
    *,
    director: str = "direktore",
    days: int = 14,
) -> uuid.UUID:
    """An order issued through the orders service, as the director's page would."""
    purpose = "Stundas vērošana metodiskajā komisijā"
    return seeding.issue_order(runtime, director, grantees, recording_ids, number, purpose, days)


def revoke_order(runtime: Runtime, order_id: uuid.UUID, director: str = "direktore") -> None:
    with runtime.sessions() as session, session.begin():
        revoker = accounts.find_user(session, director)
        assert revoker is not None
        orders.revoke(
            session,
            Actor(user_id=revoker.id),
            revoker,
            order_id,
            "Metodiskais darbs pabeigts",
            runtime.clock(),
        )


def make_school(runtime: Runtime, size: int = 200, chunk_size: int = 16) -> School:
    teacher = add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    viewer = add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    other = add_person(runtime, "kolegis", "teacher", name="Edgars Vītols")
    director = add_person(runtime, "direktore", "director", name="Ilze Ozola")
    auditor = add_person(runtime, "dpo", "auditor", name="Māris Liepa")
    recording_id = register(runtime, "skolotaja")
    plaintext = sample_media(size)
    store_plaintext(runtime, recording_id, plaintext, chunk_size=chunk_size)
    number = "7-2/15"
    order_id = issue_order(runtime, ["metodikis"], [recording_id], number)
    return School(
        teacher, viewer, other, director, auditor, recording_id, order_id, number, plaintext
    )


@dataclass
class Browser:
    """A signed-in browser: its cookie session plus the CSRF header the page's script sends."""

    client: FlaskClient
    csrf: dict[str, str]

    def get(self, path: str) -> TestResponse:
        return self.client.get(path)

    def post_json(self, path: str, body: object = None) -> TestResponse:
        return self.client.post(path, json=body, headers=self.csrf)

    def delete(self, path: str) -> TestResponse:
        return self.client.delete(path, headers=self.csrf)

    def start_view(self, recording_id: uuid.UUID) -> TestResponse:
        return self.post_json(f"/api/v1/recordings/{recording_id}/views")

    def stream_url(self, recording_id: uuid.UUID) -> str:
        response = self.start_view(recording_id)
        assert response.status_code == 201, response.get_data(as_text=True)
        url: str = response.get_json()["stream_url"]
        return url

    def start_watching(
        self, recording_id: uuid.UUID, first_bytes: int
    ) -> tuple[dict[str, Any], TestResponse]:
        """Start a view and fetch its first ``first_bytes`` bytes, as the player does: the
        view's answer (its URLs) and the response to that first fetch."""
        view: dict[str, Any] = self.start_view(recording_id).get_json()
        headers = {"Range": f"bytes=0-{first_bytes - 1}"}
        return view, self.client.get(view["stream_url"], headers=headers)

    def sign_out(self) -> None:
        response = self.client.post("/logout", data={"csrf_token": self.csrf["X-CSRF-Token"]})
        assert response.status_code == 302


def browser(app: Flask, person: Person) -> Browser:
    client = app.test_client()
    assert sign_in(client, person).status_code == 302
    return Browser(client, {"X-CSRF-Token": csrf_token_from(client, "/account")})


def bearer(runtime: Runtime, username: str) -> dict[str, str]:
    token = account_admin.issue_token(runtime, username, "script", "30d", runtime.clock())
    return {"Authorization": f"Bearer {token}"}


def denials(runtime: Runtime, reason: str | None = None) -> list[AuditEvent]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "access:denied").order_by(AuditEvent.id)
        ).all()
    return [row for row in rows if reason is None or row.details.get("reason") == reason]


def events(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def user_id(runtime: Runtime, username: str) -> uuid.UUID:
    with runtime.sessions() as session:
        found: uuid.UUID = session.scalars(select(User.id).where(User.username == username)).one()
        return found
