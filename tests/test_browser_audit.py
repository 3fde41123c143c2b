"""The auditor's console in Debian's Chromium: the auditor signs in with a one-time code, filters
the log to one recording, downloads the CSV and the JSON Lines export, and `recvault audit
verify --export` accepts the JSON Lines file; a teacher is refused the console."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import sign_in_with_a_code, sign_in_with_the_form
from tests.support.console import Console
from tests.support.live_server import LiveServer
from tests.support.recording_support import register
from tests.support.streaming_support import browser, make_school
from vault.services import audit_checkpoints
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def download(page: Page, link_text: str, target: Path) -> Path:
    with page.expect_download() as started:
        page.get_by_role("link", name=link_text, exact=True).click()
    file = target / started.value.suggested_filename
    started.value.save_as(file)
    return file


def test_the_auditor_filters_exports_and_verifies_the_export(
    app: Flask,
    live_server: LiveServer,
    page: Page,
    chromium: Browser,
    runtime: Runtime,
    recvault: Console,
    tmp_path: Path,
) -> None:
    school = make_school(runtime)
    register(runtime, school.teacher.username, title="Cits ieraksts")
    viewer = browser(app, school.viewer)
    assert viewer.start_view(school.recording_id).status_code == 201
    base = live_server.url
    recording = str(school.recording_id)

    sign_in_with_a_code(page, base, school.auditor)
    page.get_by_role("navigation").get_by_role("link", name="Audita žurnāls").click()
    page.wait_for_url(f"{base}/audit")
    page.fill('input[name="recording"]', recording)
    page.get_by_role("button", name="Meklēt").click()
    page.wait_for_url(re.compile(r"/audit\?.*recording="))
    rows = page.locator("table.audit-events tbody tr")
    expect(rows.first).to_be_visible()
    for row in rows.all():
        expect(row).to_contain_text("Fotosintēze")
    count = rows.count()
    expect(page.locator(".audit-count")).to_contain_text(f"{count} atbilstoš")
    expect(page.locator(".audit-callout a")).to_have_attribute(
        "href", f"/recordings/{recording}/accesses"
    )

    spreadsheet = download(page, "Eksportēt CSV", tmp_path)
    table = list(csv.reader(io.StringIO(spreadsheet.read_text(encoding="utf-8-sig"))))
    column = table[0].index("recording_id")
    assert len(table) - 1 == count
    assert {row[column] for row in table[1:]} == {recording}

    lines = download(page, "Eksportēt JSON Lines", tmp_path)
    manifest, *events = lines.read_text(encoding="utf-8").splitlines()
    assert json.loads(manifest)["manifest"]["filter"]["recording_id"] == recording
    assert len(events) == count
    key = tmp_path / "audit-public-key.json"
    answer = page.request.get(f"{base}/api/v1/audit/public-key")
    assert answer.status == 200
    key.write_bytes(answer.body())
    verified = recvault("audit", "verify", "--export", str(lines))
    assert verified.exit_code == 0, verified.output
    signed = recvault("audit", "verify", "--export", str(lines), "--public-key", str(key))
    assert signed.exit_code == 0, signed.output

    # The signed checkpoints, downloaded from the page as a file to keep, then checked
    # against the live log as the officer would later. One is signed here (None when the
    # exports' own checkpoint already covers everything), so the file never comes empty.
    audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    page.reload()
    kept = download(page, "Lejupielādēt kontrolpunktus glabāšanai", tmp_path)
    assert kept.name.startswith("audit-checkpoints-") and kept.suffix == ".json"
    assert json.loads(kept.read_text(encoding="utf-8"))["checkpoints"]
    witnessed = recvault("audit", "verify", "--witness", str(kept))
    assert witnessed.exit_code == 0, witnessed.output

    teacher_context = chromium.new_context(locale="lv-LV")
    teacher = teacher_context.new_page()
    try:
        sign_in_with_the_form(teacher, base, school.teacher.username)
        expect(teacher.get_by_role("link", name="Audita žurnāls")).to_have_count(0)
        refused = teacher.goto(f"{base}/audit")
        assert refused is not None and refused.status == 403
        expect(teacher.locator("h1")).to_contain_text("Piekļuve liegta")
    finally:
        teacher_context.close()
