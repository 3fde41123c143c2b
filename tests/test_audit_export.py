"""Exports of the audit log: JSON Lines and CSV, their manifest, the filters, formula cells made
inert, personal details kept out, and `recvault audit verify --export` on doctored copies."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import ORMExecuteState

from tests.support.audit_trail import record
from tests.support.clock import RIGA
from tests.support.console import Console
from tests.support.people import Person, add_person, sign_in, signed_in
from tests.support.recording_support import register
from vault import merkle, signing
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent
from vault.services import audit_chain, audit_checkpoints, audit_export
from vault.services.actors import OPERATOR
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.audit_export import COLUMNS, Manifest
from vault.services.errors import ValidationFailed
from vault.services.runtime import Runtime

ADDRESS = "203.0.113.45"
USER_AGENT = "Mozilla/5.0 (X11; Linux) ExportProbe/1.0"
REQUEST_TEXT = "Lūdzu dzēst manu ierakstu"
FORMULA = '=HYPERLINK("http://x","y")'
DANGEROUS = [FORMULA, "+1+1", "-2", "@SUM(A1)", "\tcmd", "\rcmd"]


def head(runtime: Runtime) -> tuple[int, str]:
    with runtime.sessions() as session:
        row = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
        assert row is not None
        return row.seq, row.entry_hash


def export(runtime: Runtime, **raw: str) -> tuple[Manifest, bytes]:
    with runtime.sessions() as session:
        wanted = audit_export.parse_request(session, raw, runtime.settings.zone)
        manifest = audit_export.start(session, OPERATOR, wanted, runtime.keyring, runtime.clock())
        return manifest, b"".join(audit_export.lines(session, manifest))


def jsonl(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first, *rest = data.decode().splitlines()
    return json.loads(first)["manifest"], [json.loads(line) for line in rest]


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_json_lines_hold_the_manifest_and_every_event_linked(runtime: Runtime) -> None:
    for index in range(4):
        record(runtime, details={"index": index, "played": [[0, 6.5]]}, actor_id=uuid.uuid4())
    head_seq, head_hash = head(runtime)
    manifest, data = export(runtime)
    shown, events = jsonl(data)
    assert shown == manifest.as_json()
    assert (shown["count"], shown["first_seq"], shown["last_seq"]) == (head_seq, 1, head_seq)
    assert (shown["head_seq"], shown["head_hash"], shown["contiguous"]) == (
        head_seq,
        head_hash,
        True,
    )
    assert [e["seq"] for e in events] == list(range(1, head_seq + 1))
    assert all(list(e) == sorted(COLUMNS) for e in events)
    previous = audit_chain.GENESIS_HASH
    for line in events:
        entry = {name: line[name] for name in audit_export.ENTRY_FIELDS}
        assert line["previous_hash"] == previous
        assert audit_chain.link(entry, previous) == line["entry_hash"]
        previous = line["entry_hash"]
    assert previous == head_hash
    assert events[-1]["details"] == {"index": 3, "played": [[0, 6.5]]}


def test_the_export_is_itself_an_event_with_its_filter_and_count(runtime: Runtime) -> None:
    record(runtime, outcome=Outcome.DENIED)
    manifest, _ = export(runtime, outcome="denied")
    with runtime.sessions() as session:
        exported = session.scalars(select(AuditEvent).where(AuditEvent.seq == manifest.export_seq))
        row = exported.one()
        assert row.action == "audit:exported"
        assert row.details["count"] == manifest.count == 1
        assert row.details["filter"]["outcome"] == "denied"
        assert audit_export.manifest_of(session, manifest.export_seq) == manifest
        assert audit_chain.verify(session).intact
    # Between the events exported and the export's own: the checkpoint it is bound to.
    assert manifest.export_seq == manifest.head_seq + 2


def test_an_export_is_bound_to_a_checkpoint_signed_as_it_starts(runtime: Runtime) -> None:
    record(runtime)
    earlier = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert earlier is not None
    record(runtime)
    record(runtime)
    head_seq, head_hash = head(runtime)
    manifest, data = export(runtime)
    assert manifest.latest_checkpoint is not None
    bound = audit_checkpoints.parsed(manifest.latest_checkpoint)
    assert bound.tree_size == head_seq == manifest.head_seq == manifest.last_seq
    assert bound.head_hash == head_hash == manifest.head_hash
    assert bound.tree_size > earlier.tree_size
    assert jsonl(data)[0]["latest_checkpoint"] == manifest.latest_checkpoint
    with runtime.sessions() as session:
        assert audit_export.manifest_of(session, manifest.export_seq) == manifest
        assert audit_checkpoints.latest(session) is not None
    # Nothing happened since but the checkpoint and the export: the same checkpoint serves.
    again, _ = export(runtime)
    assert again.latest_checkpoint is not None
    assert again.latest_checkpoint["tree_size"] == manifest.export_seq


def test_csv_has_the_columns_and_every_formula_cell_is_inert(runtime: Runtime) -> None:
    for text in DANGEROUS:
        record(runtime, object_id=text, details={"note": text})
    _, data = export(runtime, format="csv")
    assert data.startswith(audit_export.CSV_BOM.encode())
    header, *rows = csv_rows(data)
    assert header == list(COLUMNS)
    assert all(len(row) == len(COLUMNS) for row in rows)
    for row in rows:
        for cell in row:
            assert not cell.startswith(audit_export.FORMULA_STARTS), row
    object_ids = [row[COLUMNS.index("object_id")] for row in rows[-len(DANGEROUS) :]]
    assert object_ids == ["'" + text for text in DANGEROUS]
    details = [json.loads(row[COLUMNS.index("details")]) for row in rows[-len(DANGEROUS) :]]
    assert details == [{"note": text} for text in DANGEROUS]


def test_a_recording_titled_as_a_formula_exports_as_inert_text(
    runtime: Runtime, teacher: Person
) -> None:
    recording_id = register(runtime, teacher.username, title=FORMULA)
    _, data = export(runtime, format="csv")
    rows = csv_rows(data)[1:]
    for row in rows:
        for cell in row:
            assert not cell.startswith(audit_export.FORMULA_STARTS), row
    registered = [row for row in rows if row[COLUMNS.index("action")] == "recording:registered"]
    assert [row[COLUMNS.index("recording_id")] for row in registered] == [str(recording_id)]
    # The log names recordings by id: the title reaches neither format.
    assert b"HYPERLINK" not in data
    assert b"HYPERLINK" not in export(runtime)[1]


def test_neutralising_a_cell() -> None:
    for text in DANGEROUS:
        assert audit_export.neutralised(text) == "'" + text
    for text in ("plain", "'=already quoted", "{}", "", "2026-11-18T08:30:00+00:00"):
        assert audit_export.neutralised(text) == text


def test_personal_details_are_never_exported(runtime: Runtime, app: Flask) -> None:
    context = RequestContext(ip_address=ADDRESS, user_agent=USER_AGENT)
    record(runtime, context=context, request_text=REQUEST_TEXT, actor_id=uuid.uuid4())
    auditor = add_person(runtime, "auditore", "auditor")
    client = app.test_client()
    sign_in(client, auditor, ip=ADDRESS)
    downloads = [export(runtime)[1], export(runtime, format="csv")[1]]
    for wanted in ("jsonl", "csv"):
        # Closing the response ends the stream, as a WSGI server does once it is sent.
        with client.get(
            f"/api/v1/audit/events?format={wanted}",
            environ_base={"REMOTE_ADDR": ADDRESS},
            headers={"User-Agent": USER_AGENT},
        ) as response:
            assert response.status_code == 200
            downloads.append(response.get_data())
    for data in downloads:
        for personal in (ADDRESS, USER_AGENT, "ExportProbe", REQUEST_TEXT):
            assert personal.encode() not in data
    _, events = jsonl(downloads[0])
    assert any(e["context_commitment"] for e in events)


def test_filters_pick_by_person_recording_action_outcome_and_period(
    runtime: Runtime, teacher: Person
) -> None:
    recording_id = register(runtime, teacher.username)
    someone = uuid.uuid4()
    mine = record(runtime, AuditAction.VIEW_STARTED, actor_id=someone, recording_id=recording_id)
    record(runtime, AuditAction.VIEW_STARTED, actor_id=uuid.uuid4(), outcome=Outcome.DENIED)
    with runtime.sessions() as session:
        teacher_id = session.scalars(
            select(AuditEvent.actor_id).where(AuditEvent.action == "recording:registered")
        ).one()
        moment = session.scalars(select(AuditEvent.occurred_at).where(AuditEvent.seq == mine)).one()

    def picked(**raw: str) -> list[int]:
        manifest, data = export(runtime, **raw)
        _, events = jsonl(data)
        assert manifest.count == len(events) and not manifest.audit_filter.contiguous
        return [e["seq"] for e in events]

    assert picked(actor=str(someone)) == [mine]
    registered = picked(actor=teacher.username, action="recording:registered")
    assert len(registered) == 1 and teacher_id is not None
    assert picked(recording=str(recording_id), action="view:started") == [mine]
    assert len(picked(action="view:started", outcome="denied")) == 1
    assert mine in picked(since=moment.isoformat(), action="view:started")
    assert mine not in picked(until=moment.isoformat(), action="view:started")
    day = moment.astimezone(RIGA).date()
    assert mine in picked(since=day.isoformat(), until=day.isoformat())
    next_day = (day + timedelta(days=1)).isoformat()
    assert picked(since=next_day, action="view:started") == []


def test_bad_filter_values_are_refused_field_by_field(runtime: Runtime) -> None:
    with runtime.sessions() as session, pytest.raises(ValidationFailed) as refused:
        audit_export.parse_request(
            session,
            {
                "since": "18.11.2026",
                "until": "2026-11-18T10:00:00",
                "actor": "nobody-by-this-name",
                "recording": "not-a-uuid",
                "action": "view:watched",
                "outcome": "maybe",
                "format": "xlsx",
            },
            runtime.settings.zone,
        )
    assert set(refused.value.field_errors) == {
        "since",
        "until",
        "actor",
        "recording",
        "action",
        "outcome",
        "format",
    }
    with runtime.sessions() as session, pytest.raises(ValidationFailed) as reversed_period:
        audit_export.parse_request(
            session, {"since": "2026-11-19", "until": "2026-11-18"}, runtime.settings.zone
        )
    assert reversed_period.value.field_errors == {"until": [audit_export.PERIOD_REVERSED]}


def test_the_auditor_downloads_a_stream_and_others_are_refused(
    runtime: Runtime, app: Flask, teacher: Person, director: Person
) -> None:
    auditor = add_person(runtime, "auditore", "auditor")
    client = signed_in(app, auditor)
    response = client.get("/api/v1/audit/events?format=csv", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Cache-Control"] == "no-store"
    export_seq = int(response.headers["X-Audit-Export-Seq"])
    rows = csv_rows(response.get_data())
    response.close()
    manifest = client.get(f"/api/v1/audit/exports/{export_seq}")
    assert manifest.status_code == 200
    assert manifest.json is not None and manifest.json["count"] == len(rows) - 1
    assert manifest.json["format"] == "csv" and manifest.json["export_seq"] == export_seq
    assert f"/api/v1/audit/exports/{export_seq}" in response.headers["Link"]
    assert client.get(f"/api/v1/audit/exports/{export_seq - 1}").status_code == 404
    with client.get("/api/v1/audit/events?action=auth:login_succeeded") as lines:
        shown, events = jsonl(lines.get_data())
        assert lines.mimetype == "application/jsonl"
    assert shown["count"] == len(events) > 0
    for person in (teacher, director):
        refused = signed_in(app, person).get("/api/v1/audit/events")
        assert refused.status_code == 403
        refused_manifest = signed_in(app, person).get(f"/api/v1/audit/exports/{export_seq}")
        assert refused_manifest.status_code == 403


def test_bad_filter_values_answer_422_in_latvian_and_english(runtime: Runtime, app: Flask) -> None:
    auditor = add_person(runtime, "auditore", "auditor")
    client = signed_in(app, auditor)
    latvian = client.get("/api/v1/audit/events?since=vakar&format=xlsx")
    assert latvian.status_code == 422
    assert latvian.mimetype == "application/problem+json"
    assert latvian.json is not None
    assert latvian.json["errors"]["since"] == [
        "Norādiet datumu (GGGG-MM-DD) vai laiku ar tā nobīdi (2026-11-18T08:30:00Z)."
    ]
    assert latvian.json["errors"]["format"] == ["Formāts ir jsonl vai csv."]
    english = client.get("/api/v1/audit/events?outcome=maybe&lang=en")
    assert english.json is not None
    assert english.json["errors"] == {"outcome": [audit_export.UNKNOWN_OUTCOME]}


def test_the_service_reads_the_log_in_batches(runtime: Runtime) -> None:
    record(runtime)
    seen: list[int | None] = []
    with runtime.sessions() as session:
        manifest = audit_export.start(
            session,
            OPERATOR,
            audit_export.ExportRequest(audit_export.AuditFilter()),
            runtime.keyring,
            runtime.clock(),
        )

        @event.listens_for(session, "do_orm_execute")
        def batches(state: ORMExecuteState) -> None:
            seen.append(state.execution_options.get("yield_per"))

        chunks = audit_export.lines(session, manifest)
        next(chunks)
        assert seen == [audit_export._BATCH]
        list(chunks)


# -- the console, and verification of doctored copies -------------------------------------------


def console_export(recvault: Console, target: Path, *options: str) -> dict[str, Any]:
    result = recvault("audit", "export", "--output", str(target), *options)
    assert result.exit_code == 0, result.output
    manifest: dict[str, Any] = json.loads(
        target.with_name(target.name + ".manifest.json").read_text(encoding="utf-8")
    )
    return manifest


def test_the_console_writes_the_export_and_its_manifest(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for _ in range(3):
        record(runtime, context=RequestContext(ip_address=ADDRESS))
    target = tmp_path / "audit.jsonl"
    manifest = console_export(recvault, target)
    shown, events = jsonl(target.read_bytes())
    assert shown == manifest and manifest["count"] == len(events) == manifest["head_seq"]
    with runtime.sessions() as session:
        exported = session.scalars(
            select(AuditEvent).where(AuditEvent.seq == manifest["export_seq"])
        ).one()
    assert exported.action == "audit:exported" and exported.actor_id is None
    assert ADDRESS.encode() not in target.read_bytes()
    spreadsheet = tmp_path / "audit.csv"
    assert console_export(recvault, spreadsheet, "--format", "csv")["format"] == "csv"
    assert csv_rows(spreadsheet.read_bytes())[0] == list(COLUMNS)
    refused = recvault("audit", "export", "--output", str(tmp_path / "x.csv"), "--since", "vakar")
    assert refused.exit_code != 0 and "since" in refused.output
    assert not (tmp_path / "x.csv").exists()


def test_verify_accepts_an_untouched_export(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for _ in range(4):
        record(runtime)
    target = tmp_path / "audit.jsonl"
    manifest = console_export(recvault, target)
    shown = recvault("audit", "verify", "--export", str(target))
    assert shown.exit_code == 0, shown.output
    assert f"audit export intact: {manifest['count']} consecutive events" in shown.output
    assert manifest["head_hash"] in shown.output


def doctor(target: Path, change: str, at: int) -> None:
    """Change the exported event numbered ``at`` the way ``change`` says."""
    manifest, *lines = target.read_bytes().decode().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if json.loads(line)["seq"] == at)
    if change == "edit":
        event = json.loads(lines[index])
        event["object_id"] = "edited"
        lines[index] = audit_chain.canonical(event) + "\n"
    elif change == "delete":
        del lines[index]
    elif change == "swap":
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
    elif change == "truncate":
        del lines[index:]
    elif change == "insert":
        # A forged event that takes the number of a genuine one and links correctly.
        genuine = json.loads(lines[index])
        forged = {**genuine, "object_id": "forged"}
        entry = {name: forged[name] for name in audit_export.ENTRY_FIELDS}
        forged["entry_hash"] = audit_chain.link(entry, genuine["previous_hash"])
        lines.insert(index, audit_chain.canonical(forged) + "\n")
    target.write_text(manifest + "".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "damage"),
    [
        ("edit", "edited"),
        ("delete", "deleted"),
        ("swap", "reordered"),
        ("truncate", "truncated"),
        ("insert", "inserted"),
    ],
)
def test_verify_names_the_first_doctored_event_and_its_kind(
    runtime: Runtime, recvault: Console, tmp_path: Path, change: str, damage: str
) -> None:
    for _ in range(6):
        record(runtime)
    target = tmp_path / "audit.jsonl"
    manifest = console_export(recvault, target)
    at = manifest["last_seq"] - 3
    doctor(target, change, at)
    shown = recvault("audit", "verify", "--export", str(target))
    assert shown.exit_code == 1, shown.output
    assert f"audit export damaged at event {at}: {damage}" in shown.output


def test_a_filtered_export_is_proved_event_by_event_against_its_checkpoint(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for outcome in (Outcome.DENIED, Outcome.SUCCESS, Outcome.DENIED, Outcome.DENIED):
        record(runtime, outcome=outcome)
    target = tmp_path / "denied.jsonl"
    manifest = console_export(recvault, target, "--outcome", "denied")
    assert manifest["count"] == 3 and manifest["contiguous"] is False
    _, events = jsonl(target.read_bytes())
    size = manifest["latest_checkpoint"]["tree_size"]
    root = bytes.fromhex(manifest["latest_checkpoint"]["root_hash"])
    for line in events:
        proof = [bytes.fromhex(node) for node in line["inclusion_proof"]]
        leaf = bytes.fromhex(line["entry_hash"])
        assert merkle.verify_inclusion(leaf, line["seq"] - 1, size, proof, root)
    shown = recvault("audit", "verify", "--export", str(target))
    assert shown.exit_code == 0, shown.output
    assert "3 filtered events" in shown.output and "audit path" in shown.output
    doctor(target, "edit", manifest["last_seq"])
    edited = recvault("audit", "verify", "--export", str(target))
    assert edited.exit_code == 1
    assert f"damaged at event {manifest['last_seq']}: edited" in edited.output


def test_a_filtered_event_rewritten_with_a_fresh_hash_fails_its_proof(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for outcome in (Outcome.DENIED, Outcome.SUCCESS, Outcome.DENIED):
        record(runtime, outcome=outcome, object_id="genuine")
    target = tmp_path / "denied.jsonl"
    manifest = console_export(recvault, target, "--outcome", "denied")
    first_line, *lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    # The forger edits an event and recomputes its own hash from the link it states: the
    # file is then consistent with itself, but the audit path no longer leads to the root.
    forged = json.loads(lines[0])
    forged["object_id"] = "forged"
    entry = {name: forged[name] for name in audit_export.ENTRY_FIELDS}
    forged["entry_hash"] = audit_chain.link(entry, forged["previous_hash"])
    lines[0] = audit_chain.canonical(forged) + "\n"
    target.write_text(first_line + "".join(lines), encoding="utf-8")
    shown = recvault("audit", "verify", "--export", str(target))
    assert shown.exit_code == 1
    assert f"damaged at event {manifest['first_seq']}: edited" in shown.output
    assert "audit path" in shown.output


def public_key_file(runtime: Runtime, target: Path) -> Path:
    with runtime.sessions() as session:
        identity = audit_checkpoints.public_identity(session, runtime.keyring)
    target.write_text(identity.pem, encoding="utf-8")
    return target


def test_with_the_public_key_the_checkpoint_signature_is_checked(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for _ in range(3):
        record(runtime)
    target = tmp_path / "audit.jsonl"
    console_export(recvault, target)
    key = public_key_file(runtime, tmp_path / "audit-key.pem")
    shown = recvault("audit", "verify", "--export", str(target), "--public-key", str(key))
    assert shown.exit_code == 0, shown.output
    assert "its signature verifies under the public key given" in shown.output
    unsigned = recvault("audit", "verify", "--export", str(target))
    assert "NOT checked" in unsigned.output
    # The saved answer of GET /api/v1/audit/public-key serves as well as the PEM.
    answer = tmp_path / "public-key.json"
    answer.write_text(json.dumps({"public_key_pem": key.read_text()}), encoding="utf-8")
    assert (
        recvault("audit", "verify", "--export", str(target), "--public-key", str(answer)).exit_code
        == 0
    )


def test_a_whole_export_rewritten_and_resigned_with_another_key_is_refused(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for _ in range(4):
        record(runtime, object_id="genuine")
    target = tmp_path / "audit.jsonl"
    console_export(recvault, target)
    key = public_key_file(runtime, tmp_path / "audit-key.pem")
    first_line, *lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    manifest = json.loads(first_line)["manifest"]
    # Every event rewritten and relinked, the manifest's head and a checkpoint over the new
    # events made to match, signed with a key the forger holds.
    previous, frontier, rewritten = audit_chain.GENESIS_HASH, merkle.Frontier(), []
    for line in lines:
        event = json.loads(line)
        event["object_id"] = "forged"
        entry = {name: event[name] for name in audit_export.ENTRY_FIELDS}
        event["previous_hash"], event["entry_hash"] = previous, audit_chain.link(entry, previous)
        previous = event["entry_hash"]
        frontier.append(bytes.fromhex(previous))
        rewritten.append(audit_chain.canonical(event) + "\n")
    checkpoint = manifest["latest_checkpoint"]
    body = audit_checkpoints.body_of(
        checkpoint["tree_size"], frontier.root().hex(), previous, checkpoint["created_at"]
    )
    forger = signing.new_private_key()
    manifest["head_hash"] = previous
    manifest["latest_checkpoint"] = {
        **checkpoint,
        "root_hash": frontier.root().hex(),
        "head_hash": previous,
        "signed_body": body,
        "signature": signing.sign(forger, body.encode()).hex(),
    }
    target.write_text(
        audit_chain.canonical({"manifest": manifest}) + "\n" + "".join(rewritten),
        encoding="utf-8",
    )
    # Without the published key the forgery is self-consistent; with it, it is refused.
    assert recvault("audit", "verify", "--export", str(target)).exit_code == 0
    shown = recvault("audit", "verify", "--export", str(target), "--public-key", str(key))
    assert shown.exit_code == 1
    assert f"damaged at event {checkpoint['tree_size']}: bad_signature" in shown.output


def test_an_export_from_a_database_rolled_back_past_a_kept_checkpoint_is_caught(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    for _ in range(3):
        record(runtime)
    kept = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert kept is not None
    witness = tmp_path / "kept.json"
    witness.write_text(json.dumps({"checkpoints": [kept.as_json()]}), encoding="utf-8")
    key = public_key_file(runtime, tmp_path / "audit-key.pem")
    target = tmp_path / "audit.jsonl"
    console_export(recvault, target)
    options = ("--public-key", str(key), "--witness", str(witness))
    honest = recvault("audit", "verify", "--export", str(target), *options)
    assert honest.exit_code == 0, honest.output
    assert "1 given, 1 compared" in honest.output

    # The database goes back to before the kept checkpoint's last events, and new ones are
    # recorded on top; the next export is bound to a fresh, validly signed checkpoint.
    with runtime.sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Past the database's own guards, as a restore from an old backup would be.
            session.execute(sa.text("SET LOCAL session_replication_role = replica"))
        session.execute(delete(AuditCheckpoint))
        session.execute(delete(AuditEvent).where(AuditEvent.seq > kept.tree_size - 2))
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert last is not None
        session.execute(update(AuditChainHead).values(seq=last.seq, entry_hash=last.entry_hash))
    for _ in range(5):
        record(runtime, object_id="after the rollback")
    rolled_back = tmp_path / "rolled-back.jsonl"
    console_export(recvault, rolled_back)
    assert recvault("audit", "verify", "--export", str(rolled_back)).exit_code == 0
    shown = recvault("audit", "verify", "--export", str(rolled_back), *options)
    assert shown.exit_code == 1, shown.output
    assert f"damaged at event {kept.tree_size}: rolled_back" in shown.output


def test_only_json_lines_exports_can_be_verified(recvault: Console, tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    console_export(recvault, target, "--format", "csv")
    shown = recvault("audit", "verify", "--export", str(target))
    assert shown.exit_code == 1 and "first line is no manifest" in shown.output


def test_proofs_are_computed_batch_by_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(11):
        record(runtime, outcome=Outcome.DENIED if index % 3 else Outcome.SUCCESS)
    monkeypatch.setattr(audit_export, "_PROOF_BATCH", 2)
    manifest, data = export(runtime, outcome="denied")
    _, events = jsonl(data)
    assert len(events) == manifest.count > 2
    assert manifest.latest_checkpoint is not None
    size, root = manifest.head_seq, bytes.fromhex(manifest.latest_checkpoint["root_hash"])
    for line in events:
        proof = [bytes.fromhex(node) for node in line["inclusion_proof"]]
        leaf = bytes.fromhex(line["entry_hash"])
        assert merkle.verify_inclusion(leaf, line["seq"] - 1, size, proof, root)
