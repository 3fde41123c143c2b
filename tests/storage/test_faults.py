"""Faults: the S3 server dies mid-write and mid-read, the local disk fills up.

In every case the port must raise its own "unavailable" error (never a botocore or OS error),
no partial object may become visible, and the store must work again once the fault is gone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from storage_backends.base import LifecycleRules, ObjectNotFound, StoreUnavailable
from storage_backends.s3 import S3Store, S3Tuning
from tests.support.backends import missing_backend
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer, run_seaweedfs

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
KEY = "recordings/2025-2026/3c9e"
AFTER = "recordings/2025-2026/after-restart"
TAGS = {"classification": "restricted", "school-year": "2025-2026"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A private SeaweedFS this test may kill; the finaliser stops it whatever happens."""
    with run_seaweedfs(tmp_path / "seaweedfs") as private:
        yield private


def quick_store(server: SeaweedServer) -> S3Store:
    """A store that gives up within about a second, with explicit dummy credentials."""
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    store = S3Store(
        "faults",
        endpoint_url=server.endpoint_url,
        tuning=S3Tuning(connect_timeout=0.5, read_timeout=3, max_attempts=2, window_size=MiB),
        session=session,
    )
    store.ensure_ready(LifecycleRules())
    return store


def kill_before(store: S3Store, server: SeaweedServer, operation: str) -> None:
    """Kill the server just as the next ``operation`` request is about to be sent."""
    fired: list[bool] = []

    def hook(**_: Any) -> None:
        if not fired:
            fired.append(True)
            server.kill()

    store.client.meta.events.register(f"before-send.s3.{operation}", hook)


