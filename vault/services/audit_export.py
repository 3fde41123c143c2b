"""Exports of the audit log for the auditor, and their verification away from the server.

An export is bound to a signed checkpoint: it first signs one over the log as it stands
(``audit_checkpoints.make_checkpoint``; the latest one serves when nothing happened since),
and holds the events that checkpoint covers and no later one, so the count, the first and
last numbers and the head named in the manifest describe exactly the events that follow,
however many acts are recorded while the export streams. The export itself is an audit
event, recorded and committed before the first byte leaves; its details are the manifest,
so the manifest of any export can be fetched again from the chain (``manifest_of``).

Two formats, both written row by row:

- JSON Lines, the format to verify: a first line ``{"manifest": …}``, then one event a line
  in canonical JSON with what the chain covers of it (``audit_chain.entry_of``), its
  ``entry_hash`` and the ``previous_hash`` it links to. An export without a filter holds
  every event from the first to the checkpoint's last: ``verify_export`` recomputes the
  links and the checkpoint's Merkle root from them. A filtered export holds a selection, so
  each of its events also carries its ``inclusion_proof``, the RFC 6962 audit path that
  puts its hash at its place under the checkpoint's root.
- CSV, for spreadsheets: the same columns flattened, ``details`` as canonical JSON text.
  Every cell that a spreadsheet would read as a formula is neutralised.

Memory stays flat in the number of events exported; the proofs of a filtered export are
computed for ``_PROOF_BATCH`` selected events at a time, each batch in one pass over the
entry hashes the checkpoint covers.

Personal request details (address, user agent, a data subject's free text) never leave: only
the event's commitment to them, which reveals nothing without the salt kept on the server.

The period is given as dates in the school's time zone (whole days; ``until`` includes its
day) or as instants with an explicit offset (``until`` excludes its instant), the API's
conventions for dates and timestamps.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from vault import merkle, signing
from vault.keyring import Keyring
from vault.models import AuditEvent
from vault.services import audit, audit_chain, audit_checkpoints
from vault.services.accounts import find_user
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction, Outcome
from vault.services.audit_chain import Damage, Verdict
from vault.services.audit_checkpoints import ChainDamaged, SignedCheckpoint
from vault.services.errors import N_, NotFound, ValidationFailed
from vault.services.runtime import Runtime

MANIFEST_VERSION = "recvault-audit-export-v1"
FILTER_FIELDS = ("since", "until", "actor", "recording", "action", "outcome")
COLUMNS = (
    "seq",
    "occurred_at",
    "action",
    "outcome",
    "actor_id",
    "recording_id",
    "object_id",
    "details",
    "context_commitment",
    "entry_hash",
    "previous_hash",
)
LINK_FIELDS = frozenset({"entry_hash", "previous_hash"})
ENTRY_FIELDS = frozenset(COLUMNS) - LINK_FIELDS
PROOF_FIELD = "inclusion_proof"
# A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV injection):
# an event's text could then fetch a URL or run a command on the auditor's machine.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Excel reads a CSV without a byte-order mark in the machine's legacy code page.
CSV_BOM = "\ufeff"
_BATCH = 1000
_PROOF_BATCH = 10_000
_FLUSH_BYTES = 64 * 1024

BAD_MOMENT = N_("Give a date (YYYY-MM-DD) or a time with its offset (2026-11-18T08:30:00Z).")
PERIOD_REVERSED = N_("The end of the period must come after its start.")
UNKNOWN_ACCOUNT = N_("No account has this username.")
BAD_RECORDING = N_("This is not a recording id.")
UNKNOWN_ACTION = N_("There is no such audited action.")
UNKNOWN_OUTCOME = N_("The outcome is success, denied or failure.")
UNKNOWN_FORMAT = N_("The format is jsonl or csv.")
NO_MANIFEST = N_("The file is not a JSON Lines audit export: its first line is no manifest.")
NO_PUBLIC_KEY = N_(
    "This is not an audit public key (PEM, or the answer of /api/v1/audit/public-key)."
)


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


@dataclass(frozen=True)
class AuditFilter:
    """Which events an export holds; every criterion given must match."""

    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    actor_id: uuid.UUID | None = None
    recording_id: uuid.UUID | None = None
    action: str | None = None
    outcome: str | None = None

    @property
    def contiguous(self) -> bool:
        """Without a criterion, an export is a run of consecutive events."""
        return self == AuditFilter()

    def as_json(self) -> dict[str, str | None]:
        return {
            "since": audit_chain.utc_text(self.since) if self.since else None,
            "until": audit_chain.utc_text(self.until) if self.until else None,
            "actor_id": str(self.actor_id) if self.actor_id else None,
            "recording_id": str(self.recording_id) if self.recording_id else None,
            "action": self.action,
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AuditFilter:
        def instant(name: str) -> datetime | None:
            value = raw.get(name)
            return datetime.fromisoformat(value) if value else None

        def identifier(name: str) -> uuid.UUID | None:
            value = raw.get(name)
            return uuid.UUID(value) if value else None

        return cls(
            since=instant("since"),
            until=instant("until"),
            actor_id=identifier("actor_id"),
            recording_id=identifier("recording_id"),
            action=raw.get("action") or None,
            outcome=raw.get("outcome") or None,
        )

    def admits(self, entry: Mapping[str, Any]) -> bool:
        """Whether an exported event (as ``audit_chain.entry_of`` gives it) matches."""
        moment = datetime.fromisoformat(entry["occurred_at"])
        wanted = self.as_json()
        return (
            (self.since is None or moment >= self.since)
            and (self.until is None or moment < self.until)
            and all(
                wanted[name] is None or entry.get(name) == wanted[name]
                for name in ("actor_id", "recording_id", "action", "outcome")
            )
        )


@dataclass(frozen=True)
class ExportRequest:
    audit_filter: AuditFilter
    export_format: ExportFormat = ExportFormat.JSONL


def parse_request(session: Session, raw: Mapping[str, str | None], zone: ZoneInfo) -> ExportRequest:
    """The filter and format from the API's query or the console's options; every wrong
    value is reported at once, under its own name."""
    errors: dict[str, list[str]] = {}

    def fail(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    def text(name: str) -> str | None:
        value = (raw.get(name) or "").strip()
        return value or None

    since = _moment(text("since"), zone, end_of_day=False, fail=lambda m: fail("since", m))
    until = _moment(text("until"), zone, end_of_day=True, fail=lambda m: fail("until", m))
    if since is not None and until is not None and since >= until:
        fail("until", PERIOD_REVERSED)
    actor_id = _account(session, text("actor"), fail=lambda m: fail("actor", m))
    recording_id = None
    if (recording := text("recording")) is not None:
        try:
            recording_id = uuid.UUID(recording)
        except ValueError:
            fail("recording", BAD_RECORDING)
    action = text("action")
    if action is not None and action not in {member.value for member in AuditAction}:
        fail("action", UNKNOWN_ACTION)
    outcome = text("outcome")
    if outcome is not None and outcome not in {member.value for member in Outcome}:
        fail("outcome", UNKNOWN_OUTCOME)
    export_format = ExportFormat.JSONL
    if (requested := text("format")) is not None:
        try:
            export_format = ExportFormat(requested)
        except ValueError:
            fail("format", UNKNOWN_FORMAT)
    if errors:
        raise ValidationFailed(errors)
    audit_filter = AuditFilter(since, until, actor_id, recording_id, action, outcome)
    return ExportRequest(audit_filter, export_format)


def _moment(
    value: str | None, zone: ZoneInfo, *, end_of_day: bool, fail: Callable[[str], None]
) -> datetime | None:
    """A date names its whole day in the school's zone; an instant must carry its offset,
    because a bare time of day would be read in one zone by one reader and in another by
    the next."""
    if value is None:
        return None
    try:
        if len(value) == len("YYYY-MM-DD"):
            day = date.fromisoformat(value) + timedelta(days=1 if end_of_day else 0)
            return datetime.combine(day, time(), tzinfo=zone)
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        fail(BAD_MOMENT)
        return None
    if moment.tzinfo is None:
        fail(BAD_MOMENT)
        return None
    return moment


def _account(
    session: Session, value: str | None, *, fail: Callable[[str], None]
) -> uuid.UUID | None:
    """An account id as given (the account may since have been removed), or a username."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        pass
    user = find_user(session, value)
    if user is None:
        fail(UNKNOWN_ACCOUNT)
        return None
    return user.id


