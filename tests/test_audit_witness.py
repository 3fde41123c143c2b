"""Witnesses outside the server: each signed checkpoint is e-mailed to the data-protection
officer and written to a witness store; the copies the officer keeps catch a database
rolled back past them; a witness that fails is recorded and harms nothing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from tests.conftest import storage_kind
from tests.support.audit_trail import append_events
from tests.support.clock import SteppingClock
from tests.support.console import Console
from tests.support.mailbox import Mailbox, smtp_server
from tests.support.processes import free_port
from tests.support.seaweed import SeaweedServer
from vault.app import build_runtime
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent
from vault.services import audit_chain, audit_checkpoints, audit_witness
from vault.services.audit import AuditAction
from vault.services.runtime import Runtime

DPO = "Datu aizsardzības speciālists <dpo@skola.example.lv>"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as served:
        yield served


@pytest.fixture
def witness_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A store apart from the recordings': a second bucket on the S3 pass."""
    if storage_kind() == "s3":
        server: SeaweedServer = request.getfixturevalue("s3_env")
        return server.new_bucket()
    return (tmp_path / "witness").as_uri()


def witnessed_runtime(
    runtime: Runtime, clock: SteppingClock, witness_url: str, smtp_port: int
) -> Iterator[Runtime]:
    changed = dataclasses.replace(
        runtime.settings,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        mail_from="vault@skola.example.lv",
        dpo_contact=DPO,
        school_name="Rīgas 1. vidusskola",
        audit_witness_url=witness_url,
    )
    witnessed = build_runtime(changed, clock, runtime.passwords)
    audit_witness.prepare(witnessed)
    try:
        yield witnessed
    finally:
        witnessed.upload_workers.shutdown()
        witnessed.engine.dispose()


@pytest.fixture
def witnessed(
    runtime: Runtime, clock: SteppingClock, witness_url: str, mailbox: tuple[Mailbox, int]
) -> Iterator[Runtime]:
    yield from witnessed_runtime(runtime, clock, witness_url, mailbox[1])


def witness_events(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == AuditAction.AUDIT_CHECKPOINT_WITNESSED.value
            )
        )
        return [(row.details["channel"], row.outcome) for row in rows]


def kept_from_mail(mailbox: Mailbox, target: Path) -> dict[str, object]:
    """What the officer does: save the JSON of the message to a file."""
    body = mailbox.messages[-1].get_payload(decode=True)
    assert isinstance(body, bytes)
    document = next(line for line in body.decode().splitlines() if line.startswith("{"))
    target.write_text(document, encoding="utf-8")
    kept: dict[str, object] = json.loads(document)
    return kept


def test_each_checkpoint_is_mailed_to_the_officer_and_stored_apart(
    witnessed: Runtime, mailbox: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, _ = mailbox
    append_events(witnessed, 3)
    made = audit_checkpoints.checkpoint_now(witnessed, witnessed.clock())
    assert made is not None
    assert len(box.messages) == 1
    message = box.messages[0]
    assert message["To"] == "dpo@skola.example.lv"
    subject = str(make_header(decode_header(message["Subject"])))
    assert f"checkpoint, {made.tree_size}" in subject and "Rīgas 1. vidusskola" in subject
    kept = kept_from_mail(box, tmp_path / "kept.json")
    assert kept == made.as_json()
    store = witnessed.witness_store
    assert store is not None
    (key,) = store.iter_keys(audit_witness.WITNESS_PREFIX)
    assert key == audit_witness.witness_key(made)
    assert json.loads(b"".join(store.read_range(key))) == made.as_json()
    assert witness_events(witnessed) == [("mail", "success"), ("store", "success")]
    # Witnessing is not activity of its own: no checkpoint is signed for it.
    assert audit_checkpoints.checkpoint_now(witnessed, witnessed.clock()) is None


def test_the_mailed_copy_catches_a_database_rolled_back_past_it(
    witnessed: Runtime, mailbox: tuple[Mailbox, int], tmp_path: Path, recvault: Console
) -> None:
    append_events(witnessed, 4)
    made = audit_checkpoints.checkpoint_now(witnessed, witnessed.clock())
    assert made is not None
    kept = tmp_path / "kept.json"
    kept_from_mail(mailbox[0], kept)
    assert recvault("audit", "verify", "--witness", str(kept)).exit_code == 0

    # Restored from a backup taken two events before the checkpoint, with its own
    # checkpoints gone too: nothing on the server remembers the checkpoint any more.
    with witnessed.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.execute(delete(AuditCheckpoint))
        connection.execute(delete(AuditEvent).where(AuditEvent.seq > made.tree_size - 2))
        last = connection.execute(
            select(AuditEvent.seq, AuditEvent.entry_hash).order_by(AuditEvent.seq.desc())
        ).first()
        assert last is not None
        connection.execute(update(AuditChainHead).values(seq=last.seq, entry_hash=last.entry_hash))
    shown = recvault("audit", "verify", "--witness", str(kept))
    assert shown.exit_code == 1
    assert f"audit checkpoint damage at event {made.tree_size - 1}: rolled_back" in shown.output


def test_a_thousandth_event_sends_its_checkpoint_to_the_witnesses(
    witnessed: Runtime, mailbox: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_chain, "CHECKPOINT_INTERVAL", 5)
    append_events(witnessed, 6)
    assert mailbox[0].messages, "no checkpoint was mailed"


def test_a_mail_server_that_is_down_is_recorded_and_harms_nothing(
    runtime: Runtime, clock: SteppingClock, witness_url: str
) -> None:
    for unreachable in witnessed_runtime(runtime, clock, witness_url, free_port()):
        append_events(unreachable, 2)
        made = audit_checkpoints.checkpoint_now(unreachable, unreachable.clock())
        assert made is not None
        assert witness_events(unreachable) == [("mail", "failure"), ("store", "success")]
