"""Signed checkpoints of the audit chain: what they cover, their consistency proofs, the
officer's API, and the tampering they catch: a forged signature, a changed stored root and a
database rolled back to before a checkpoint the officer kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, delete, select, update

from tests.support.audit_trail import append_events, record
from tests.support.clock import SteppingClock
from tests.support.console import Console
from tests.support.people import Person, add_person, signed_in
from vault import merkle, signing
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent
from vault.services import account_admin, audit, audit_chain, audit_checkpoints, lifecycle
from vault.services.audit_chain import Damage
from vault.services.runtime import Runtime


def checkpoint(runtime: Runtime) -> audit_checkpoints.SignedCheckpoint:
    made = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert made is not None
    return made


def entry_hashes(runtime: Runtime) -> list[bytes]:
    with runtime.sessions() as session:
        found = session.scalars(select(audit_chain.LINKED_HASH).order_by(AuditEvent.seq))
        return [bytes.fromhex(value) for value in found]


def report(
    runtime: Runtime, kept: list[audit_checkpoints.SignedCheckpoint] | None = None
) -> audit_checkpoints.CheckpointReport:
    with runtime.sessions() as session:
        return audit_checkpoints.verify(session, runtime.keyring, kept or [])


@contextmanager
def tampering(runtime: Runtime) -> Iterator[Connection]:
    """A connection that writes past the database's own guard, as whoever holds the database
    files or a superuser would (PostgreSQL's trigger refuses everyone else)."""
    with runtime.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield connection


def roll_back_to(runtime: Runtime, seq: int) -> None:
    """The database as a backup taken after event ``seq`` would restore it."""
    with tampering(runtime) as connection:
        last = connection.execute(
            select(AuditEvent.entry_hash).where(AuditEvent.seq == seq)
        ).scalar_one()
        connection.execute(delete(AuditEvent).where(AuditEvent.seq > seq))
        connection.execute(delete(AuditCheckpoint).where(AuditCheckpoint.tree_size >= seq))
        connection.execute(update(AuditChainHead).values(seq=seq, entry_hash=last))


def forged_with_another_key(kept: audit_checkpoints.SignedCheckpoint) -> dict[str, Any]:
    other = signing.new_private_key()
    return {
        **kept.as_json(),
        "signature": signing.sign(other, kept.signed_body.encode()).hex(),
        "key_fingerprint": signing.fingerprint(signing.public_key_of(other)),
    }


@pytest.fixture
def auditor(runtime: Runtime) -> Person:
    return add_person(runtime, "revidente", "auditor", name="Dace Liepa")


# -- making them ------------------------------------------------------------------------------


def test_a_checkpoint_covers_the_events_before_it_and_is_signed(runtime: Runtime) -> None:
    append_events(runtime, 7)
    leaves = entry_hashes(runtime)
    made = checkpoint(runtime)
    assert made.tree_size == len(leaves)
    assert made.root_hash == merkle.root(leaves).hex()
    assert made.head_hash == leaves[-1].hex()
    body = json.loads(made.signed_body)
    assert body == {
        "format": "recording-vault/audit-checkpoint/v1",
        "tree_size": made.tree_size,
        "root_hash": made.root_hash,
        "head_hash": made.head_hash,
        "created_at": made.created_at,
    }
    assert made.signed_body == signing.canonical_json(body)
    with runtime.sessions() as session:
        identity = audit_checkpoints.public_identity(session, runtime.keyring)
        recorded = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert made.key_fingerprint == identity.fingerprint
    assert signing.verify(
        identity.public_key, made.signed_body.encode(), bytes.fromhex(made.signature)
    )
    # Its own record comes after it, for the next checkpoint to cover.
    assert recorded is not None and recorded.seq == made.tree_size + 1
    assert recorded.action == "audit:checkpoint_created"
    assert recorded.details["root_hash"] == made.root_hash


def test_none_is_made_without_activity_and_the_next_extends_the_last(runtime: Runtime) -> None:
    append_events(runtime, 3)
    first = checkpoint(runtime)
    assert audit_checkpoints.checkpoint_now(runtime, runtime.clock()) is None
    append_events(runtime, 5)
    second = checkpoint(runtime)
    leaves = entry_hashes(runtime)[: second.tree_size]
    assert second.tree_size == first.tree_size + 1 + 5
    assert second.root_hash == merkle.root(leaves).hex()
    assert report(runtime).intact


def test_consistency_proofs_between_checkpoints_verify(runtime: Runtime) -> None:
    made = []
    for count in (1, 4, 9, 2):
        append_events(runtime, count)
        made.append(checkpoint(runtime))
    with runtime.sessions() as session:
        rows = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)))
        for older_index, older in enumerate(rows):
            for newer in rows[older_index:]:
                proof = audit_checkpoints.consistency(session, older, newer)
                assert merkle.verify_consistency(
                    older.tree_size,
                    newer.tree_size,
                    bytes.fromhex(older.root_hash),
                    bytes.fromhex(newer.root_hash),
                    [bytes.fromhex(node) for node in proof],
                )
    assert [row.tree_size for row in rows] == [item.tree_size for item in made]