@dataclass(frozen=True)
class Manifest:
    """What an export holds and the state of the chain it was taken from."""

    audit_filter: AuditFilter
    export_format: ExportFormat
    count: int
    first_seq: int | None
    last_seq: int | None
    head_seq: int
    head_hash: str
    export_seq: int = 0
    exported_at: datetime | None = None
    # The newest signed checkpoint when the export was taken (``audit_checkpoints``), to
    # check the head against offline with the audit public key; None before the first.
    latest_checkpoint: dict[str, Any] | None = None

    def details(self) -> dict[str, Any]:
        """The export event's details: the manifest as the chain keeps it."""
        return {
            "filter": self.audit_filter.as_json(),
            "format": self.export_format.value,
            "count": self.count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "latest_checkpoint": self.latest_checkpoint,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            **self.details(),
            "contiguous": self.audit_filter.contiguous,
            "export_seq": self.export_seq,
            "exported_at": audit_chain.utc_text(self.exported_at) if self.exported_at else None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Manifest:
        exported_at = raw.get("exported_at")
        return cls(
            audit_filter=AuditFilter.from_json(raw["filter"]),
            export_format=ExportFormat(raw["format"]),
            count=int(raw["count"]),
            first_seq=None if raw["first_seq"] is None else int(raw["first_seq"]),
            last_seq=None if raw["last_seq"] is None else int(raw["last_seq"]),
            head_seq=int(raw["head_seq"]),
            head_hash=str(raw["head_hash"]),
            export_seq=int(raw.get("export_seq") or 0),
            exported_at=datetime.fromisoformat(exported_at) if exported_at else None,
            latest_checkpoint=raw.get("latest_checkpoint"),
        )


def matching(audit_filter: AuditFilter, head_seq: int) -> Select[Any]:
    query = select(AuditEvent).where(AuditEvent.seq <= head_seq)
    if audit_filter.since is not None:
        query = query.where(AuditEvent.occurred_at >= audit_filter.since)
    if audit_filter.until is not None:
        query = query.where(AuditEvent.occurred_at < audit_filter.until)
    if audit_filter.actor_id is not None:
        query = query.where(AuditEvent.actor_id == audit_filter.actor_id)
    if audit_filter.recording_id is not None:
        query = query.where(AuditEvent.recording_id == audit_filter.recording_id)
    if audit_filter.action is not None:
        query = query.where(AuditEvent.action == audit_filter.action)
    if audit_filter.outcome is not None:
        query = query.where(AuditEvent.outcome == audit_filter.outcome)
    return query


def start(
    session: Session, actor: Actor, wanted: ExportRequest, keyring: Keyring, now: datetime
) -> Manifest:
    """Bind the export to a checkpoint signed now, record it as an event and commit.

    The event is committed before anything is sent: an export broken off half-way has
    still left the server in part, and the log says so. A chain damaged since the last
    checkpoint gets no new signature (``ChainDamaged``): the export then stops at the last
    checkpoint that holds, and ``recvault audit verify`` names the damage.
    """
    try:
        with session.begin_nested():
            audit_checkpoints.make_checkpoint(session, keyring, now)
    except ChainDamaged:
        pass
    checkpoint = audit_checkpoints.latest(session)
    head_seq, head_hash = (
        (checkpoint.tree_size, checkpoint.head_hash)
        if checkpoint
        else (0, audit_chain.GENESIS_HASH)
    )
    selected = matching(wanted.audit_filter, head_seq).subquery()
    count, first_seq, last_seq = session.execute(
        select(func.count(), func.min(selected.c.seq), func.max(selected.c.seq))
    ).one()
    manifest = Manifest(
        wanted.audit_filter,
        wanted.export_format,
        count,
        first_seq,
        last_seq,
        head_seq,
        head_hash,
        latest_checkpoint=audit_checkpoints.stored(checkpoint).as_json() if checkpoint else None,
    )
    event = audit.record(
        session, audit.by(actor, AuditAction.AUDIT_EXPORTED, details=manifest.details())
    )
    session.commit()
    return replace(
        manifest,
        export_seq=audit_chain.committed_number(session, event),
        exported_at=event.occurred_at,
    )


def manifest_of(session: Session, export_seq: int) -> Manifest:
    """The manifest of an earlier export, read back from its event in the chain."""
    event = session.scalars(
        select(AuditEvent).where(
            AuditEvent.seq == export_seq, AuditEvent.action == AuditAction.AUDIT_EXPORTED.value
        )
    ).one_or_none()
    if event is None:
        raise NotFound()
    return Manifest.from_json(
        {
            **event.details,
            "export_seq": event.seq,
            "exported_at": audit_chain.utc_text(event.occurred_at),
        }
    )


def exported_events(
    session: Session, manifest: Manifest, seqs: tuple[int, int] | None = None
) -> Iterator[dict[str, Any]]:
    """The export's events in chain order (those numbered ``seqs[0]`` to ``seqs[1]`` if
    given), each with the hash it links to, read in batches so that memory stays flat
    however long the log is."""
    previous = aliased(AuditEvent)
    query = matching(manifest.audit_filter, manifest.head_seq)
    if seqs is not None:
        query = query.where(AuditEvent.seq >= seqs[0], AuditEvent.seq <= seqs[1])
    rows = session.execute(
        query.add_columns(previous.entry_hash)
        .outerjoin(previous, previous.seq == AuditEvent.seq - 1)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=_BATCH)
    )
    for event, previous_hash in rows:
        yield {
            **audit_chain.entry_of(event),
            "entry_hash": event.entry_hash,
            "previous_hash": audit_chain.GENESIS_HASH if event.seq == 1 else previous_hash,
        }


