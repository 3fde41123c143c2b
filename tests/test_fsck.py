"""`recvault fsck` finds and repairs disagreements between the database and the storage."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.support.console import Console
from tests.support.people import add_person
from tests.support.recording_support import register, sample_media, store_plaintext
from vault.models import Recording
from vault.services import fsck
from vault.services.runtime import Runtime


def run_fsck(recvault: Console, *args: str) -> tuple[int, str]:
    result = recvault("fsck", *args)
    return result.exit_code, result.output


def test_fsck_finds_and_repairs_planted_problems(runtime: Runtime, recvault: Console) -> None:
    add_person(runtime, "skolotaja", "teacher")
    healthy = register(runtime, "skolotaja")
    store_plaintext(runtime, healthy, sample_media(3_000))
    assert run_fsck(recvault) == (0, "database and storage agree\n")

    missing = register(runtime, "skolotaja")
    store_plaintext(runtime, missing, sample_media(3_000))
    retagged = register(runtime, "skolotaja")
    store_plaintext(runtime, retagged, sample_media(3_000))
    with runtime.sessions() as session:
        missing_key = session.get(Recording, missing).object_key  # type: ignore[union-attr]
        retagged_key = session.get(Recording, retagged).object_key  # type: ignore[union-attr]
        school_year = session.get(Recording, healthy).school_year  # type: ignore[union-attr]
    assert missing_key and retagged_key
    runtime.store.delete(missing_key)
    orphan_key = f"recordings/{school_year}/{uuid.uuid4()}"
    runtime.store.put(orphan_key, b"ciphertext nobody references", {})
    runtime.store.set_tags(retagged_key, {"classification": "restricted"})

    code, report = run_fsck(recvault)
    assert code == 1
    assert f"missing_object\t{missing_key}" in report
    assert f"orphan_object\t{orphan_key}" in report
    assert f"tag_mismatch\t{retagged_key}" in report
    assert orphan_key in set(runtime.store.iter_keys("recordings/"))

    code, report = run_fsck(recvault, "--repair")
    assert code == 0
    assert report.count("(repaired)") == 3
    assert orphan_key not in set(runtime.store.iter_keys("recordings/"))
    assert runtime.store.get_tags(retagged_key)["retain-until"]
    with runtime.sessions() as session:
        assert session.get(Recording, missing).status == "failed"  # type: ignore[union-attr]
        assert session.get(Recording, healthy).status == "available"  # type: ignore[union-attr]
    assert run_fsck(recvault) == (0, "database and storage agree\n")


# The store dates its multipart writes by the machine's clock; fsck compares them.
@pytest.mark.machine_clock
def test_fsck_aborts_a_write_nobody_owns(runtime: Runtime) -> None:
    key = f"recordings/2026-2027/{uuid.uuid4()}"
    upload_id = runtime.store.start_multipart(key, {"classification": "restricted"})
    runtime.store.put_part(key, upload_id, 1, b"ciphertext part")
    later = runtime.clock() + timedelta(hours=25)
    findings = fsck.check(runtime, later, repair=False)
    assert [(f.kind, f.object_key) for f in findings] == [(fsck.FindingKind.STALE_WRITE, key)]
    repaired = fsck.check(runtime, later, repair=True)
    assert repaired[0].repaired
    assert fsck.check(runtime, later, repair=False) == []