def test_no_checkpoint_is_signed_over_a_damaged_chain(runtime: Runtime) -> None:
    append_events(runtime, 3)
    first = checkpoint(runtime)
    append_events(runtime, 4)
    with tampering(runtime) as connection:
        connection.execute(
            update(AuditEvent).where(AuditEvent.seq == first.tree_size + 3).values(outcome="denied")
        )
    with pytest.raises(audit_checkpoints.ChainDamaged) as refused:
        audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert refused.value.params == {"seq": first.tree_size + 3}


def test_the_lifecycle_run_makes_one_when_there_was_activity(
    runtime: Runtime, recvault: Console, clock: SteppingClock
) -> None:
    append_events(runtime, 2)
    done = recvault("lifecycle", "run")
    assert done.exit_code == 0, done.output
    with runtime.sessions() as session:
        made = audit_checkpoints.latest(session)
        assert made is not None
        own = session.scalars(
            select(AuditEvent.seq).where(AuditEvent.action == "audit:checkpoint_created")
        ).one()
    # It covers every event before its own record: what the run's earlier steps recorded too.
    assert own == made.tree_size + 1
    assert f"signed an audit checkpoint of {made.tree_size} events" in done.output

    clock.advance(timedelta(hours=1))
    quiet = lifecycle.run(runtime, runtime.clock(), dry_run=False)
    assert quiet.checkpoint_tree_size is None
    append_events(runtime, 1)
    appended = recorded(runtime)
    busy = lifecycle.run(runtime, runtime.clock(), dry_run=False)
    assert busy.checkpoint_tree_size is not None and busy.checkpoint_tree_size > appended


# -- the console ------------------------------------------------------------------------------


def test_the_console_makes_and_verifies_checkpoints(runtime: Runtime, recvault: Console) -> None:
    append_events(runtime, 4)
    made = recvault("audit", "checkpoint")
    assert made.exit_code == 0, made.output
    with runtime.sessions() as session:
        latest = audit_checkpoints.latest(session)
    assert latest is not None
    assert f"audit checkpoint: {latest.tree_size} events" in made.output
    assert f"root: {latest.root_hash}" in made.output
    assert f"key fingerprint: {latest.key_fingerprint}" in made.output
    again = recvault("audit", "checkpoint")
    assert again.exit_code == 0 and "none made" in again.output

    shown = recvault("audit", "verify")
    assert shown.exit_code == 0, shown.output
    assert "audit checkpoints: 1 stored, 0 kept; all verify" in shown.output
    assert f"latest checkpoint: {latest.tree_size} events" in shown.output


def test_a_correct_series_and_kept_copies_verify(
    app: Flask, runtime: Runtime, recvault: Console, auditor: Person, tmp_path: Path
) -> None:
    for count in (3, 2, 6):
        append_events(runtime, count)
        checkpoint(runtime)
    downloaded = signed_in(app, auditor).get("/api/v1/audit/checkpoints")
    kept = tmp_path / "kept.json"
    kept.write_text(downloaded.get_data(as_text=True), encoding="utf-8")
    append_events(runtime, 2)
    checkpoint(runtime)
    shown = recvault("audit", "verify", "--witness", str(kept))
    assert shown.exit_code == 0, shown.output
    assert "audit checkpoints: 4 stored, 3 kept; all verify" in shown.output


# -- tampering --------------------------------------------------------------------------------