def _proven_events(session: Session, manifest: Manifest) -> Iterator[dict[str, Any]]:
    """A filtered export's events, each with its audit path under the checkpoint's root.

    The proofs of a batch of selected events name a set of subtrees; one streamed pass over
    the entry hashes the checkpoint covers computes them all (``merkle.subtree_roots``).
    """
    size = manifest.head_seq
    # After a retention purge the tree's purged part is known by the frontier of the
    # checkpoint it stopped at; every proof of a later event needs only that of it.
    start = audit_chain.start_of(session)
    purged = start.purged if start is not None else 0
    boundary = audit_checkpoints.frontier_at(session, purged) if purged else None
    after = 0
    while True:
        batch = list(
            session.scalars(
                matching(manifest.audit_filter, size)
                .with_only_columns(audit_chain.LINKED_SEQ)
                .where(AuditEvent.seq > after)
                .order_by(AuditEvent.seq)
                .limit(_PROOF_BATCH)
            )
        )
        if not batch:
            return
        wanted = {span for seq in batch for span in merkle.inclusion_ranges(seq - 1, size)}
        hashes = session.scalars(
            select(audit_chain.LINKED_HASH)
            .where(AuditEvent.seq > purged, AuditEvent.seq <= size)
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=audit_checkpoints.BATCH)
        )
        roots = merkle.subtree_roots(
            (bytes.fromhex(value) for value in hashes),
            wanted,
            boundary,
        )
        for event in exported_events(session, manifest, (batch[0], batch[-1])):
            spans = merkle.inclusion_ranges(event["seq"] - 1, size)
            yield {**event, PROOF_FIELD: [roots[span].hex() for span in spans]}
        after = batch[-1]


