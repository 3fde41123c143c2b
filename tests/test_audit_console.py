"""The auditor's console at /audit: searching the log by period, person, recording, action and
outcome, walking its pages, exporting what the filter shows, the checkpoint panel, and who
else is refused."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from werkzeug.test import TestResponse

from tests.support.audit_trail import append_events, record
from tests.support.clock import RIGA
from tests.support.people import add_person, sign_in, signed_in
from tests.support.streaming_support import School, browser, denials, make_school, user_id
from vault.models import AuditEvent
from vault.services import audit_chain, audit_checkpoints, audit_search
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.audit_export import AuditFilter
from vault.services.errors import KeysUnavailable
from vault.services.runtime import Runtime

ADDRESS = "198.51.100.77"
USER_AGENT = "Mozilla/5.0 (X11; Linux) ConsoleProbe/2.0"
ROW = re.compile(r"<tr>\s*<td>(\d+)</td>(.*?)</tr>", re.DOTALL)
HREF = re.compile(r'<a[^>]*href="([^"]+)"[^>]*>([^<]*)</a>')


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime)


@pytest.fixture
def auditor_client(app: Flask, school: School) -> FlaskClient:
    return signed_in(app, school.auditor)


def console(client: FlaskClient, **criteria: str | int) -> TestResponse:
    return client.get("/audit", query_string=criteria)


def rows_of(response: TestResponse) -> dict[int, str]:
    """Each event row of the page by its number, in the page's order."""
    return {int(seq): cells for seq, cells in ROW.findall(response.get_data(as_text=True))}


def shown(response: TestResponse) -> list[int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(rows_of(response))


def logged(runtime: Runtime, wanted: Callable[[AuditEvent], bool]) -> list[int]:
    """The numbers of the events that ``wanted`` picks, newest first, read from the log."""
    with runtime.sessions() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()))
        return [audit_chain.number_of(row) for row in rows if wanted(row)]


def actions_of(runtime: Runtime, seqs: list[int]) -> set[str]:
    with runtime.sessions() as session:
        return set(session.scalars(select(AuditEvent.action).where(AuditEvent.seq.in_(seqs))))


def link_named(html: str, text: str) -> str:
    found = [unescape(href) for href, label in HREF.findall(html) if label.strip() == text]
    assert len(found) == 1, (text, found)
    return found[0]


def watch_and_be_refused(app: Flask, school: School) -> uuid.UUID:
    """The designated person opens a view and ends it; a colleague without an order is
    refused. The view's id."""
    viewer = browser(app, school.viewer)
    started = viewer.start_view(school.recording_id)
    assert started.status_code == 201
    view_id = uuid.UUID(started.get_json()["view_id"])
    assert viewer.post_json(f"/api/v1/views/{view_id}/end", {}).status_code == 204
    assert browser(app, school.other).start_view(school.recording_id).status_code == 403
    return view_id


# -- searching ------------------------------------------------------------------------------------


def test_the_auditor_sees_exactly_the_events_each_filter_picks(
    app: Flask, runtime: Runtime, school: School, auditor_client: FlaskClient
) -> None:
    watch_and_be_refused(app, school)
    viewer_id = user_id(runtime, school.viewer.username)
    recording = school.recording_id
    assert shown(console(auditor_client)) == logged(runtime, lambda e: True)
    by_recording = shown(console(auditor_client, recording=str(recording)))
    assert by_recording == logged(runtime, lambda e: e.recording_id == recording)
    assert {"recording:registered", "view:started", "view:ended", "access:denied"} <= (
        actions_of(runtime, by_recording)
    )
    assert shown(console(auditor_client, actor=school.viewer.username)) == logged(
        runtime, lambda e: e.actor_id == viewer_id
    )
    assert shown(console(auditor_client, actor=str(viewer_id), action="view:started")) == logged(
        runtime, lambda e: e.actor_id == viewer_id and e.action == "view:started"
    )
    denied = shown(console(auditor_client, outcome="denied"))
    assert denied == logged(runtime, lambda e: e.outcome == "denied") and denied
    ended = shown(console(auditor_client, action="view:ended", recording=str(recording)))
    assert len(ended) == 1

    with runtime.sessions() as session:
        moment = session.scalars(
            select(AuditEvent.occurred_at).where(AuditEvent.action == "view:started")
        ).one()
    since = shown(console(auditor_client, since=moment.isoformat()))
    assert since == logged(runtime, lambda e: e.occurred_at >= moment)
    until = shown(console(auditor_client, until=moment.isoformat()))
    assert until == logged(runtime, lambda e: e.occurred_at < moment)
    day = moment.astimezone(RIGA).date()
    whole_day = shown(console(auditor_client, since=day.isoformat(), until=day.isoformat()))
    assert whole_day == logged(runtime, lambda e: e.occurred_at.astimezone(RIGA).date() == day)
    next_day = (day + timedelta(days=1)).isoformat()
    assert shown(console(auditor_client, since=next_day)) == []
    assert "Neviens notikums neatbilst." in console(auditor_client, since=next_day).text


