"""The audit chain under load on PostgreSQL: it never forks, never skips a number and never
loses an event.

Four processes of eight threads each append 10,000 events through the real ``audit.record``,
each in a transaction of its own as acts write them (``tests/support/audit_appender.py``).
At the same time, through the app over HTTP, teachers register and upload recordings (tus)
and staff members named in an order watch one (a view, range requests, the end of the view),
and those acts record their own events into the same chain. The app serves them on a
loopback HTTP server in this process, on the tests' clock; the appenders are processes of
their own, as the processes of several app servers would be. Afterwards the numbers are
exactly 1..N, every link verifies (in process and with ``recvault audit verify``), every
appended event is there exactly once, the count is the appends plus what the uploads, the
views and the checkpoints signed along the way recorded, and the uploads are complete.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from tests.support.audit_appender import ACTION as APPENDED_ACTION
from tests.support.audit_appender import share
from tests.support.people import PASSWORD, add_person
from tests.support.recording_support import (
    available_recording,
    keep_year_open,
    registration,
    sample_media,
)
from tests.support.streaming_support import issue_order
from tests.support.uploads_support import (
    encode_metadata,
    media,
    published,
    serve,
    stored_plaintext,
)
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent
from vault.services import account_admin, audit_chain
from vault.services.audit import AuditAction
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4
THREADS = 8
APPENDED = 10_000
TEACHERS = 4
UPLOAD_BYTES = 300_000
PATCH_BYTES = 120_000
VIEWERS = 2
WATCHED_BYTES = 200_000
# Each viewer keeps watching until the appenders are done, at least this many times, with a
# pause between two views as a person takes: the load on the chain is the appenders' job, and
# a viewer spinning on two cores would only slow them down.
MIN_VIEWS_EACH = 3
MAX_VIEWS_EACH = 2000
VIEW_PAUSE_SECONDS = 0.2
TIMEOUT = 300
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


@dataclass
class Acts:
    """What the app-side clients completed, counted as they go (several threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uploaded: dict[uuid.UUID, bytes] = field(default_factory=dict)
    sign_ins: int = 0
    views: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def expected_events(self) -> Counter[str]:
        """The events the acts record: three per upload (registration, creation, the
        completion its verify pass records), one per sign-in, two per view (its start, and
        its summary when it ends)."""
        uploads = len(self.uploaded)
        return Counter(
            {
                AuditAction.RECORDING_REGISTERED.value: uploads,
                AuditAction.UPLOAD_CREATED.value: uploads,
                AuditAction.UPLOAD_COMPLETED.value: uploads,
                AuditAction.AUTH_LOGIN_SUCCEEDED.value: self.sign_ins,
                AuditAction.VIEW_STARTED.value: self.views,
                AuditAction.VIEW_ENDED.value: self.views,
            }
        )


def in_thread(acts: Acts, work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:
            with acts.lock:
                acts.errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def upload(base: str, token: str, payload: dict[str, Any], data: bytes, acts: Acts) -> None:
    """A teacher's script: register the lesson, then tus creation and PATCHes."""
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        registered = http.post(f"{base}/api/v1/recordings", json=payload, timeout=60)
        assert registered.status_code == 201, registered.text
        recording_id = registered.json()["id"]
        tus = {"Tus-Resumable": "1.0.0"}
        created = http.post(
            f"{base}/api/v1/uploads",
            headers={
                **tus,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": encode_metadata(recording_id=recording_id),
            },
            timeout=60,
        )
        assert created.status_code == 201, created.text
        location = base + created.headers["Location"]
        offset = 0
        while offset < len(data):
            patched = http.patch(
                location,
                data=data[offset : offset + PATCH_BYTES],
                headers={
                    **tus,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                timeout=60,
            )
            assert patched.status_code == 204, patched.text
            offset = int(patched.headers["Upload-Offset"])
    with acts.lock:
        acts.uploaded[uuid.UUID(recording_id)] = data


def csrf_token(http: requests.Session, url: str) -> str:
    page = http.get(url, timeout=60)
    match = CSRF_META.search(page.text)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def watch(
    base: str,
    username: str,
    recording_id: uuid.UUID,
    plaintext: bytes,
    appenders_done: threading.Event,
    acts: Acts,
) -> None:
    """A designated person's browser: sign in, then view after view until the load ends."""
    with requests.Session() as http:
        signed_in = http.post(
            f"{base}/login",
            data={
                "username": username,
                "password": PASSWORD,
                "totp": "",
                "csrf_token": csrf_token(http, f"{base}/login"),
            },
            allow_redirects=False,
            timeout=60,
        )
        assert signed_in.status_code == 302, signed_in.text
        acts.add(sign_ins=1)
        http.headers["X-CSRF-Token"] = csrf_token(http, f"{base}/account")
        views = 0
        while views < MIN_VIEWS_EACH or not appenders_done.is_set():
            assert views < MAX_VIEWS_EACH, "the appenders never finished"
            started = http.post(f"{base}/api/v1/recordings/{recording_id}/views", timeout=60)
            assert started.status_code == 201, started.text
            view = started.json()
            for first in (0, WATCHED_BYTES // 2):
                last = first + 4095
                streamed = http.get(
                    base + view["stream_url"],
                    headers={"Range": f"bytes={first}-{last}"},
                    timeout=60,
                )
                assert streamed.status_code == 206, streamed.text
                assert streamed.content == plaintext[first : last + 1]
            ended = http.post(base + view["end_url"], json={"played": [[0, 2.5]]}, timeout=60)
            assert ended.status_code == 204, ended.text
            views += 1
            acts.add(views=1)
            appenders_done.wait(VIEW_PAUSE_SECONDS)


@contextmanager
def appenders(runtime: Runtime, go: Path) -> Iterator[list[subprocess.Popen[str]]]:
    settings = runtime.settings
    env = {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(settings.instance_dir),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_STORAGE_URL": settings.storage_url,
    }
    started = [
        subprocess.Popen(
            [
                sys.executable,
                *("-m", "tests.support.audit_appender", str(go), str(n), str(THREADS)),
                str(share(APPENDED, PROCESSES, n)),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def seq_numbers(runtime: Runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))


def test_concurrent_appends_uploads_and_views_keep_one_gap_free_chain(
    app: Flask, runtime: Runtime, tmp_path: Path, verify_passes_finished: None
) -> None:
    keep_year_open(runtime)
    tokens = {}
    for n in range(TEACHERS):
        username = f"skolotaja{n}"
        add_person(runtime, username, "teacher")
        tokens[username] = account_admin.issue_token(
            runtime, username, "uploads", "1d", runtime.clock()
        )
    viewers = [f"metodikis{n}" for n in range(VIEWERS)]
    for username in viewers:
        add_person(runtime, username, "staff")
    add_person(runtime, "direktore", "director")
    watched = available_recording(runtime, "skolotaja0", WATCHED_BYTES)
    issue_order(runtime, viewers, [watched], "7-2/15")
    plaintext = sample_media(WATCHED_BYTES)
    payload = registration(runtime)
    before = seq_numbers(runtime)
    assert before == list(range(1, len(before) + 1))
    baseline = len(before)

    acts = Acts()
    appenders_done = threading.Event()
    go = tmp_path / "go"
    with serve(app) as server, appenders(runtime, go) as workers:
        go.write_text("go")
        clients = [
            in_thread(acts, partial(upload, server.url, token, payload, media(UPLOAD_BYTES), acts))
            for token in tokens.values()
        ] + [
            in_thread(
                acts, partial(watch, server.url, viewer, watched, plaintext, appenders_done, acts)
            )
            for viewer in viewers
        ]
        reports = []
        try:
            for worker in workers:
                out, err = worker.communicate(timeout=TIMEOUT)
                assert worker.returncode == 0, err
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            # The viewers watch until the load is over, whatever ended it.
            appenders_done.set()
            for client in clients:
                client.join(timeout=TIMEOUT)
        assert not acts.errors, acts.errors
        assert sum(report["appended"] for report in reports) == APPENDED
        for recording_id, data in acts.uploaded.items():
            assert published(runtime, recording_id).status == "available"
            assert stored_plaintext(runtime, recording_id) == data
    assert len(acts.uploaded) == TEACHERS

    # One chain, numbered 1..N without a gap or a repeat, its head at N.
    numbers = seq_numbers(runtime)
    total = len(numbers)
    assert numbers == list(range(1, total + 1))
    with runtime.sessions() as session:
        head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
        assert head is not None and head.seq == total
        events = session.execute(
            select(AuditEvent.seq, AuditEvent.action, AuditEvent.details).where(
                AuditEvent.seq > baseline
            )
        ).all()
        checkpoints = session.scalar(
            select(func.count())
            .select_from(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size >= baseline)
        )
        verdict = audit_chain.verify(session)
    assert verdict.intact, verdict
    assert verdict.count == total

    # Every appended event exactly once; beside them, exactly the events of the acts and of
    # the checkpoints signed along the way (one event each).
    appended = [
        (row.details["worker"], row.details["thread"], row.details["index"])
        for row in events
        if row.action == APPENDED_ACTION.value
    ]
    assert len(appended) == APPENDED
    assert len(set(appended)) == APPENDED
    others = Counter(row.action for row in events if row.action != APPENDED_ACTION.value)
    expected = acts.expected_events()
    expected[AuditAction.AUDIT_CHECKPOINT_CREATED.value] = checkpoints or 0
    assert +others == +expected
    assert total - baseline == APPENDED + sum(expected.values())

    # The acts really ran during the load: their events sit between the appended ones.
    appended_seqs = [row.seq for row in events if row.action == APPENDED_ACTION.value]
    first, last = min(appended_seqs), max(appended_seqs)
    interleaved = [
        row.seq for row in events if row.action != APPENDED_ACTION.value and first < row.seq < last
    ]
    assert interleaved, "no upload or view recorded anything while the appenders ran"

    verified = subprocess.run(
        [sys.executable, "-m", "vault.cli", "audit", "verify"],
        cwd=ROOT,
        env={
            **os.environ,
            "VAULT_INSTANCE_DIR": str(runtime.settings.instance_dir),
            "VAULT_DATABASE_URL": runtime.settings.database_url,
            "VAULT_STORAGE_URL": runtime.settings.storage_url,
        },
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