def neutralised(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading quote before a formula's first
    character (the OWASP rule), which the spreadsheet hides and does not evaluate."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return neutralised(audit_chain.canonical(value))
    return neutralised(str(value))


def _chunks(texts: Iterator[str]) -> Iterator[bytes]:
    """Texts gathered into chunks of about ``_FLUSH_BYTES``, so a long export is neither
    held in memory nor sent a line per write."""
    pending: list[str] = []
    size = 0
    for text in texts:
        pending.append(text)
        size += len(text)
        if size >= _FLUSH_BYTES:
            yield "".join(pending).encode()
            pending, size = [], 0
    if pending:
        yield "".join(pending).encode()


def _jsonl(session: Session, manifest: Manifest) -> Iterator[str]:
    yield audit_chain.canonical({"manifest": manifest.as_json()}) + "\n"
    contiguous = manifest.audit_filter.contiguous
    events = exported_events if contiguous else _proven_events
    for event in events(session, manifest):
        yield audit_chain.canonical(event) + "\n"


def _csv(session: Session, manifest: Manifest) -> Iterator[str]:
    line = io.StringIO()
    writer = csv.writer(line)

    def row(cells: list[str]) -> str:
        line.seek(0)
        line.truncate()
        writer.writerow(cells)
        return line.getvalue()

    yield CSV_BOM + row(list(COLUMNS))
    for event in exported_events(session, manifest):
        yield row([_cell(event[column]) for column in COLUMNS])


def lines(session: Session, manifest: Manifest) -> Iterator[bytes]:
    """The export's bytes, in chunks, for a response or a file."""
    texts = _jsonl if manifest.export_format is ExportFormat.JSONL else _csv
    return _chunks(texts(session, manifest))


def export_as_operator(
    runtime: Runtime, raw: Mapping[str, str | None], target: BinaryIO
) -> Manifest:
    """`recvault audit export`: the export written to ``target``, under the operator."""
    with runtime.sessions() as session:
        wanted = parse_request(session, raw, runtime.settings.zone)
        manifest = start(session, OPERATOR, wanted, runtime.keyring, runtime.clock())
        for chunk in lines(session, manifest):
            target.write(chunk)
    return manifest


# -- verification, away from the server -------------------------------------------------------


@dataclass(frozen=True)
class ExportVerdict(Verdict):
    """A verdict on an export file. A filtered export (``contiguous`` false) holds events
    that are not consecutive: each is proved to be in the log by its audit path under the
    checkpoint's root instead of by the links to its neighbours.

    ``checkpoint`` is the checkpoint the export is bound to; ``signed`` says whether its
    signature was checked against a public key the verifier holds, without which a forger
    who rewrote the whole file could also have rewritten the checkpoint. ``compared`` counts
    the kept checkpoints the file could be compared with.
    """

    contiguous: bool = True
    expected: int = 0
    checkpoint: SignedCheckpoint | None = None
    signed: bool = False
    compared: int = 0
    detail: str = ""


def public_key_from_file(text: str) -> bytes:
    """The audit public key from a PEM file or the saved answer of the public-key endpoint."""
    pem = text
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("public_key_pem"), str):
        pem = answer["public_key_pem"]
    try:
        return signing.public_key_from_pem(pem)
    except (ValueError, TypeError):
        raise ValidationFailed({"public_key": [NO_PUBLIC_KEY]}) from None


