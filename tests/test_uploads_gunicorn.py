"""Uploads under `recvault serve` (gunicorn, two gthread workers): a worker killed with
SIGKILL between two PATCH requests, or in the middle of one, loses nothing acknowledged.

The upload state lives in the database and the store only, so the next request may land on
the other worker or on the one the master starts in place of the dead one.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.support.processes import children_of, free_port, serving
from tests.support.recording_support import register
from tests.support.uploads_support import (
    MIB,
    encode_metadata,
    media,
    published,
    stored_plaintext,
    teacher_token,
)
from vault.services.runtime import Runtime
from vault.settings import Settings

# The server is gunicorn in another process, reading the machine's clock itself.
pytestmark = [pytest.mark.slow, pytest.mark.machine_clock]


class Served:
    def __init__(self, base: str, master: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.master = master

    def workers(self, expected: int = 2, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = children_of(self.master.pid)
            if len(workers) >= expected:
                return workers
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not run {expected} workers")

    def kill_workers(self) -> None:
        """SIGKILL every worker by pid (never the master), as a crash or the OOM killer would."""
        victims = self.workers()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = children_of(self.master.pid)
            if len(current) >= 2 and not set(current) & set(victims):
                return
            time.sleep(0.1)
        raise AssertionError("the master did not replace the killed workers")


@pytest.fixture
def served(settings: Settings, runtime: Runtime) -> Iterator[Served]:
    env = {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(settings.instance_dir),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_STORAGE_URL": settings.storage_url,
    }
    recvault = [sys.executable, "-m", "vault.cli"]
    subprocess.run([*recvault, "init"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    command = [*recvault, "serve", "--port", str(port), "--workers", "2", "--threads", "4"]
    with serving(command, env, port) as master:
        yield Served(f"http://127.0.0.1:{port}", master)


class Tus:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}

    def create(self, recording_id: uuid.UUID, length: int) -> str:
        response = requests.post(
            f"{self.base}/api/v1/uploads",
            headers={
                **self.headers,
                "Upload-Length": str(length),
                "Upload-Metadata": encode_metadata(recording_id=str(recording_id)),
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return self.base + response.headers["Location"]

    def offset(self, url: str) -> int:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.head(url, headers=self.headers, timeout=10)
                assert response.status_code == 200
                return int(response.headers["Upload-Offset"])
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def patch(self, url: str, offset: int, data: bytes) -> int:
        response = requests.patch(
            url,
            data=data,
            headers={
                **self.headers,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=120,
        )
        assert response.status_code == 204, response.text
        return int(response.headers["Upload-Offset"])

    def open_patch(self, url: str, offset: int, length: int) -> http.client.HTTPConnection:
        """Start a PATCH with a Content-Length whose body the caller sends piece by piece."""
        target = urllib.parse.urlsplit(url)
        assert target.hostname is not None
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        connection.putrequest("PATCH", target.path)
        for name, value in {
            **self.headers,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection


def test_killed_workers_lose_nothing_acknowledged(served: Served, runtime: Runtime) -> None:
    token = teacher_token(runtime, "skolotaja")
    recording_id = register(runtime, "skolotaja")
    data = media(40 * MIB + 4321)
    tus = Tus(served.base, token)
    url = tus.create(recording_id, len(data))

    # Between requests: the acknowledged offset survives both workers' deaths.
    offset = tus.patch(url, 0, data[: 3 * MIB])
    offset = tus.patch(url, offset, data[offset : 6 * MIB + 7])
    assert offset == 6 * MIB + 7
    served.kill_workers()
    assert tus.offset(url) == offset

    # During a request: parts committed mid-request are acknowledged even though the
    # response never comes; only what followed them is lost and sent again.
    length = 24 * MIB
    connection = tus.open_patch(url, offset, length)
    sent = 0
    # Enough for three more parts: the first of them is acknowledged once the third is cut.
    while sent < 18 * MIB:
        connection.send(data[offset + sent : offset + sent + MIB])
        sent += MIB
    deadline = time.monotonic() + 30
    while tus.offset(url) == offset:
        assert time.monotonic() < deadline, "no part was acknowledged mid-request"
        time.sleep(0.1)
    served.kill_workers()
    connection.close()
    acknowledged = tus.offset(url)
    assert offset < acknowledged <= offset + sent
    offset = acknowledged

    while offset < len(data):
        offset = tus.patch(url, offset, data[offset : offset + 5 * MIB + 3])
    recording = published(runtime, recording_id)
    assert recording.status == "available"
    assert stored_plaintext(runtime, recording_id) == data
    assert recording.available_at is not None
    assert recording.available_at <= runtime.clock()
