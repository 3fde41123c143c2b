"""The authorization matrix: every subject, action, order state and recording status.

The expected answers come from SPEC §2 (the roles table) and the recording statuses of
SPEC §4, written down once in ``SPEC_TABLE`` below; they are never read back from the
implementation. Each cell is checked through the HTTP API when the action's route exists,
and otherwise by calling the policy (``access.authorize``, which runs ``access.decide`` and
audits denials). Every denial, either way, must leave an ``access:denied`` audit event.

The test prints the matrix. To regenerate the committed ``docs/access-matrix.md``:

    VAULT_WRITE_ACCESS_MATRIX=1 .venv/bin/pytest tests/test_access_matrix.py
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tests.support.audit_trail import denial_count
from tests.support.people import Person, add_person, sign_in
from tests.support.recording_support import (
    insert_order,
    insert_recording,
    riga_today,
    sample_media,
    store_plaintext,
)
from tests.support.webclient import csrf_token_from
from vault.models import AccessOrder, Recording, Upload, User
from vault.services import access, account_admin
from vault.services.access import TOMBSTONE_STATUSES, Action, Status
from vault.services.actors import Actor
from vault.services.errors import Gone, PermissionDenied
from vault.services.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
MATRIX_DOC = ROOT / "docs" / "access-matrix.md"
WRITE_FLAG = "VAULT_WRITE_ACCESS_MATRIX"
RIGA = ZoneInfo("Europe/Riga")


class Answer(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    GONE = "gone"


# -- the dimensions ---------------------------------------------------------------------------

SUBJECTS: dict[str, tuple[str, ...]] = {
    "owner": ("teacher",),
    "other teacher": ("teacher",),
    "staff": ("staff",),
    "director": ("director",),
    "admin": ("admin",),
    "auditor": ("auditor",),
    "admin+teacher": ("admin", "teacher"),
    "auditor+teacher": ("auditor", "teacher"),
}
# SPEC §2 lets an admin or an auditor also teach. Such an account keeps what its admin or
# auditor role gives; its teacher role adds its own recordings (none here), and an order
# naming it gives it nothing: separation of duties holds for mixed roles too.
ANSWERS_AS = {"admin+teacher": "admin", "auditor+teacher": "auditor"}
USERNAMES = {
    "owner": "owner",
    "other teacher": "teacher2",
    "staff": "staff",
    "director": "director",
    "admin": "admin",
    "auditor": "auditor",
    "admin+teacher": "admin-teacher",
    "auditor+teacher": "auditor-teacher",
}
BYSTANDER = "bystander"  # the teacher an order names instead of the subject


class OrderState(StrEnum):
    NONE = "none"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_YET_VALID = "not yet valid"
    OTHER_RECORDING = "names another recording"
    OTHER_PERSON = "names another person"


STATUSES = tuple(Status)
ACTIONS = tuple(Action)
PURPOSES = ("quality_safety", "methodological")

# -- the expected answers: SPEC §2 and the statuses of SPEC §4, in one table ------------------

# Who may act on a live recording:
#   yes            the subject always may (subject to the status column)
#   order          only through a valid order naming this person and this recording
#   methodological only when the recording's purpose is methodological work
#   no             never
YES, ORDER, METHODOLOGICAL, NO = "yes", "order", "methodological", "no"
LIVE = frozenset(STATUSES) - TOMBSTONE_STATUSES
EVERY_STATUS = frozenset(STATUSES)


@dataclass(frozen=True)
class Rule:
    who: dict[str, str]
    statuses: frozenset[Status]  # statuses in which a permitted subject succeeds
    source: str


SPEC_TABLE: dict[Action, Rule] = {
    Action.VIEW_METADATA: Rule(
        {"owner": YES, "other teacher": ORDER, "staff": ORDER, "director": YES,
         "admin": NO, "auditor": YES},
        EVERY_STATUS,
        "teacher: own; director and auditor: the register; designated persons: what their "
        "order names; tombstones answer with their status (§7)",
    ),
    Action.START_VIEW: Rule(
        {"owner": YES, "other teacher": ORDER, "staff": ORDER, "director": ORDER,
         "admin": NO, "auditor": NO},
        frozenset({Status.AVAILABLE}),
        "teacher streams own; a designated person streams while the order is valid; the "
        "director only when named; auditor and admin never; restricted: no views",
    ),
    Action.STREAM: Rule(
        {"owner": YES, "other teacher": ORDER, "staff": ORDER, "director": ORDER,
         "admin": NO, "auditor": NO},
        frozenset({Status.AVAILABLE}),
        "as starting a view, re-checked on every request",
    ),
    Action.DOWNLOAD: Rule(
        {"owner": YES, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": NO},
        frozenset({Status.AVAILABLE}),
        "teacher downloads own; designated persons may not download",
    ),
    Action.DELETE: Rule(
        {"owner": YES, "other teacher": NO, "staff": NO, "director": METHODOLOGICAL,
         "admin": NO, "auditor": NO},
        LIVE - {Status.RESTRICTED},
        "teacher deletes own early; director deletes methodological recordings; a "
        "restricted recording is kept (art. 18)",
    ),
    Action.LIST_ACCESSES: Rule(
        {"owner": YES, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": YES},
        EVERY_STATUS,
        "teacher sees who accessed own; the auditor; tombstones keep the access summary",
    ),
    Action.RESTRICT: Rule(
        {"owner": NO, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": YES},
        LIVE,
        "auditor restricts (art. 18) on a data subject's request",
    ),
    Action.ERASE: Rule(
        {"owner": NO, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": YES},
        LIVE,
        "auditor erases (art. 17) on a data subject's request",
    ),
    Action.UPLOAD: Rule(
        {"owner": YES, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": NO},
        frozenset({Status.REGISTERED, Status.UPLOADING, Status.FAILED}),
        "teacher uploads own registered recording, and again after a failed upload",
    ),
    Action.TAKE_RESPONSIBILITY: Rule(
        {"owner": NO, "other teacher": NO, "staff": NO, "director": NO,
         "admin": NO, "auditor": NO},
        LIVE,
        "director takes over only a disabled teacher's recording (§3 row 20); every owner "
        "in this matrix is active",
    ),
}  # fmt: skip


def expected(
    subject: str, action: Action, state: OrderState, status: Status, purpose: str
) -> Answer:
    rule = SPEC_TABLE[action]
    who = rule.who[ANSWERS_AS.get(subject, subject)]
    permitted = (
        who == YES
        or (who == ORDER and state is OrderState.ACTIVE)
        or (who == METHODOLOGICAL and purpose == "methodological")
    )
    if not permitted:
        return Answer.DENY
    if status in rule.statuses:
        return Answer.ALLOW
    # Whoever could have acted on the live recording learns that it is gone (410).
    return Answer.GONE if status in TOMBSTONE_STATUSES else Answer.DENY


# -- the world the matrix runs in -------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    purpose: str
    state: OrderState
    status: Status
    subject: str
    action: Action


@dataclass
class Result:
    answer: Answer
    shown: str  # what the matrix prints: the HTTP status, or the policy's answer
    via_http: bool


@dataclass
class World:
    people: dict[str, uuid.UUID] = field(default_factory=dict)
    recordings: dict[tuple[str, OrderState, Status], uuid.UUID] = field(default_factory=dict)


def build_world(runtime: Runtime) -> tuple[World, dict[str, Person]]:
    persons = {
        name: add_person(runtime, USERNAMES[name], *roles) for name, roles in SUBJECTS.items()
    }
    add_person(runtime, BYSTANDER, "teacher")
    world = World()
    with runtime.sessions() as session:
        for name, username in [*USERNAMES.items(), (BYSTANDER, BYSTANDER)]:
            world.people[name] = session.scalars(
                select(User.id).where(User.username == username)
            ).one()
    elsewhere = insert_recording(runtime, "owner", title="Another recording")
    media = sample_media(4096)
    for purpose in PURPOSES:
        states = tuple(OrderState) if purpose == "quality_safety" else (OrderState.NONE,)
        for state in states:
            for status in STATUSES:
                rid = insert_recording(
                    runtime,
                    "owner",
                    title=f"{purpose} {state} {status}",
                    purpose=purpose,
                    status="registered",
                )
                if status is Status.AVAILABLE:
                    store_plaintext(runtime, rid, media, chunk_size=1024)
                world.recordings[(purpose, state, status)] = rid
                with runtime.sessions() as session, session.begin():
                    recording = session.get(Recording, rid)
                    assert recording is not None
                    recording.status = status.value
                    if status in TOMBSTONE_STATUSES:
                        recording.deleted_at = runtime.clock()
                    if status is Status.RESTRICTED:
                        recording.restricted_at = runtime.clock()
                    _orders_for(session, runtime.clock(), world, state, rid, elsewhere)
    return world, persons


def _orders_for(
    session: Session,
    now: datetime,
    world: World,
    state: OrderState,
    rid: uuid.UUID,
    elsewhere: uuid.UUID,
) -> None:
    director = world.people["director"]
    named = [world.people[name] for name in SUBJECTS]
    day = timedelta(days=1)
    today = now.astimezone(RIGA).date()
    if state is OrderState.ACTIVE:
        insert_order(session, now, director, named, rid, today - day, today + 10 * day)
    elif state is OrderState.EXPIRED:
        insert_order(session, now, director, named, rid, today - 20 * day, today - day)
    elif state is OrderState.REVOKED:
        insert_order(
            session, now, director, named, rid, today - day, today + 10 * day, revoked=True
        )
    elif state is OrderState.NOT_YET_VALID:
        insert_order(session, now, director, named, rid, today + day, today + 10 * day)
    elif state is OrderState.OTHER_RECORDING:
        insert_order(session, now, director, named, elsewhere, today - day, today + 10 * day)
    elif state is OrderState.OTHER_PERSON:
        bystander = [world.people[BYSTANDER]]
        insert_order(session, now, director, bystander, rid, today - day, today + 10 * day)


# -- probes: HTTP where the route exists, the policy function otherwise -----------------------

RECORDING = "<uuid:recording_id>"


@dataclass(frozen=True)
class Probe:
    method: str
    rule: str
    success: frozenset[int]
    body: dict[str, Any] | None = None
    changes_state: bool = False


PROBES: dict[Action, Probe] = {
    Action.VIEW_METADATA: Probe("GET", f"/api/v1/recordings/{RECORDING}", frozenset({200})),
    Action.DOWNLOAD: Probe("GET", f"/api/v1/recordings/{RECORDING}/download", frozenset({200})),
    Action.LIST_ACCESSES: Probe(
        "GET", f"/api/v1/recordings/{RECORDING}/accesses", frozenset({200})
    ),
    Action.START_VIEW: Probe("POST", f"/api/v1/recordings/{RECORDING}/views", frozenset({201})),
    Action.DELETE: Probe(
        "DELETE", f"/api/v1/recordings/{RECORDING}", frozenset({204}), changes_state=True
    ),
    Action.RESTRICT: Probe(
        "POST",
        f"/api/v1/recordings/{RECORDING}/restrict",
        frozenset({200, 201, 204}),
        {"reason": "Datu subjekta pieprasījums (art. 18)"},
        changes_state=True,
    ),
    Action.ERASE: Probe(
        "POST",
        f"/api/v1/recordings/{RECORDING}/erase",
        frozenset({200, 201, 204}),
        {"reason": "Datu subjekta pieprasījums (art. 17)"},
        changes_state=True,
    ),
}
# The stream is probed through a view: its URL comes from starting one, bound to that view and
# the viewer's session (see ``probe_stream``).
STREAM_RULE = "/api/v1/views/<uuid:view_id>/stream"
STREAM_SUCCESS = frozenset({200, 206})
# Subjects who can never open a view, so no stream URL of their own exists to probe: their
# stream cells are answered by the policy function.
NEVER_VIEWERS = frozenset({"admin", "auditor", *ANSWERS_AS})
# Not probed over HTTP:
# - upload: tus creation mixes the policy with the upload's own state (SPEC §7: 409 for an
#   existing or finished upload), so its HTTP answers are checked in tests/test_uploads.py;
# - take_responsibility: a director's act on a disabled owner's recording.
POLICY_ONLY = frozenset({Action.UPLOAD, Action.TAKE_RESPONSIBILITY})


def route_exists(app: Flask, probe: Probe) -> bool:
    return any(
        rule.rule == probe.rule and probe.method in (rule.methods or set())
        for rule in app.url_map.iter_rules()
    )


@dataclass
class Browser:
    client: FlaskClient
    csrf: str


def browsers(app: Flask, persons: dict[str, Person]) -> dict[str, Browser]:
    signed_in: dict[str, Browser] = {}
    for name, person in persons.items():
        client = app.test_client()
        assert sign_in(client, person).status_code == 302, name
        signed_in[name] = Browser(client, csrf_token_from(client, "/account"))
    return signed_in


def http_answer(status: int, probe: Probe) -> Answer | None:
    if status in probe.success:
        return Answer.ALLOW
    return {403: Answer.DENY, 410: Answer.GONE}.get(status)


def probe_http(
    browser: Browser, probe: Probe, recording_id: uuid.UUID
) -> tuple[Answer | None, int]:
    url = probe.rule.replace(RECORDING, str(recording_id))
    response = browser.client.open(
        url, method=probe.method, json=probe.body, headers={"X-CSRF-Token": browser.csrf}
    )
    status = response.status_code
    response.close()
    return http_answer(status, probe), status


def probe_policy(
    runtime: Runtime, subject: Actor, action: Action, recording_id: uuid.UUID
) -> Answer:
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        try:
            access.authorize(session, subject, action, recording, runtime.clock(), RIGA)
        except Gone:
            return Answer.GONE
        except PermissionDenied:
            return Answer.DENY
        return Answer.ALLOW


def stream_probe_possible(app: Flask) -> bool:
    start = PROBES[Action.START_VIEW]
    return route_exists(app, start) and any(
        rule.rule == STREAM_RULE for rule in app.url_map.iter_rules()
    )


def probe_stream(
    runtime: Runtime,
    browser: Browser,
    world: World,
    name: str,
    state: OrderState,
    recording_id: uuid.UUID,
) -> tuple[Answer | None, str]:
    """Open a view while it is allowed, put the cell's state back, then fetch the stream.

    Opening needs an available recording, and for anyone but the owner a valid order. When
    the cell itself provides neither, the recording is made available and a setup order
    naming only this subject is written for the moment of opening; afterwards the status
    returns and the setup order is revoked, so the stream request meets exactly the cell.
    """
    subject_id = world.people[name]
    setup_order: uuid.UUID | None = None
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        assert recording is not None
        status = recording.status
        recording.status = Status.AVAILABLE.value
        if name != "owner" and state is not OrderState.ACTIVE:
            now = runtime.clock()
            today = now.astimezone(RIGA).date()
            start, end = today - timedelta(days=1), today + timedelta(days=10)
            setup_order = insert_order(
                session, now, world.people["director"], [subject_id], recording_id, start, end
            )
    opened = browser.client.post(
        f"/api/v1/recordings/{recording_id}/views", headers={"X-CSRF-Token": browser.csrf}
    )
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        assert recording is not None
        recording.status = status
        if setup_order is not None:
            order = session.get(AccessOrder, setup_order)
            assert order is not None
            order.revoked_at = runtime.clock()
            order.revoked_by = world.people["director"]
            order.revocation_reason = "Matrix setup"
    if opened.status_code != 201:
        return None, f"no view ({opened.status_code})"
    response = browser.client.get(opened.get_json()["stream_url"])
    code = response.status_code
    response.close()
    if code in STREAM_SUCCESS:
        return Answer.ALLOW, str(code)
    return {403: Answer.DENY, 410: Answer.GONE}.get(code), str(code)


def snapshot(runtime: Runtime, recording_id: uuid.UUID) -> dict[str, Any]:
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        return {c.key: getattr(recording, c.key) for c in Recording.__table__.columns}


def restore(runtime: Runtime, recording_id: uuid.UUID, saved: dict[str, Any]) -> None:
    """Put a recording back after a probe that succeeded in changing it (a deletion, a
    restriction), so the next subject meets the same cell."""
    with runtime.sessions() as session, session.begin():
        session.execute(delete(Upload).where(Upload.recording_id == recording_id))
        recording = session.get(Recording, recording_id)
        assert recording is not None
        for key, value in saved.items():
            setattr(recording, key, value)


@dataclass
class Matrix:
    results: dict[Cell, Result] = field(default_factory=dict)
    http_actions: dict[Action, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, cell: Cell, result: Result, denial_logged: bool) -> None:
        self.results[cell] = result
        want = expected(cell.subject, cell.action, cell.state, cell.status, cell.purpose)
        where = (
            f"{cell.subject} / {cell.action} / order {cell.state} / {cell.status} / {cell.purpose}"
        )
        if result.answer is not want:
            self.problems.append(f"{where}: expected {want}, got {result.shown}")
        elif want is not Answer.ALLOW and not denial_logged:
            self.problems.append(f"{where}: the denial left no access:denied audit event")


def cells(world: World) -> Iterator[tuple[str, OrderState, Status, uuid.UUID]]:
    for (purpose, state, status), rid in world.recordings.items():
        yield purpose, state, status, rid


def run_matrix(app: Flask, runtime: Runtime) -> Matrix:
    world, persons = build_world(runtime)
    signed_in = browsers(app, persons)
    matrix = Matrix()
    over_http = {
        action: probe
        for action, probe in PROBES.items()
        if action not in POLICY_ONLY and route_exists(app, probe)
    }
    for action, known in over_http.items():
        matrix.http_actions[action] = f"{known.method} {known.rule}"
    streams = stream_probe_possible(app)
    if streams:
        matrix.http_actions[Action.STREAM] = (
            f"GET {STREAM_RULE} (the stream_url of a view opened with POST "
            f"{PROBES[Action.START_VIEW].rule}); admins and auditors, also those who teach, "
            "can never open a view, so their cells come from the policy function"
        )
    subjects = {name: Actor(world.people[name], frozenset(SUBJECTS[name])) for name in SUBJECTS}
    # Acts that change the recording run last, so the reading probes see it untouched.
    ordered = sorted(ACTIONS, key=lambda a: over_http[a].changes_state if a in over_http else False)
    for purpose, state, status, rid in cells(world):
        for action in ordered:
            probe = over_http.get(action)
            for name, subject in subjects.items():
                cell = Cell(purpose, state, status, name, action)
                where = f"{name} / {action} / {state} / {status} / {purpose}"
                before = denial_count(runtime, rid, subject.user_id)
                answer: Answer | None
                if action is Action.STREAM and streams and name not in NEVER_VIEWERS:
                    answer, shown = probe_stream(runtime, signed_in[name], world, name, state, rid)
                    result = Result(answer or Answer.DENY, shown, via_http=True)
                elif probe is None:
                    answer = probe_policy(runtime, subject, action, rid)
                    result = Result(answer, answer.value, via_http=False)
                else:
                    saved = snapshot(runtime, rid) if probe.changes_state else None
                    answer, code = probe_http(signed_in[name], probe, rid)
                    result = Result(answer or Answer.DENY, str(code), via_http=True)
                    if saved is not None and answer is Answer.ALLOW:
                        restore(runtime, rid, saved)
                if answer is None:
                    matrix.problems.append(f"{where}: unexpected answer {result.shown}")
                logged = denial_count(runtime, rid, subject.user_id) > before
                matrix.check(cell, result, logged)
    return matrix


# -- rendering --------------------------------------------------------------------------------

SYMBOL = {Answer.ALLOW: "allow", Answer.DENY: "deny", Answer.GONE: "gone"}


def render(matrix: Matrix) -> str:
    http_cells = sum(1 for r in matrix.results.values() if r.via_http)
    policy_cells = len(matrix.results) - http_cells
    lines = [
        "# Authorization matrix",
        "",
        "Generated by `tests/test_access_matrix.py`; do not edit by hand. Regenerate with:",
        "",
        "    VAULT_WRITE_ACCESS_MATRIX=1 .venv/bin/pytest tests/test_access_matrix.py",
        "",
        "Every cell is the answer the application gave, and the test fails unless it equals the",
        "answer derived from SPEC §2 (the roles table) and the recording statuses of SPEC §4",
        "(`SPEC_TABLE` in the test). A number is the HTTP status of the API call; a word is the",
        "answer of the policy function (`access.authorize` → `access.decide`), used where the",
        "action has no HTTP route yet or is not probed over HTTP (see the test). Every denial,",
        "403 or 410, `deny` or `gone`, left an `access:denied` audit event.",
        "",
        f"Cells: {len(matrix.results)}; over HTTP: {http_cells}; by the policy function: "
        f"{policy_cells}.",
        "",
        "Subjects: the recording's owner (a teacher), another teacher, a staff member, the",
        "director, the admin and the auditor, each holding only that role, and two accounts",
        "that hold two roles: an admin who also teaches and an auditor who also teaches. An",
        "order naming a mixed-role account gives it nothing. Order states, as seen by the",
        "subject: none; an active order naming them and the recording; the same order",
        "expired, revoked, or not yet valid; an active order naming them and another",
        "recording; an active order naming the recording and another person. Orders naming",
        "an admin or an auditor are written straight into the database (the order service",
        "refuses them) to show that the policy grants them nothing either.",
        "",
    ]
    for purpose in PURPOSES:
        states = tuple(OrderState) if purpose == "quality_safety" else (OrderState.NONE,)
        heading = (
            "Quality and safety recordings (the teacher's own initiative)"
            if purpose == "quality_safety"
            else "Methodological recordings (the school's request), without orders"
        )
        lines += [f"## {heading}", ""]
        for action in ACTIONS:
            how = matrix.http_actions.get(action)
            checked = f"over HTTP: `{how}`" if how else "by the policy function"
            lines += [
                f"### {action.value}",
                "",
                f"Checked {checked}. SPEC: {SPEC_TABLE[action].source}.",
                "",
                "| subject | order | " + " | ".join(s.value for s in STATUSES) + " |",
                "|---|---|" + "---|" * len(STATUSES),
            ]
            for name in SUBJECTS:
                for state in states:
                    row = [
                        matrix.results[Cell(purpose, state, status, name, action)]
                        for status in STATUSES
                    ]
                    shown = [f"**{r.shown}**" if r.answer is Answer.ALLOW else r.shown for r in row]
                    lines.append(f"| {name} | {state.value} | " + " | ".join(shown) + " |")
            lines.append("")
    return "\n".join(lines)


# About 3,840 requests over HTTP: run in the PostgreSQL pass with the other slow suites.
@pytest.mark.slow
def test_the_authorization_matrix_gives_the_spec_answer_in_every_cell(
    app: Flask, runtime: Runtime
) -> None:
    assert set(SPEC_TABLE) == set(Action), "every action of the policy needs a row in SPEC_TABLE"
    matrix = run_matrix(app, runtime)
    document = render(matrix)
    print(document)  # the matrix is this test's report
    if os.environ.get(WRITE_FLAG):
        MATRIX_DOC.write_text(document, encoding="utf-8")
    assert matrix.problems == []
    assert MATRIX_DOC.read_text(encoding="utf-8") == document, (
        f"{MATRIX_DOC.name} is out of date: regenerate it ({WRITE_FLAG}=1, see the docstring)"
    )


def test_non_owners_start_a_view_only_from_a_browser_session(app: Flask, runtime: Runtime) -> None:
    """SPEC §4.5: a leaked API token alone must not pull a recording out for anyone but its
    owner; a cookie session also needs the CSRF token."""
    start = PROBES[Action.START_VIEW]
    assert route_exists(app, start), "the start-a-view route is missing"
    persons = {
        name: add_person(runtime, name, role)
        for name, role in (("owner", "teacher"), ("staff", "staff"), ("director", "director"))
    }
    rid = insert_recording(runtime, "owner", status="registered")
    store_plaintext(runtime, rid, sample_media(4096), chunk_size=1024)
    with runtime.sessions() as session, session.begin():
        rows = session.execute(select(User.username, User.id)).all()
        ids: dict[str, uuid.UUID] = {row[0]: row[1] for row in rows}
        today = riga_today(runtime)
        insert_order(session, runtime.clock(), ids["director"], [ids["staff"]], rid, today, today)
    url = start.rule.replace(RECORDING, str(rid))
    api = app.test_client()

    def token(username: str) -> dict[str, str]:
        issued = account_admin.issue_token(runtime, username, "script", "1d", runtime.clock())
        return {"Authorization": f"Bearer {issued}"}

    assert api.post(url, headers=token("owner")).status_code == 201
    before = denial_count(runtime, rid, ids["staff"])
    assert api.post(url, headers=token("staff")).status_code == 403
    assert denial_count(runtime, rid, ids["staff"]) == before + 1
    browser = browsers(app, {"staff": persons["staff"]})["staff"]
    assert browser.client.post(url).status_code == 400  # no CSRF token
    assert browser.client.post(url, headers={"X-CSRF-Token": browser.csrf}).status_code == 201