def _parsed(raw: bytes, *, proof: bool) -> dict[str, Any] | None:
    """An exported event, or None for a line that is not one."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    fields = {*COLUMNS, PROOF_FIELD} if proof else set(COLUMNS)
    if not isinstance(event, dict) or set(event) != fields:
        return None
    if type(event["seq"]) is not int or not all(_is_hash(event[name]) for name in LINK_FIELDS):
        return None
    if proof and not (
        isinstance(event[PROOF_FIELD], list) and all(map(_is_hash, event[PROOF_FIELD]))
    ):
        return None
    try:
        datetime.fromisoformat(event["occurred_at"])
    except (TypeError, ValueError):
        return None
    return event


def _is_hash(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != len(audit_chain.GENESIS_HASH):
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _hashes_to_itself(event: Mapping[str, Any], previous: str) -> bool:
    entry = {name: event[name] for name in ENTRY_FIELDS}
    return bool(audit_chain.link(entry, previous) == event["entry_hash"])


def _events(handle: BinaryIO, *, proof: bool) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(position, event) for each line after the manifest; blank lines carry nothing."""
    for position, raw in enumerate(handle):
        if raw.strip():
            yield position, _parsed(raw, proof=proof)


@dataclass(frozen=True)
class _Bound:
    """What the file claims to be bound to, and what the verifier holds against it."""

    manifest: Manifest
    checkpoint: SignedCheckpoint | None
    # Kept checkpoints (the officer's), by the number of events they cover.
    kept: Mapping[int, SignedCheckpoint]
    signed: bool

    def verdict(
        self,
        count: int,
        head: str,
        damage: Damage | None = None,
        at: int | None = None,
        **more: Any,
    ) -> ExportVerdict:
        return ExportVerdict(
            count,
            head,
            damage,
            at,
            contiguous=self.manifest.audit_filter.contiguous,
            expected=self.manifest.count,
            checkpoint=self.checkpoint,
            signed=self.signed,
            **more,
        )