def test_rows_name_the_person_recording_order_and_a_fast_fetch(
    app: Flask, runtime: Runtime, school: School, auditor_client: FlaskClient
) -> None:
    view_id = watch_and_be_refused(app, school)
    fast = record(
        runtime,
        AuditAction.VIEW_ENDED,
        actor_id=user_id(runtime, school.viewer.username),
        recording_id=school.recording_id,
        object_id=str(uuid.uuid4()),
        details={"order_id": str(school.order_id), "fetched_fast": True, "reason": "closed"},
    )
    auditor_client.set_cookie("vault_lang", "en")
    page = console(auditor_client, recording=str(school.recording_id))
    rows = rows_of(page)
    started = next(seq for seq, cells in rows.items() if "view:started" in cells)
    ended = next(seq for seq, cells in rows.items() if "view:ended" in cells and seq != fast)
    for seq in (started, ended, fast):
        cells = rows[seq]
        assert f'href="/recordings/{school.recording_id}"' in cells
        assert f'href="/recordings/{school.recording_id}/accesses"' in cells
        assert "Fotosintēze" in cells and ">metodikis</a>" in cells
        # view:started names the order and its number; view:ended the order's id only.
        assert f'href="/orders/{school.order_id}"' in cells
        assert f"No. {school.order_number}" in cells
    assert "Viewing started" in rows[started] and str(view_id) in rows[started]
    assert "Fetched much faster than it plays" in rows[fast]
    assert "Fetched much faster than it plays" not in rows[ended]
    refused = next(seq for seq, cells in rows.items() if "access:denied" in cells)
    assert '<span class="audit-outcome-denied">denied</span>' in rows[refused]
    assert ">kolegis</a>" in rows[refused]
    assert "Access denied" in rows[refused]


def test_removed_accounts_and_recordings_appear_by_id(
    runtime: Runtime, school: School, auditor_client: FlaskClient
) -> None:
    gone_person, gone_recording, gone_order = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seq = record(
        runtime,
        AuditAction.VIEW_STARTED,
        actor_id=gone_person,
        recording_id=gone_recording,
        details={"order_id": str(gone_order), "order_number": "9/99"},
    )
    by_console = record(runtime, AuditAction.CALENDAR_LAST_DAY_SET, object_id="2026-2027")
    cells = rows_of(console(auditor_client))[seq]
    assert f"<code>{gone_person}</code>" in cells and f"<code>{gone_recording}</code>" in cells
    assert "/accesses" not in cells and "/orders/" not in cells
    assert "Nr. 9/99" in cells
    assert "konsole vai sistēma" in rows_of(console(auditor_client))[by_console]


def test_the_query_costs_the_same_for_one_event_as_for_a_full_page(runtime: Runtime) -> None:
    """Names, titles and orders are looked up once per page, never once per event."""
    for _ in range(audit_search.PAGE_SIZE + 5):
        record(
            runtime,
            AuditAction.VIEW_STARTED,
            actor_id=uuid.uuid4(),
            recording_id=uuid.uuid4(),
            details={"order_id": str(uuid.uuid4())},
        )
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    def statements_for(page_size: int) -> int:
        statements.clear()
        with runtime.sessions() as session:
            page = audit_search.search(session, AuditFilter(), None, page_size)
            assert len(page.events) == page_size
        return len(statements)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        assert statements_for(1) == statements_for(audit_search.PAGE_SIZE)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)


# -- pages ----------------------------------------------------------------------------------------


def walk(client: FlaskClient, first: TestResponse, direction: str) -> Iterator[list[int]]:
    """The events of each page from ``first`` on, following the ``direction`` link."""
    page = first
    while True:
        yield shown(page)
        links = [unescape(href) for href, label in HREF.findall(page.text) if label == direction]
        if not links:
            return
        page = client.get(links[0])


