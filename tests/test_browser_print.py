"""Documents a person signs or files, printed by Debian's Chromium to PDF: the director's
order, a deletion certificate, the record of processing and the data-subject report come
out as A4 pages with the school's name, the table contents and page numbers, and without
the site's navigation. Checked with poppler's `pdfinfo` and `pdftotext`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page

from tests.support.backends import missing_backend
from tests.support.browser import sign_in_with_a_code
from tests.support.clock import TestClock
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import available_recording
from tests.support.streaming_support import browser, issue_order, make_school
from vault.models import Recording
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The menu's entries in Latvian: none of them belongs on paper.
NAVIGATION = ("Galvenā izvēlne", "Mans konts", "Izrakstīties", "Pāriet uz saturu")


def printed(page: Page, url: str, target: Path) -> tuple[str, str]:
    """The page at ``url`` as Chromium prints it: pdfinfo's report and the text."""
    for tool in ("pdfinfo", "pdftotext"):
        if shutil.which(tool) is None:
            missing_backend(f"{tool} (Debian package poppler-utils)")
    page.goto(url)
    page.pdf(path=str(target), format="A4", print_background=True)
    info = subprocess.run(
        ["pdfinfo", str(target)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    text = subprocess.run(
        ["pdftotext", "-layout", str(target), "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return info, text


def assert_a4_document(info: str, text: str, *contents: str) -> None:
    assert "(A4)" in info, info
    assert "Daugavpils Centra vidusskola" in text
    for item in contents:
        assert item in text, item
    for entry in NAVIGATION:
        assert entry not in text, entry
    pages = int(next(line for line in info.splitlines() if line.startswith("Pages:")).split()[1])
    assert re.search(rf"\b1\s*/\s*{pages}\b", text), "page numbers"


def test_the_order_a_certificate_and_both_reports_print_on_a4(
    app: Flask,
    live_server: LiveServer,
    page: Page,
    runtime: Runtime,
    clock: TestClock,
    tmp_path: Path,
) -> None:
    school = make_school(runtime, size=4000)
    order_id = issue_order(runtime, ["kolegis"], [school.recording_id], "7-2/31")
    assert browser(app, school.viewer).start_view(school.recording_id).status_code == 201
    base = live_server.url

    extra = available_recording(runtime, "skolotaja", 2000)
    deleted = browser(app, school.teacher).delete(f"/api/v1/recordings/{extra}")
    assert deleted.status_code == 204
    with runtime.sessions() as session:
        found = session.get(Recording, extra)
        assert found is not None and found.certificate_id is not None
        certificate_id = found.certificate_id

    sign_in_with_a_code(page, base, school.director)
    info, text = printed(page, f"{base}/certificates/{certificate_id}", tmp_path / "cert.pdf")
    assert_a4_document(info, text, "Dzēšanas apliecinājums", "Anna Bērziņa")
    info, text = printed(page, f"{base}/orders/{order_id}", tmp_path / "order.pdf")
    assert_a4_document(info, text, "7-2/31", "Fotosintēze", "Edgars Vītols")
    info, text = printed(page, f"{base}/reports/processing", tmp_path / "processing.pdf")
    assert_a4_document(info, text, "Apstrādes darbību reģistrs", "2026-2027", "Zoom")

    auditor = add_person(runtime, "dpo-2", "auditor", name="Zane Kalēja")
    page.context.clear_cookies()
    sign_in_with_a_code(page, base, auditor)
    info, text = printed(
        page,
        f"{base}/reports/subject?class_group=9.b&from=2026-09-01&to=2027-08-31",
        tmp_path / "subject.pdf",
    )
    assert_a4_document(
        info, text, "Datu subjekta pārskats", "Fotosintēze", "Jānis Kalniņš", "7-2/15"
    )
