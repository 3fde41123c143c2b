"""One policy: every route that takes a recording id consults ``access.decide``.

The walk covers whatever routes the app has when the test runs, so a route added later is
checked the day it appears. A spy replaces ``decide`` everywhere it is reachable (the
module attribute ``authorize`` calls, and any module that imported the function itself); it
records the recording it was asked about and refuses. Each route is then called as the
recording's owner, whom the real policy would admit: a route that answers anything but a
refusal, or never asked the spy about that recording, decided on its own.
"""

from __future__ import annotations

import base64
import inspect
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule
from werkzeug.routing.converters import UUIDConverter

from tests.support.audit_trail import denial_count
from tests.support.people import add_person, sign_in
from tests.support.recording_support import insert_recording
from tests.support.webclient import csrf_token_from
from vault.services import access
from vault.services.access import Action, Decision
from vault.services.runtime import Runtime

RECORDING_ARGUMENT = "recording_id"
# Routes that carry a recording id outside the URL, and how to send it.
UPLOAD_CREATION = "/api/v1/uploads"
# The policy's own signature, read before a spy replaces the function.
DECIDE = inspect.signature(access.decide)


@dataclass
class Spy:
    """Stands in for ``access.decide``: remembers each question and refuses."""

    asked: list[tuple[uuid.UUID, Action]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> Decision:
        # Bound to the real signature: the spy keeps in step with it, whether a caller
        # passes the arguments by position or by name.
        question = DECIDE.bind(*args, **kwargs).arguments
        self.asked.append((question["recording"].id, question["action"]))
        return Decision(False, "refused_by_test_spy")

    def saw(self, recording_id: uuid.UUID) -> bool:
        return any(asked == recording_id for asked, _ in self.asked)


def install_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    original = access.decide
    for name, module in list(sys.modules.items()):
        if name.startswith("vault") and getattr(module, "decide", None) is original:
            monkeypatch.setattr(module, "decide", spy)
    assert access.decide is spy
    return spy


def rules_taking_a_recording_id(app: Flask) -> list[Rule]:
    return [rule for rule in app.url_map.iter_rules() if RECORDING_ARGUMENT in rule.arguments]


def calls(app: Flask) -> Iterator[tuple[Rule, str]]:
    for rule in rules_taking_a_recording_id(app):
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            if method == "HEAD" and "GET" in (rule.methods or set()):
                continue  # Flask answers HEAD with the GET view
            yield rule, method


def url_for_rule(rule: Rule, recording_id: uuid.UUID) -> str:
    values: dict[str, Any] = {RECORDING_ARGUMENT: recording_id}
    for argument in rule.arguments - {RECORDING_ARGUMENT}:
        converter = type(rule._converters[argument]).__name__
        values[argument] = uuid.uuid4() if "UUID" in converter else "1"
    built = rule.build(values, append_unknown=False)
    assert built is not None
    return built[1]


@pytest.fixture
def owner_browser(app: Flask, runtime: Runtime) -> tuple[FlaskClient, str]:
    owner = add_person(runtime, "owner", "teacher")
    client = app.test_client()
    assert sign_in(client, owner).status_code == 302
    return client, csrf_token_from(client, "/account")


def test_recording_routes_name_the_recording_argument_recording_id(app: Flask) -> None:
    """A route cannot slip out of the walk below by naming its argument differently."""
    for rule in app.url_map.iter_rules():
        if re.search(r"/recordings/<", rule.rule):
            assert f"<uuid:{RECORDING_ARGUMENT}>" in rule.rule, rule.rule
    for rule in rules_taking_a_recording_id(app):
        assert isinstance(rule._converters[RECORDING_ARGUMENT], UUIDConverter), rule.rule


def test_every_route_taking_a_recording_id_goes_through_the_policy(
    app: Flask,
    runtime: Runtime,
    owner_browser: tuple[FlaskClient, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, csrf = owner_browser
    checked = []
    wrong: list[str] = []
    for status in ("available", "registered"):
        spy = install_spy(monkeypatch)
        for rule, method in calls(app):
            recording_id = insert_recording(runtime, "owner", status=status)
            before = denial_count(runtime, recording_id)
            url = url_for_rule(rule, recording_id)
            response = client.open(
                url,
                method=method,
                json={} if method not in ("GET", "HEAD") else None,
                headers={"X-CSRF-Token": csrf},
            )
            where = f"{method} {rule.rule} ({rule.endpoint}, {status})"
            if response.status_code not in (403, 410):
                wrong.append(f"{where}: answered {response.status_code} although decide refused")
            if not spy.saw(recording_id):
                wrong.append(f"{where}: never asked the policy about the recording")
            if denial_count(runtime, recording_id) <= before:
                wrong.append(f"{where}: the refusal left no access:denied audit event")
            checked.append(where)
    print("\n".join(["routes checked against the policy:", *checked]))
    assert checked, "no route takes a recording id"
    if wrong:
        pytest.fail("\n".join(wrong), pytrace=False)


def test_tus_creation_names_its_recording_in_metadata_and_goes_through_the_policy(
    app: Flask,
    runtime: Runtime,
    owner_browser: tuple[FlaskClient, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one route that takes a recording id in a header rather than the URL."""
    if not any(rule.rule == UPLOAD_CREATION for rule in app.url_map.iter_rules()):
        pytest.fail("the tus creation endpoint is gone; update this test")
    client, csrf = owner_browser
    spy = install_spy(monkeypatch)
    recording_id = insert_recording(runtime, "owner", status="registered")
    encoded = base64.b64encode(str(recording_id).encode()).decode()
    response = client.post(
        UPLOAD_CREATION,
        headers={
            "X-CSRF-Token": csrf,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "4096",
            "Upload-Metadata": f"recording_id {encoded}",
        },
    )
    assert response.status_code == 403
    assert spy.saw(recording_id)
    assert denial_count(runtime, recording_id) == 1