def test_a_checkpoint_signed_with_another_key_is_a_bad_signature(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    append_events(runtime, 5)
    genuine = checkpoint(runtime)
    forged = forged_with_another_key(genuine)
    kept = tmp_path / "forged.json"
    kept.write_text(json.dumps(forged), encoding="utf-8")
    shown = recvault("audit", "verify", "--witness", str(kept))
    assert shown.exit_code == 1
    assert f"audit checkpoint damage at event {genuine.tree_size}: bad_signature" in shown.output
    assert forged["key_fingerprint"] in shown.output

    # The same forgery among the stored checkpoints.
    with tampering(runtime) as connection:
        connection.execute(update(AuditCheckpoint).values(signature=forged["signature"]))
    found = report(runtime).findings
    assert [(f.damage, f.at_seq, f.witnessed) for f in found] == [
        (Damage.BAD_SIGNATURE, genuine.tree_size, False)
    ]


def test_a_changed_stored_root_is_inconsistent(runtime: Runtime, recvault: Console) -> None:
    append_events(runtime, 4)
    first = checkpoint(runtime)
    append_events(runtime, 3)
    checkpoint(runtime)
    with tampering(runtime) as connection:
        connection.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size == first.tree_size)
            .values(root_hash="ab" * 32)
        )
    found = report(runtime).findings
    assert [(f.damage, f.tree_size) for f in found] == [
        (Damage.INCONSISTENT_CHECKPOINT, first.tree_size)
    ]
    shown = recvault("audit", "verify")
    assert shown.exit_code == 1
    assert "inconsistent_checkpoint" in shown.output
    assert "audit chain intact" in shown.output


def test_a_rewritten_history_with_recomputed_links_contradicts_the_checkpoints(
    runtime: Runtime,
) -> None:
    append_events(runtime, 6)
    made = checkpoint(runtime)
    # Whoever controls the database edits event 3 and relinks every event after it: the
    # chain verifies again, the signed root does not.
    with tampering(runtime) as connection:
        events = connection.execute(select(AuditEvent).order_by(AuditEvent.seq)).all()
        previous = audit_chain.GENESIS_HASH
        for event in events:
            entry = {
                "seq": event.seq,
                "occurred_at": audit_chain.utc_text(event.occurred_at),
                "action": event.action,
                "outcome": "denied" if event.seq == 3 else event.outcome,
                "actor_id": str(event.actor_id) if event.actor_id else None,
                "recording_id": str(event.recording_id) if event.recording_id else None,
                "object_id": event.object_id,
                "details": event.details,
                "context_commitment": event.context_commitment,
            }
            previous = audit_chain.link(entry, previous)
            connection.execute(
                update(AuditEvent)
                .where(AuditEvent.seq == event.seq)
                .values(outcome=entry["outcome"], entry_hash=previous)
            )
        connection.execute(update(AuditChainHead).values(entry_hash=previous))
    with runtime.sessions() as session:
        assert audit_chain.verify(session).intact
    found = report(runtime).findings
    assert [(f.damage, f.at_seq, f.tree_size) for f in found] == [
        (Damage.INCONSISTENT_CHECKPOINT, 1, made.tree_size)
    ]


def test_a_database_rolled_back_past_a_kept_checkpoint_is_caught(
    app: Flask, runtime: Runtime, recvault: Console, auditor: Person, tmp_path: Path
) -> None:
    append_events(runtime, 4)
    early = checkpoint(runtime)
    append_events(runtime, 5)
    kept_one = checkpoint(runtime)
    downloaded = signed_in(app, auditor).get("/api/v1/audit/checkpoints")
    kept = tmp_path / "kept.json"
    kept.write_text(downloaded.get_data(as_text=True), encoding="utf-8")
    append_events(runtime, 2)

    # Restored from a backup taken three events after the early checkpoint was recorded.
    restored_to = early.tree_size + 3
    roll_back_to(runtime, restored_to)
    shown = recvault("audit", "verify", "--witness", str(kept))
    assert shown.exit_code == 1
    assert "audit chain intact" in shown.output
    assert (
        f"audit checkpoint damage at event {restored_to + 1}: rolled_back; the kept checkpoint "
        f"of {kept_one.tree_size} events"
    ) in shown.output

    # New events since then fill the log past the kept size, with another history.
    append_events(runtime, 8)
    found = report(runtime, audit_checkpoints.witnessed(json.loads(kept.read_text())))
    assert [(f.damage, f.at_seq, f.tree_size) for f in found.findings] == [
        (Damage.ROLLED_BACK, early.tree_size + 1, kept_one.tree_size)
    ]


