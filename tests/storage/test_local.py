"""What only the local directory store must guarantee: containment, modes, atomic files."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from storage_backends.base import (
    LifecycleRules,
    ObjectNotFound,
    StorageConflict,
    StorageError,
    StoreUnavailable,
)
from storage_backends.local import LocalStore
from tests.support.clock import MachineClock

# The store dates what it keeps by the machine's clock (file times, S3's Initiated), and
# so does whatever reads them back: these comparisons need that clock, not the test clock.
machine_clock = MachineClock()

KEY = "recordings/2025-2026/0b9d6c1e"


def all_paths(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]


def test_files_are_0600_and_directories_0700(local_store: LocalStore) -> None:
    old_umask = os.umask(0o022)  # a permissive umask must not widen anything
    try:
        local_store.put(KEY, b"ciphertext", {"classification": "restricted"})
        upload_id = local_store.start_multipart("recordings/2025-2026/pending", {})
        local_store.put_part("recordings/2025-2026/pending", upload_id, 1, b"part")
        local_store.ensure_ready(LifecycleRules())
    finally:
        os.umask(old_umask)
    paths = all_paths(local_store.root)
    assert any(path.name.endswith(".part") for path in paths)
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path} has mode {oct(mode)}"


def test_ensure_ready_tightens_an_existing_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    LocalStore(root).ensure_ready(LifecycleRules())
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_no_temporary_file_is_left_behind(local_store: LocalStore) -> None:
    local_store.put(KEY, b"a", {"k": "v"})
    local_store.set_tags(KEY, {"k": "w"})
    upload_id = local_store.start_multipart("recordings/x", {})
    part = local_store.put_part("recordings/x", upload_id, 1, b"b")
    local_store.complete_multipart("recordings/x", upload_id, [part])
    aborted = local_store.start_multipart("recordings/y", {})
    local_store.abort_multipart("recordings/y", aborted)
    assert list((local_store.root / "tmp").iterdir()) == []
    assert list((local_store.root / "uploads").iterdir()) == []


def test_a_symlinked_directory_cannot_redirect_writes(
    local_store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"not the vault's")
    (local_store.root / "objects" / "recordings").symlink_to(outside)

    with pytest.raises(StorageConflict, match="escapes"):
        local_store.put("recordings/victim", b"overwrite", {})
    with pytest.raises(StorageConflict, match="escapes"):
        local_store.put("recordings/new", b"plant", {})
    with pytest.raises(StorageConflict, match="escapes"):
        local_store.read_range("recordings/victim")
    with pytest.raises(StorageConflict, match="escapes"):
        local_store.head("recordings/victim")
    with pytest.raises(StorageConflict, match="escapes"):
        local_store.delete("recordings/victim")
    assert list(local_store.iter_keys()) == []
    assert list(local_store.iter_keys("recordings/")) == []
    assert sorted(path.name for path in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"not the vault's"


def test_a_symlinked_object_is_never_followed(local_store: LocalStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret")
    objects = local_store.root / "objects"
    (objects / "recordings").mkdir(mode=0o700)
    (objects / "recordings" / "link").symlink_to(secret)

    with pytest.raises(StorageConflict):
        local_store.read_range("recordings/link")
    with pytest.raises(StorageConflict):
        local_store.head("recordings/link")
    with pytest.raises(StorageConflict):
        local_store.put("recordings/link", b"vault data", {})
    with pytest.raises(StorageConflict):
        local_store.set_tags("recordings/link", {})
    assert list(local_store.iter_keys()) == []
    assert secret.read_bytes() == b"host secret"


def test_a_symlinked_store_root_is_allowed(tmp_path: Path) -> None:
    real = tmp_path / "disk"
    real.mkdir()
    link = tmp_path / "vault-store"
    link.symlink_to(real)
    store = LocalStore(link, min_part_size=1)
    store.ensure_ready(LifecycleRules())
    store.put(KEY, b"x", {})
    assert (real / "objects" / KEY).read_bytes() == b"x"


def test_upload_ids_cannot_carry_a_path(local_store: LocalStore) -> None:
    for upload_id in ("../../objects", "/etc", "0" * 31, "g" * 32, ""):
        with pytest.raises(StorageConflict):
            local_store.put_part(KEY, upload_id, 1, b"x")
        with pytest.raises(StorageConflict):
            local_store.abort_multipart(KEY, upload_id)


def test_an_upload_belongs_to_its_key(local_store: LocalStore) -> None:
    upload_id = local_store.start_multipart(KEY, {})
    part = local_store.put_part(KEY, upload_id, 1, b"x")
    with pytest.raises(StorageConflict, match="another key"):
        local_store.complete_multipart("recordings/other", upload_id, [part])
    with pytest.raises(StorageConflict, match="another key"):
        local_store.abort_multipart("recordings/other", upload_id)


def test_a_key_that_is_also_a_directory_is_a_conflict(local_store: LocalStore) -> None:
    # Unlike S3, a directory cannot hold both "a" and "a/b"; the vault's keys never nest.
    local_store.put("exports/a/b", b"nested", {})
    with pytest.raises(StorageConflict, match="collides"):
        local_store.put("exports/a", b"flat", {})
    with pytest.raises(ObjectNotFound):
        local_store.head("exports/a")
    local_store.delete("exports/a")  # nothing there: a no-op, the nested key stays
    assert list(local_store.iter_keys()) == ["exports/a/b"]
    assert list((local_store.root / "tmp").iterdir()) == []


def test_a_store_that_was_never_initialised_is_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "nowhere")
    with pytest.raises(StoreUnavailable, match="ensure_ready"):
        store.check()
    with pytest.raises(StoreUnavailable):
        store.put(KEY, b"x", {})
    with pytest.raises(StoreUnavailable):
        store.iter_keys()
    assert not (tmp_path / "nowhere").exists()


def test_a_read_only_store_is_unavailable(local_store: LocalStore) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits, so simulate what EROFS/EACCES look like instead.
        (local_store.root / "tmp").rmdir()
        (local_store.root / "tmp").write_bytes(b"")
    else:
        (local_store.root / "tmp").chmod(0o500)
    with pytest.raises(StoreUnavailable):
        local_store.check()


def test_stale_writes_use_the_recorded_start(local_store: LocalStore) -> None:
    upload_id = local_store.start_multipart(KEY, {})
    (stale,) = local_store.list_stale_multipart(machine_clock() + timedelta(seconds=1))
    assert stale.upload_id == upload_id
    assert local_store.list_stale_multipart(stale.started) == []
    # A directory that is not an upload is ignored rather than trusted.
    (local_store.root / "uploads" / "not-an-upload").mkdir()
    assert len(local_store.list_stale_multipart(machine_clock() + timedelta(seconds=1))) == 1


def test_min_part_size_is_configurable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_part_size"):
        LocalStore(tmp_path, min_part_size=0)
    assert LocalStore(tmp_path, min_part_size=1).min_part_size == 1


def test_damaged_metadata_is_a_storage_error(local_store: LocalStore) -> None:
    local_store.put(KEY, b"x", {"k": "v"})
    (local_store.root / "tags" / KEY).write_bytes(b"{not json")
    with pytest.raises(StorageError, match="damaged"):
        local_store.get_tags(KEY)
    upload_id = local_store.start_multipart(KEY, {})
    (local_store.root / "uploads" / upload_id / "upload.json").write_bytes(b"[]")
    with pytest.raises(StorageError, match="damaged"):
        local_store.put_part(KEY, upload_id, 1, b"x")
    with pytest.raises(StorageError, match="damaged"):
        local_store.list_stale_multipart(machine_clock())
    (local_store.root / "lifecycle.json").write_bytes(b'{"years": [{"school_year": 1}]}')
    with pytest.raises(StorageError, match="damaged"):
        local_store.get_lifecycle_rules()


@pytest.mark.file_times
def test_ensure_ready_sweeps_what_a_crash_left_in_tmp(local_store: LocalStore) -> None:
    tmp = local_store.root / "tmp"
    old_file, old_dir, fresh = tmp / "old.tmp", tmp / "old.upload", tmp / "fresh.tmp"
    old_file.write_bytes(b"ciphertext")
    old_dir.mkdir()
    (old_dir / "upload.json").write_bytes(b"{}")
    fresh.write_bytes(b"being written")
    two_days_ago = machine_clock.timestamp() - 2 * 24 * 3600
    for path in (old_file, old_dir):
        os.utime(path, (two_days_ago, two_days_ago))
    local_store.ensure_ready(LifecycleRules())
    assert sorted(path.name for path in tmp.iterdir()) == ["fresh.tmp"]