def test_the_pages_walk_every_event_once_in_both_directions(
    runtime: Runtime, school: School, auditor_client: FlaskClient
) -> None:
    append_events(runtime, 2 * audit_search.PAGE_SIZE + 7)
    everything = logged(runtime, lambda e: True)
    auditor_client.set_cookie("vault_lang", "en")
    first = console(auditor_client)
    assert f"{len(everything)} matching events" in first.text
    assert f"showing 1–{audit_search.PAGE_SIZE}, newest first" in first.text
    older = list(walk(auditor_client, first, "Older events"))
    assert [len(page) for page in older][:-1] == [audit_search.PAGE_SIZE] * (len(older) - 1)
    assert [seq for page in older for seq in page] == everything
    # New acts recorded meanwhile neither shift nor repeat the older pages.
    append_events(runtime, 3)
    last = auditor_client.get(f"/audit?before={older[-2][-1]}")
    assert shown(last) == older[-1]
    # Back up, page by page, to the newest page, which then holds the new acts too.
    newer = list(walk(auditor_client, last, "Newer events"))
    assert newer[:-1] == older[::-1]
    assert newer[-1] == logged(runtime, lambda e: True)[: audit_search.PAGE_SIZE]


def test_page_links_keep_the_filter(runtime: Runtime, auditor_client: FlaskClient) -> None:
    append_events(runtime, audit_search.PAGE_SIZE + 3)
    record(runtime, AuditAction.STORAGE_REPAIRED)
    picked = logged(runtime, lambda e: e.action == "system:init")
    auditor_client.set_cookie("vault_lang", "en")
    pages = list(
        walk(auditor_client, console(auditor_client, action="system:init"), "Older events")
    )
    assert len(pages) == 2 and [seq for page in pages for seq in page] == picked


# -- refusals -------------------------------------------------------------------------------------


def test_bad_filter_values_answer_422_with_each_fields_message(
    auditor_client: FlaskClient,
) -> None:
    wrong = {
        "since": "vakar",
        "until": "2026-11-18T10:00:00",
        "actor": "neviens",
        "recording": "nav-id",
        "action": "view:watched",
        "outcome": "varbūt",
        "before": "pēdējais",
    }
    latvian = console(auditor_client, **wrong)
    assert latvian.status_code == 422 and latvian.mimetype == "text/html"
    body = latvian.text
    for message in (
        "Norādiet datumu (GGGG-MM-DD) vai laiku ar tā nobīdi (2026-11-18T08:30:00Z).",
        "Nav konta ar šādu lietotājvārdu.",
        "Tas nav ieraksta identifikators.",
        "Šādas auditējamas darbības nav.",
        "Iznākums ir success, denied vai failure.",
        "Norādiet veselu skaitli, ne mazāku par 1.",
    ):
        assert message in body, message
    # The form comes back with what was typed, each wrong field marked, and nothing found.
    assert 'name="since" autocomplete="off" value="vakar" aria-invalid="true"' in body
    assert 'id="recording-error"' in body
    assert "<table" not in body and "/api/v1/audit/events" not in body
    english = auditor_client.get("/audit?lang=en&since=2026-11-19&until=2026-11-18")
    assert english.status_code == 422
    assert "The end of the period must come after its start." in english.text
    assert "Perioda beigām" not in english.text


@pytest.mark.parametrize("role", ["teacher", "director", "staff", "admin"])
def test_everyone_but_the_auditor_is_refused_and_the_refusal_is_audited(
    app: Flask, runtime: Runtime, role: str
) -> None:
    person = add_person(runtime, f"cits-{role}", role)
    client = signed_in(app, person)
    assert console(client).status_code == 403
    assert console(client, recording=str(uuid.uuid4())).status_code == 403
    refusals = [
        e for e in denials(runtime, "role") if e.details["endpoint"] == "audit_console.search"
    ]
    assert len(refusals) == 2
    assert {e.actor_id for e in refusals} == {user_id(runtime, person.username)}
    assert 'href="/audit"' not in client.get("/account").text


def test_the_menu_leads_the_auditor_to_the_console(
    app: Flask, runtime: Runtime, auditor_client: FlaskClient
) -> None:
    home = auditor_client.get("/account").text
    assert '<a href="/audit">Audita žurnāls</a>' in home
    auditor_client.set_cookie("vault_lang", "en")
    assert '<a href="/audit" aria-current="page">Audit log</a>' in console(auditor_client).text


# -- exports, the recording's history, the checkpoints -------------------------------------------