def test_a_witness_file_must_hold_checkpoints(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    append_events(runtime, 1)
    checkpoint(runtime)
    for content in ("not json", json.dumps({"checkpoints": []}), json.dumps([{"a": 1}])):
        kept = tmp_path / "kept.json"
        kept.write_text(content, encoding="utf-8")
        shown = recvault("audit", "verify", "--witness", str(kept))
        assert shown.exit_code == 1
        assert "not JSON" in shown.output or "not a file of audit checkpoints" in shown.output


# -- the officer's API ------------------------------------------------------------------------


def test_only_the_auditor_reads_the_checkpoints_and_the_key(
    app: Flask, runtime: Runtime, auditor: Person, director: Person, teacher: Person
) -> None:
    for count in (2, 3, 4):
        append_events(runtime, count)
        checkpoint(runtime)
    with runtime.sessions() as session:
        identity = audit_checkpoints.public_identity(session, runtime.keyring)
        rows = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)))
    browser = signed_in(app, auditor)
    listed = browser.get("/api/v1/audit/checkpoints")
    assert listed.status_code == 200
    items = listed.get_json()["checkpoints"]
    assert [item["tree_size"] for item in items] == [row.tree_size for row in rows[::-1]]
    assert items[0]["signed_body"] == rows[-1].body
    assert items[0]["signature"] == rows[-1].signature
    assert items[0]["key_fingerprint"] == identity.fingerprint
    key = browser.get("/api/v1/audit/public-key")
    assert key.status_code == 200
    assert key.get_json()["fingerprint"] == identity.fingerprint
    assert signing.public_key_from_pem(key.get_json()["public_key_pem"]) == (identity.public_key)

    page = browser.get("/api/v1/audit/checkpoints?limit=1&before=" + str(rows[-1].tree_size))
    assert [item["tree_size"] for item in page.get_json()["checkpoints"]] == [rows[1].tree_size]
    proved = browser.get(f"/api/v1/audit/checkpoints?consistency_from={rows[0].tree_size}")
    consistency = proved.get_json()["consistency"]
    assert consistency["to_tree_size"] == rows[-1].tree_size
    assert merkle.verify_consistency(
        rows[0].tree_size,
        rows[-1].tree_size,
        bytes.fromhex(rows[0].root_hash),
        bytes.fromhex(rows[-1].root_hash),
        [bytes.fromhex(node) for node in consistency["proof"]],
    )
    assert browser.get("/api/v1/audit/checkpoints?consistency_from=2000").status_code == 404
    assert browser.get("/api/v1/audit/checkpoints?limit=zero").status_code == 422

    token = account_admin.issue_token(runtime, "revidente", "offline", "1d", runtime.clock())
    with_token = app.test_client().get(
        "/api/v1/audit/checkpoints", headers={"Authorization": f"Bearer {token}"}
    )
    assert with_token.status_code == 200
    assert len(with_token.get_json()["checkpoints"]) == len(rows)

    for other in (director, teacher):
        refused = signed_in(app, other)
        assert refused.get("/api/v1/audit/checkpoints").status_code == 403
        assert refused.get("/api/v1/audit/public-key").status_code == 403


def checkpoint_sizes(runtime: Runtime) -> list[int]:
    with runtime.sessions() as session:
        query = select(AuditCheckpoint.tree_size).order_by(AuditCheckpoint.tree_size)
        return list(session.scalars(query))


def test_a_checkpoint_is_signed_at_every_thousandth_event_as_it_commits(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_chain, "CHECKPOINT_INTERVAL", 10)
    start = recorded(runtime)
    append_events(runtime, 25)
    multiples = [size for size in range(start + 1, start + 26) if size % 10 == 0]
    # Each checkpoint is an event too, so later multiples fall a little earlier in the acts.
    assert checkpoint_sizes(runtime)[: len(multiples)] == multiples
    assert report(runtime).intact


def test_a_later_checkpoint_signs_at_each_multiple_it_passes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = recorded(runtime)
    append_events(runtime, 25)
    monkeypatch.setattr(audit_chain, "CHECKPOINT_INTERVAL", 10)
    head = checkpoint(runtime).tree_size
    assert head == start + 25
    multiples = [size for size in range(start + 1, head) if size % 10 == 0]
    assert checkpoint_sizes(runtime) == [*multiples, head]
    assert report(runtime).intact


def test_a_thousandth_event_that_rolls_back_signs_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_chain, "CHECKPOINT_INTERVAL", 1)
    with runtime.sessions() as session:
        audit.record(session, audit.Event(audit.AuditAction.SYSTEM_INIT))
        session.rollback()
    assert checkpoint_sizes(runtime) == []
    committed = record(runtime)
    # Every size is a multiple of one: the catch-up signs each, up to the committed event.
    assert checkpoint_sizes(runtime) == list(range(1, committed + 1))


def recorded(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
        return head.seq if head is not None else 0
