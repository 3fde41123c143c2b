"""Key-hierarchy writes from many processes at once, on PostgreSQL.

Two processes rotate the master key again and again while others create school-year keys
and seal secrets, all at the same moment. Afterwards a fresh process opens every key that
was reported as made: none may have been wrapped under a master version that a rotation
destroyed, and no live master key file may have been swept as an orphan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vault.services.runtime import Runtime

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROTATIONS_PER_PROCESS = 4
CREATORS = 4
THREADS_PER_CREATOR = 5  # 20 creations and seals in flight at once

# Each worker waits for the go file, so that all of them start their work together.
WORKER = """
import json, os, sys, threading, time, uuid
from datetime import UTC, datetime
from vault.app import build_runtime
from vault.services import keys
from vault.settings import Settings

mode, go, tag = sys.argv[1], sys.argv[2], sys.argv[3]
runtime = build_runtime(Settings.from_env())
while not os.path.exists(go):
    time.sleep(0.01)

def now():
    return datetime.now(UTC)

if mode == "rotate":
    for _ in range(int(sys.argv[4])):
        keys.finish_master_rotation(runtime, now(), force=True)
    print(json.dumps({"rotated": True}))
else:
    made = []
    lock = threading.Lock()
    def create(index):
        year_start = 2100 + int(tag) * 10 + index
        year = f"{year_start}-{year_start + 1}"
        recording_id = uuid.uuid4()
        secret = os.urandom(32)
        name = f"race-{tag}-{index}"
        for attempt in range(20):
            try:
                with runtime.sessions() as session, session.begin():
                    key, wrapped = runtime.keyring.new_data_key(session, recording_id, year)
                    runtime.keyring.seal(session, name, secret)
                break
            except Exception:
                time.sleep(0.05 * (attempt + 1))
        else:
            raise SystemExit("gave up")
        with lock:
            made.append({"year": year, "recording": str(recording_id), "key": key.hex(),
                         "wrapped": wrapped.hex(), "name": name, "secret": secret.hex()})
    threads = [threading.Thread(target=create, args=(i,)) for i in range(int(sys.argv[4]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"made": made}))
"""

VERIFY = """
import json, sys, uuid
from vault.app import build_runtime
from vault.settings import Settings
runtime = build_runtime(Settings.from_env())
failures = []
for item in json.load(sys.stdin):
    try:
        with runtime.sessions() as session:
            key = runtime.keyring.data_key(
                session, uuid.UUID(item["recording"]), item["year"], bytes.fromhex(item["wrapped"])
            )
            secret = runtime.keyring.unseal(session, item["name"])
        if key.hex() != item["key"] or secret is None or secret.hex() != item["secret"]:
            failures.append(item["name"] + ": wrong key")
    except Exception as exc:
        failures.append(f"{item['name']}: {type(exc).__name__}: {exc}")
print(json.dumps(failures))
"""


def test_rotations_racing_key_creation_lose_no_key(runtime: Runtime, tmp_path: Path) -> None:
    settings = runtime.settings
    env = {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(settings.instance_dir),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_STORAGE_URL": settings.storage_url,
    }
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "rotate", str(go), str(n), str(ROTATIONS_PER_PROCESS)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ] + [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "create", str(go), str(n), str(THREADS_PER_CREATOR)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(CREATORS)
    ]
    go.write_text("go")
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, out
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    made = [item for output in outputs for item in output.get("made", [])]
    assert len(made) == CREATORS * THREADS_PER_CREATOR
    assert len({item["year"] for item in made}) == len(made)

    checked = subprocess.run(
        [sys.executable, "-c", VERIFY],
        env=env,
        input=json.dumps(made),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(checked.stdout) == []
    # Every live master version still has its key file; the fresh process found it.
    assert uuid.UUID(made[0]["recording"])
