"""The key hierarchy and crypto-shredding, including backups and other processes."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.clock import MachineClock
from vault import crypto, schema
from vault.app import build_runtime, master_key_provider
from vault.keyring import (
    ORPHAN_KEY_GRACE,
    Keyring,
    KeyringError,
    WrongKeysError,
    YearShredded,
)
from vault.models import AuditEvent, MasterKeyVersion, SchoolYearKey, SealedSecret
from vault.services import keys
from vault.services.errors import KeysUnavailable
from vault.services.runtime import Runtime
from vault.settings import Settings

NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
# Master key files are dated by the machine's clock, and the orphan sweep reads them by it.
machine_clock = MachineClock()
SHREDDED = "2025-2026"
KEPT = "2026-2027"


def make_data_key(runtime: Runtime, year: str) -> tuple[uuid.UUID, bytes, bytes]:
    recording_id = uuid.uuid4()
    with runtime.sessions() as session, session.begin():
        key, wrapped = runtime.keyring.new_data_key(session, recording_id, year)
    return recording_id, key, wrapped


def open_data_key(runtime: Runtime, recording_id: uuid.UUID, year: str, wrapped: bytes) -> bytes:
    with runtime.sessions() as session:
        return runtime.keyring.data_key(session, recording_id, year, wrapped)


def key_files(settings: Settings) -> list[Path]:
    return sorted(settings.keys_dir.glob("master-*.key"))


def newest_registered_file(runtime: Runtime) -> Path:
    with runtime.sessions() as session:
        current = runtime.keyring.current_version(session)
        assert current is not None
        return runtime.settings.keys_dir / f"master-{current.fingerprint}.key"


@pytest.mark.file_times
def test_a_fresh_orphan_key_file_is_left_for_the_rotation_writing_it(runtime: Runtime) -> None:
    """Without the grace period, a sweep could destroy the key of a rotation still running."""
    runtime.keyring._provider.create()
    keys.finish_master_rotation(runtime, NOW, force=False)
    assert len(key_files(runtime.settings)) == 2


def test_a_version_a_row_still_names_is_never_destroyed(runtime: Runtime) -> None:
    """A key wrapped under the old version by a writer that raced the rotation is moved to
    the current version before the old one is destroyed, and still opens."""
    with runtime.sessions() as session, session.begin():
        runtime.keyring.seal(session, "late-secret", b"s" * 32)
        old = session.get(SealedSecret, "late-secret")
        assert old is not None
        stale = (old.master_version, old.wrapped)
    with runtime.sessions() as session, session.begin():
        runtime.keyring.rotate_master(session, NOW)
    with runtime.sessions() as session, session.begin():
        row = session.get(SealedSecret, "late-secret")
        assert row is not None
        row.master_version, row.wrapped = stale
    keys.finish_master_rotation(runtime, NOW, force=False)
    with runtime.sessions() as session:
        assert runtime.keyring.unseal(session, "late-secret") == b"s" * 32
        assert session.get(MasterKeyVersion, 1).destroyed_at is not None  # type: ignore[union-attr]


def test_master_key_file_is_owner_only(runtime: Runtime) -> None:
    files = key_files(runtime.settings)
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o600


def test_data_keys_round_trip_and_are_bound_to_their_recording(runtime: Runtime) -> None:
    recording_id, key, wrapped = make_data_key(runtime, SHREDDED)
    assert open_data_key(runtime, recording_id, SHREDDED, wrapped) == key
    with pytest.raises(crypto.IntegrityError):
        open_data_key(runtime, uuid.uuid4(), SHREDDED, wrapped)


def test_shred_destroys_the_year_and_keeps_the_others(runtime: Runtime) -> None:
    shredded_id, _, shredded_wrapped = make_data_key(runtime, SHREDDED)
    kept_id, kept_key, kept_wrapped = make_data_key(runtime, KEPT)
    with runtime.sessions() as session, session.begin():
        runtime.keyring.seal(session, "totp:someone", b"seed")
    old_files = key_files(runtime.settings)

    outcome = keys.shred_year_key(runtime, SHREDDED, NOW)

    assert outcome.year_key_destroyed_now and outcome.complete
    assert outcome.rotation.new_version == 2
    assert outcome.rotation.destroyed_versions == (1,)
    with pytest.raises(YearShredded):
        open_data_key(runtime, shredded_id, SHREDDED, shredded_wrapped)
    assert open_data_key(runtime, kept_id, KEPT, kept_wrapped) == kept_key
    with runtime.sessions() as session:
        assert runtime.keyring.unseal(session, "totp:someone") == b"seed"
        assert session.get(SchoolYearKey, SHREDDED).wrapped_key is None  # type: ignore[union-attr]
        actions = list(session.scalars(select(AuditEvent.action)))
    assert {"keys:year_key_destroyed", "keys:master_rotated", "keys:master_destroyed"} <= set(
        actions
    )
    new_files = key_files(runtime.settings)
    assert len(new_files) == 1 and new_files[0] not in old_files
    # New recordings cannot be filed under a shredded year.
    with pytest.raises(YearShredded):
        make_data_key(runtime, SHREDDED)


def test_shred_is_idempotent(runtime: Runtime) -> None:
    make_data_key(runtime, SHREDDED)
    keys.shred_year_key(runtime, SHREDDED, NOW)
    again = keys.shred_year_key(runtime, SHREDDED, NOW)
    assert not again.year_key_destroyed_now
    assert again.rotation.new_version is None and again.complete
    with runtime.sessions() as session:
        versions = sorted(session.scalars(select(MasterKeyVersion.version)))
    assert versions == [1, 2]


@pytest.mark.file_times
def test_shred_resumes_after_a_crash_between_steps(runtime: Runtime) -> None:
    kept_id, kept_key, kept_wrapped = make_data_key(runtime, KEPT)
    with runtime.sessions() as session, session.begin():
        runtime.keyring.destroy_year_key(session, SHREDDED, NOW)
    # Crash here: the year key is gone, the master key not yet rotated.
    # A crashed rotation may also have left a key file it never registered, long enough ago
    # that no running operation can still be about to register it.
    runtime.keyring._provider.create()
    assert len(key_files(runtime.settings)) == 2
    (orphan,) = set(key_files(runtime.settings)) - {newest_registered_file(runtime)}
    long_ago = machine_clock.timestamp() - ORPHAN_KEY_GRACE.total_seconds() - 60
    os.utime(orphan, (long_ago, long_ago))

    outcome = keys.shred_year_key(runtime, SHREDDED, NOW)

    assert not outcome.year_key_destroyed_now
    assert outcome.rotation.new_version == 2 and outcome.complete
    assert len(key_files(runtime.settings)) == 1
    assert open_data_key(runtime, kept_id, KEPT, kept_wrapped) == kept_key


KEY_TABLES = (MasterKeyVersion, SchoolYearKey, SealedSecret)


def test_a_backup_taken_before_the_shred_decrypts_nothing_of_that_year(
    runtime: Runtime, tmp_path: Path
) -> None:
    recording_id, _, wrapped = make_data_key(runtime, SHREDDED)
    kept_id, kept_key, kept_wrapped = make_data_key(runtime, KEPT)
    # The backup: every key-hierarchy row as it stood before the shred.
    with runtime.sessions() as session:
        backup = {
            table: [
                {column.key: getattr(row, column.key) for column in table.__table__.columns}
                for row in session.scalars(select(table))
            ]
            for table in KEY_TABLES
        }

    keys.shred_year_key(runtime, SHREDDED, NOW)

    # Restored into a fresh database, opened with the keys directory as it is now.
    restored = dataclasses.replace(
        runtime.settings, database_url=f"sqlite:///{tmp_path / 'restored.db'}"
    )
    restored_runtime = build_runtime(restored)
    try:
        schema.upgrade(restored_runtime.engine)
        with restored_runtime.sessions() as session, session.begin():
            for table in KEY_TABLES:
                session.add_all(table(**values) for values in backup[table])
        with pytest.raises(KeyringError):
            open_data_key(restored_runtime, recording_id, SHREDDED, wrapped)
        # The backup cannot even be opened for the other year: its master version is gone.
        with pytest.raises(WrongKeysError):
            open_data_key(restored_runtime, kept_id, KEPT, kept_wrapped)
    finally:
        restored_runtime.engine.dispose()
    assert open_data_key(runtime, kept_id, KEPT, kept_wrapped) == kept_key


SECOND_PROCESS = """
import sys, uuid
from vault.app import build_runtime
from vault.settings import Settings
runtime = build_runtime(Settings.from_env())
recording_id, year, wrapped = uuid.UUID(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
def attempt():
    try:
        with runtime.sessions() as session:
            runtime.keyring.data_key(session, recording_id, year, wrapped)
        return "opened"
    except Exception as exc:
        return type(exc).__name__
print(attempt(), flush=True)
sys.stdin.readline()
print(attempt(), flush=True)
"""


def test_another_process_refuses_the_year_at_once(runtime: Runtime) -> None:
    recording_id, _, wrapped = make_data_key(runtime, SHREDDED)
    settings = runtime.settings
    env = {
        "VAULT_INSTANCE_DIR": str(settings.instance_dir),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_STORAGE_URL": settings.storage_url,
        "PATH": "/usr/bin:/bin",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS, str(recording_id), SHREDDED, wrapped.hex()],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stdin is not None
    try:
        assert worker.stdout.readline().strip() == "opened"
        keys.shred_year_key(runtime, SHREDDED, NOW)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "YearShredded"
    finally:
        worker.kill()
        worker.wait()


def test_init_refuses_a_fresh_key_when_the_database_references_one(runtime: Runtime) -> None:
    for path in key_files(runtime.settings):
        path.unlink()
    with pytest.raises(KeysUnavailable, match="never starts afresh"):
        keys.initialise_master_key(runtime)
    assert key_files(runtime.settings) == []


def test_environment_master_key_shred_waits_for_the_operator(
    settings: Settings, tmp_path: Path
) -> None:
    first = keys.generate_master_key_material()
    env_settings = dataclasses.replace(settings, master_key=first, keys_dir=tmp_path / "nokeys")
    runtime = build_runtime(env_settings)
    try:
        assert keys.initialise_master_key(runtime) == "master key version 1 (existing, env)"
        kept_id, kept_key, kept_wrapped = make_data_key(runtime, KEPT)
        make_data_key(runtime, SHREDDED)

        outcome = keys.shred_year_key(runtime, SHREDDED, NOW)
        assert outcome.year_key_destroyed_now
        assert not outcome.complete
        assert "VAULT_MASTER_KEY_PREVIOUS" in (outcome.rotation.pending_operator_action or "")
    finally:
        runtime.engine.dispose()

    second = keys.generate_master_key_material()
    rotating = build_runtime(
        dataclasses.replace(env_settings, master_key=second, master_key_previous=first)
    )
    try:
        rotation = keys.finish_master_rotation(rotating, NOW, force=False)
        assert rotation.new_version == 2
        assert rotation.pending_operator_action is not None  # the old key is still configured
        assert open_data_key(rotating, kept_id, KEPT, kept_wrapped) == kept_key
    finally:
        rotating.engine.dispose()

    rotated = build_runtime(dataclasses.replace(env_settings, master_key=second))
    try:
        done = keys.finish_master_rotation(rotated, NOW, force=False)
        assert done.destroyed_versions == (1,) and done.pending_operator_action is None
        assert open_data_key(rotated, kept_id, KEPT, kept_wrapped) == kept_key
    finally:
        rotated.engine.dispose()
    assert len(base64.b64decode(second)) == 32


def test_a_worker_forgets_a_master_key_another_process_retired(runtime: Runtime) -> None:
    """Each gunicorn worker has its own keyring: a rotation elsewhere must not leave the old
    master key in this one's memory."""
    recording_id, key, wrapped = make_data_key(runtime, KEPT)
    worker = dataclasses.replace(runtime, keyring=Keyring(master_key_provider(runtime.settings)))
    assert open_data_key(worker, recording_id, KEPT, wrapped) == key
    with runtime.sessions() as session:
        old = runtime.keyring.current_version(session)
        assert old is not None
        old_fingerprint = old.fingerprint
    # Retired, its file not yet destroyed (the shred's third step is still to run).
    with runtime.sessions() as session, session.begin():
        runtime.keyring.rotate_master(session, NOW)
    assert open_data_key(worker, recording_id, KEPT, wrapped) == key
    assert old_fingerprint not in worker.keyring._master_keys