def test_export_links_carry_the_filter_and_deliver_what_the_page_shows(
    app: Flask, runtime: Runtime, school: School, auditor_client: FlaskClient
) -> None:
    watch_and_be_refused(app, school)
    criteria = {"recording": str(school.recording_id), "since": "2020-01-01"}
    page = console(auditor_client, **criteria)
    seqs = shown(page)
    assert seqs
    for label, export_format in (("Eksportēt CSV", "csv"), ("Eksportēt JSON Lines", "jsonl")):
        href = link_named(page.text, label)
        assert urlsplit(href).path == "/api/v1/audit/events"
        query = {name: values[0] for name, values in parse_qs(urlsplit(href).query).items()}
        assert query == {**criteria, "format": export_format}
        with auditor_client.get(href) as download:
            assert download.status_code == 200
            assert download.headers["Content-Disposition"].startswith("attachment;")
            data = download.get_data()
        if export_format == "csv":
            table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
            column = table[0].index("seq")
            assert sorted(int(row[column]) for row in table[1:]) == sorted(seqs)
        else:
            manifest, *lines = data.decode().splitlines()
            assert json.loads(manifest)["manifest"]["count"] == len(seqs)
            assert sorted(json.loads(line)["seq"] for line in lines) == sorted(seqs)
    exports = logged(runtime, lambda e: e.action == "audit:exported")
    assert len(exports) == 2


def test_a_filter_naming_a_recording_leads_to_its_access_history(
    app: Flask, school: School, auditor_client: FlaskClient
) -> None:
    watch_and_be_refused(app, school)
    without = console(auditor_client)
    assert "Kas piekļuva šim ierakstam" not in without.text
    page = console(auditor_client, recording=str(school.recording_id))
    callout = re.search(r'<p class="audit-callout"><a href="([^"]+)"', page.text)
    assert callout is not None
    assert callout.group(1) == f"/recordings/{school.recording_id}/accesses"
    history = auditor_client.get(callout.group(1))
    assert history.status_code == 200
    assert "Jānis Kalniņš (metodikis)" in history.text


def test_the_fingerprint_latest_checkpoint_and_head_are_shown(
    runtime: Runtime, auditor_client: FlaskClient
) -> None:
    auditor_client.set_cookie("vault_lang", "en")
    before = console(auditor_client).text
    assert "No checkpoint has been signed yet." in before
    checkpoint = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert checkpoint is not None
    with runtime.sessions() as session:
        fingerprint = audit_checkpoints.public_identity(session, runtime.keyring).fingerprint
    page = console(auditor_client).text
    assert fingerprint in page
    assert f"covers {checkpoint.tree_size} events" in page
    assert checkpoint.root_hash in page
    head = logged(runtime, lambda e: True)[0]
    assert f"No. {head}" in page
    download = re.search(r'href="(/api/v1/audit/checkpoints)" download="([^"]+)"', page)
    assert download is not None
    assert download.group(2) == f"audit-checkpoints-{runtime.clock().astimezone(RIGA).date()}.json"
    kept = auditor_client.get(download.group(1))
    assert kept.status_code == 200
    assert kept.get_json()["checkpoints"][0]["root_hash"] == checkpoint.root_hash


def test_the_log_is_searched_even_when_the_signing_key_is_unavailable(
    auditor_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any) -> None:
        raise KeysUnavailable()

    monkeypatch.setattr(audit_checkpoints, "public_identity", unavailable)
    page = console(auditor_client)
    assert page.status_code == 200 and shown(page)
    assert "audita parakstīšanas atslēgu nevar nolasīt" in page.text


def test_no_address_or_user_agent_reaches_the_page(
    app: Flask, runtime: Runtime, school: School
) -> None:
    context = RequestContext(ip_address=ADDRESS, user_agent=USER_AGENT)
    record(runtime, AuditAction.ACCESS_DENIED, outcome=Outcome.DENIED, context=context)
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": ADDRESS, "HTTP_USER_AGENT": USER_AGENT})
    assert sign_in(client, school.auditor, ip=ADDRESS).status_code == 302
    for criteria in ({}, {"outcome": "denied"}, {"action": "auth:login_succeeded"}):
        page = console(client, **criteria).text
        for personal in (ADDRESS, USER_AGENT, "ConsoleProbe"):
            assert personal not in page


def test_every_action_and_outcome_has_a_label() -> None:
    assert set(audit_search.ACTION_LABELS) == set(AuditAction)
    assert set(audit_search.OUTCOME_LABELS) == set(Outcome)
    assert audit_search.action_label("view:watched") is None