def verify_export(
    path: Path, public_key: bytes | None = None, witnesses: Sequence[SignedCheckpoint] = ()
) -> ExportVerdict:
    """Check a JSON Lines export against itself, its manifest and the checkpoint it is bound
    to; with ``public_key``, that checkpoint's signature too, and with ``witnesses``, the
    checkpoints an officer kept. The first damage found is reported."""
    with path.open("rb") as handle:
        try:
            first = json.loads(handle.readline())
            manifest = Manifest.from_json(first["manifest"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValidationFailed({"export": [NO_MANIFEST]}) from None
        bound, refusal = _bind(manifest, public_key, witnesses)
        if refusal is not None:
            return refusal
        if manifest.audit_filter.contiguous:
            return _verify_run(path, _events(handle, proof=False), bound)
        return _verify_selection(_events(handle, proof=True), bound)


def _bind(
    manifest: Manifest, public_key: bytes | None, witnesses: Sequence[SignedCheckpoint]
) -> tuple[_Bound, ExportVerdict | None]:
    """The export's checkpoint and the kept ones, each signature checked when a key is given;
    a refusal when one of them cannot stand."""
    checkpoint = None
    if manifest.latest_checkpoint is not None:
        try:
            checkpoint = audit_checkpoints.parsed(manifest.latest_checkpoint)
        except (ValueError, TypeError):
            checkpoint = None
    bound = _Bound(manifest, checkpoint, {}, signed=public_key is not None)
    start = audit_chain.GENESIS_HASH

    def refused(damage: Damage, at: int, detail: str) -> tuple[_Bound, ExportVerdict]:
        return bound, bound.verdict(0, start, damage, at, detail=detail)

    size = manifest.head_seq
    if checkpoint is None:
        if manifest.count and (public_key is not None or manifest.latest_checkpoint is not None):
            return refused(Damage.INCONSISTENT_CHECKPOINT, size, "no signed checkpoint is named")
    elif checkpoint.tree_size != size or checkpoint.head_hash != manifest.head_hash:
        return refused(
            Damage.INCONSISTENT_CHECKPOINT, size, "the manifest's head is not its checkpoint's"
        )
    elif public_key is not None and not audit_checkpoints.signature_holds(checkpoint, public_key):
        return refused(
            Damage.BAD_SIGNATURE, size, "the export's checkpoint is not signed by the key"
        )
    for kept in witnesses:
        if public_key is not None and not audit_checkpoints.signature_holds(kept, public_key):
            return refused(
                Damage.BAD_SIGNATURE, kept.tree_size, "a kept checkpoint is not signed by the key"
            )
        if (
            checkpoint is not None
            and kept.tree_size > size
            and _instant(kept.created_at) < _instant(checkpoint.created_at)
        ):
            return refused(
                Damage.ROLLED_BACK,
                size + 1,
                f"a checkpoint kept earlier covers {kept.tree_size} events; the export, "
                f"bound to a later one, only {size}",
            )
    kept_sizes = {kept.tree_size: kept for kept in witnesses if kept.tree_size <= size}
    return replace(bound, kept=kept_sizes), None


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)


def _verify_run(
    path: Path, events: Iterator[tuple[int, dict[str, Any] | None]], bound: _Bound
) -> ExportVerdict:
    """Consecutive events: every link is recomputed from the first event's previous hash
    (the genesis value when the export starts at the chain's first event), and from the
    first event on, the Merkle root at the checkpoint's size and at each kept size."""
    manifest = bound.manifest
    expected_seq = manifest.first_seq or 1
    last_seq = manifest.last_seq or 0
    previous: str | None = None
    count = compared = 0
    frontier = merkle.Frontier() if expected_seq == 1 else None

    def verdict(
        damage: Damage | None = None, at: int | None = None, detail: str = ""
    ) -> ExportVerdict:
        head = previous or audit_chain.GENESIS_HASH
        return bound.verdict(count, head, damage, at, compared=compared, detail=detail)

    for position, event in events:
        if event is None:
            return verdict(Damage.EDITED, expected_seq)
        seq = event["seq"]
        if seq > expected_seq:
            moved = _appears_after(path, position, expected_seq)
            return verdict(Damage.OUT_OF_ORDER if moved else Damage.DELETED, expected_seq)
        if seq < expected_seq or seq > last_seq:
            return verdict(Damage.INSERTED, seq)
        if previous is None:
            previous = audit_chain.GENESIS_HASH if seq == 1 else event["previous_hash"]
        if event["previous_hash"] != previous or not _hashes_to_itself(event, previous):
            return verdict(Damage.EDITED, seq)
        previous, count, expected_seq = event["entry_hash"], count + 1, expected_seq + 1
        if frontier is not None:
            frontier.append(bytes.fromhex(event["entry_hash"]))
            kept = bound.kept.get(seq)
            if kept is not None:
                compared += 1
                if kept.root_hash != frontier.root().hex() or kept.head_hash != previous:
                    return verdict(
                        Damage.ROLLED_BACK,
                        seq,
                        f"the first {seq} events are not those of a checkpoint kept earlier",
                    )
    if count < manifest.count:
        return verdict(Damage.TRUNCATED, expected_seq)
    if count and last_seq == manifest.head_seq and previous != manifest.head_hash:
        # Lines rewritten and linked anew all through: the last no longer is the head
        # the chain had when the export was taken.
        return verdict(Damage.HEAD_MISMATCH, last_seq)
    checkpoint = bound.checkpoint
    if (
        checkpoint is not None
        and frontier is not None
        and frontier.size == checkpoint.tree_size
        and frontier.root().hex() != checkpoint.root_hash
    ):
        return verdict(
            Damage.INCONSISTENT_CHECKPOINT,
            checkpoint.tree_size,
            "the events do not have the root their checkpoint signs",
        )
    return verdict()


def _appears_after(path: Path, position: int, seq: int) -> bool:
    """Whether event ``seq`` is further down the file (moved) rather than gone; a second
    pass over the file, taken only once damage is found."""
    with path.open("rb") as handle:
        handle.readline()
        return any(
            event is not None and event["seq"] == seq
            for at, event in _events(handle, proof=False)
            if at > position
        )


def _verify_selection(
    events: Iterator[tuple[int, dict[str, Any] | None]], bound: _Bound
) -> ExportVerdict:
    """Events picked by a filter: each must hash to itself given the hash it states to link
    to, match the filter, come in order, link to its neighbour when that is exported too,
    and be proved by its audit path to sit at its number under the checkpoint's root; the
    count and the first and last numbers must be the manifest's."""
    manifest, checkpoint = bound.manifest, bound.checkpoint
    last_seq: int | None = None
    last_hash = audit_chain.GENESIS_HASH
    count = 0
    kept = bound.kept.get(checkpoint.tree_size) if checkpoint is not None else None
    compared = int(kept is not None)

    def verdict(
        damage: Damage | None = None, at: int | None = None, detail: str = ""
    ) -> ExportVerdict:
        return bound.verdict(count, last_hash, damage, at, compared=compared, detail=detail)

    if (
        checkpoint is not None
        and kept is not None
        and (kept.root_hash != checkpoint.root_hash or kept.head_hash != checkpoint.head_hash)
    ):
        return verdict(
            Damage.ROLLED_BACK,
            checkpoint.tree_size,
            "the export's checkpoint differs from one kept earlier of the same size",
        )
    for _, event in events:
        if event is None:
            return verdict(Damage.EDITED)
        seq = event["seq"]
        if last_seq is None and seq != manifest.first_seq:
            first = manifest.first_seq
            missing = first is not None and seq > first
            return verdict(
                Damage.DELETED if missing else Damage.INSERTED, first if missing else seq
            )
        if last_seq is not None and seq <= last_seq:
            return verdict(Damage.INSERTED if seq == last_seq else Damage.OUT_OF_ORDER, seq)
        beyond = manifest.last_seq is None or seq > manifest.last_seq
        if beyond or not manifest.audit_filter.admits(event):
            return verdict(Damage.INSERTED, seq)
        neighbour = last_seq is not None and seq == last_seq + 1
        if not _hashes_to_itself(event, event["previous_hash"]) or (
            neighbour and event["previous_hash"] != last_hash
        ):
            return verdict(Damage.EDITED, seq)
        if checkpoint is not None and not merkle.verify_inclusion(
            bytes.fromhex(event["entry_hash"]),
            seq - 1,
            checkpoint.tree_size,
            [bytes.fromhex(node) for node in event[PROOF_FIELD]],
            bytes.fromhex(checkpoint.root_hash),
        ):
            return verdict(
                Damage.EDITED, seq, "its audit path does not lead to the checkpoint's root"
            )
        last_seq, last_hash, count = seq, event["entry_hash"], count + 1
    if count < manifest.count:
        cut = last_seq != manifest.last_seq
        return verdict(Damage.TRUNCATED if cut else Damage.DELETED)
    return verdict()