def assert_not_visible(store: S3Store, key: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.head(key)
    with pytest.raises(ObjectNotFound):
        store.read_range(key)
    assert key not in list(store.iter_keys())


@pytest.mark.s3
def test_killed_during_a_multipart_write(server: SeaweedServer) -> None:
    store = quick_store(server)
    rng = random.Random(5)
    chunks = [rng.randbytes(5 * MiB), rng.randbytes(5 * MiB), rng.randbytes(1024)]
    upload_id = store.start_multipart(KEY, TAGS)
    first = store.put_part(KEY, upload_id, 1, chunks[0])

    kill_before(store, server, "UploadPart")
    with pytest.raises(StoreUnavailable) as raised:
        store.put_part(KEY, upload_id, 2, chunks[1])
    assert isinstance(raised.value.__cause__, BotoCoreError)
    with pytest.raises(StoreUnavailable):
        store.complete_multipart(KEY, upload_id, [first])

    server.restart()
    assert_not_visible(store, KEY)
    # The upload state survived, so the write resumes where it stopped.
    second = store.put_part(KEY, upload_id, 2, chunks[1])
    third = store.put_part(KEY, upload_id, 3, chunks[2])

    kill_before(store, server, "CompleteMultipartUpload")
    with pytest.raises(StoreUnavailable):
        store.complete_multipart(KEY, upload_id, [first, second, third])

    server.restart()
    assert_not_visible(store, KEY)
    store.complete_multipart(KEY, upload_id, [first, second, third])
    assert b"".join(store.read_range(KEY)) == b"".join(chunks)
    assert store.get_tags(KEY) == TAGS

    store.put(AFTER, b"the next write", TAGS)
    assert b"".join(store.read_range(AFTER)) == b"the next write"


@pytest.mark.s3
def test_killed_during_a_ranged_read(server: SeaweedServer) -> None:
    store = quick_store(server)
    data = random.Random(6).randbytes(4 * MiB + 123)
    store.put(KEY, data, TAGS)

    stream = store.read_range(KEY, 100)
    received = [next(stream)]
    server.kill()
    with pytest.raises(StoreUnavailable) as raised:
        received.extend(stream)
    assert isinstance(raised.value.__cause__, BotoCoreError)
    # Whatever arrived before the failure is a true prefix of the range, never garbage.
    got = b"".join(received)
    assert 0 < len(got) < len(data) - 100
    assert data[100:].startswith(got)
    with pytest.raises(StoreUnavailable):
        store.read_range(KEY)
    with pytest.raises(StoreUnavailable):
        store.put(AFTER, b"while down", TAGS)

    server.restart()
    assert b"".join(store.read_range(KEY)) == data
    assert_not_visible(store, AFTER)
    store.put(AFTER, b"the next write", TAGS)
    assert b"".join(store.read_range(AFTER)) == b"the next write"


DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from storage_backends.base import LifecycleRules, StorageError
    from storage_backends.local import LocalStore

    KiB = 1024
    root = Path(sys.argv[1]) / "store"
    store = LocalStore(root, min_part_size=1)
    store.ensure_ready(LifecycleRules())
    store.put("recordings/small", b"s" * KiB, {"classification": "restricted"})
    results = {}

    def attempt(name, call):
        try:
            call()
            results[name] = ["ok", ""]
        except StorageError as exc:
            results[name] = [type(exc).__name__, str(exc)]

    def remaining_files():
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    # Bigger than the whole 1 MiB filesystem.
    attempt("put", lambda: store.put("recordings/big", b"b" * (2048 * KiB), {}))
    upload = store.start_multipart("recordings/multi", {})
    part = store.put_part("recordings/multi", upload, 1, b"p" * (600 * KiB))
    # The second part does not fit beside the first.
    attempt("part", lambda: store.put_part("recordings/multi", upload, 2, b"q" * (600 * KiB)))
    # Completing copies the part into a new file, which does not fit either.
    attempt("complete", lambda: store.complete_multipart("recordings/multi", upload, [part]))
    later = datetime.now(UTC) + timedelta(days=1)
    after_failures = {
        "files": remaining_files(),
        "keys": sorted(store.iter_keys()),
        "stale": [write.upload_id for write in store.list_stale_multipart(later)],
    }
    # Once space is freed, writing works again.
    store.abort_multipart("recordings/multi", upload)
    attempt("after", lambda: store.put("recordings/after", b"a" * (500 * KiB), {}))
    print(json.dumps({
        "results": results,
        "after_failures": after_failures,
        "upload": upload,
        "keys": sorted(store.iter_keys()),
        "tmp": sorted(p.name for p in (root / "tmp").iterdir()),
        "small_intact": b"".join(store.read_range("recordings/small")) == b"s" * KiB,
    }))
    """
)


def unshare_command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        missing_backend("`unshare` (util-linux) is needed to mount a private tmpfs")
    # As root a mount namespace is enough; otherwise a user namespace maps us to root in it.
    command = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-r", "-m"]
    probe = subprocess.run(
        [*command, "true"], capture_output=True, text=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        missing_backend(f"cannot create a mount namespace: {probe.stderr.strip()}")
    return command


def test_a_full_local_disk_is_unavailable_and_leaves_no_partial_file(tmp_path: Path) -> None:
    command = unshare_command()
    disk = tmp_path / "disk"
    disk.mkdir()
    shell = 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$1" -c "$2" "$0"'
    result = subprocess.run(
        [*command, "sh", "-c", shell, str(disk), sys.executable, DISK_FULL_SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    upload = report["upload"]

    for name in ("put", "part", "complete"):
        kind, message = report["results"][name]
        assert kind == "StoreUnavailable", (name, kind, message)
        assert "full" in message, message

    after = report["after_failures"]
    # No temp file, no partial object, no half-written part: only what succeeded is there.
    assert after["files"] == [
        "lifecycle.json",
        "objects/recordings/small",
        "tags/recordings/small",
        f"uploads/{upload}/00001.part",
        f"uploads/{upload}/upload.json",
    ]
    assert after["keys"] == ["recordings/small"]
    assert after["stale"] == [upload]  # the upload is intact and can be retried or aborted

    assert report["results"]["after"] == ["ok", ""]
    assert report["keys"] == ["recordings/after", "recordings/small"]
    assert report["tmp"] == []
    assert report["small_intact"]
    # The tmpfs lived only in the private namespace: nothing was written to the real disk.
    assert list(disk.iterdir()) == []
