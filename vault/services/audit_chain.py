"""The audit log's hash chain: every event is linked to the one before it.

Each event gets a gap-free sequence number and
``entry_hash = SHA-256(DOMAIN ‖ canonical JSON of the event ‖ previous entry_hash)``.
Editing, deleting or reordering a stored event breaks every hash from that point on, which
``verify`` finds and names. Linking is serialised on one chain-head row, whose lock is held
until the linking transaction commits, so two events can never take the same number or
link to the same predecessor.

Every event commits in the transaction of the act it records. Where it is linked depends on
the database. SQLite serialises whole write transactions anyway, so the act's transaction
links its event itself. On PostgreSQL the event commits unlinked (no number, no link), and
right after the commit a ``Linker`` numbers and links every committed event not yet linked,
in a short transaction of its own: holding the head's lock through each act's commit
would let the chain grow by one event per commit-to-disk, a few hundred a second on a small
server, while one linking transaction takes every event committed meanwhile. A rolled-back
act leaves no event, so the numbers have no gaps. An event whose process died between the
two commits is linked by the next act's linking or the lifecycle run; ``verify`` counts
such events.

Past ``VAULT_AUDIT_RETENTION_DAYS`` the oldest events are purged (``audit_retention``), always
up to a signed checkpoint and after recording the purge itself: the chain then begins after
that checkpoint, whose head hash is the first remaining event's link (``start_of``).

Personal request details (address, user agent, a data subject's free text) stay in the
erasable side table; the chain holds only an HMAC commitment to them under a per-event salt
kept beside them, so erasing the details (and the salt) leaves the chain verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    bindparam,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import canonical_json
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditEventContext

DOMAIN = b"recvault-audit-event-v1\n"
GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1
SALT_BYTES = 32
# The action of the purge's own event (``audit.AuditAction.AUDIT_PURGED``): the chain's start
# after a purge is vouched for by it.
PURGE_ACTION = "audit:purged"
# A checkpoint is signed at every multiple of this many events, as soon as the transaction
# that reached it commits (``audit_checkpoints.sign_at_intervals``), besides the lifecycle
# run's hourly one: a busy day is never left long without a signed state to witness.
CHECKPOINT_INTERVAL = 1000
# The session's note that its transaction took the chain to such a multiple.
CHECKPOINT_DUE = "recvault.audit_checkpoint_due"
_BATCH = 5000
_DOMAIN_DIGEST = hashlib.sha256(DOMAIN)


# The chain's canonical JSON is the one every JSON column is stored in.
canonical = canonical_json


def normalised_details(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as the database gives them back (tuples become lists), so the hash is
    computed over exactly what a verifier will read."""
    normal: dict[str, Any] = json.loads(canonical(details))
    return normal


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def commitment(salt: str, ip_address: str | None, user_agent: str | None, text: str | None) -> str:
    """The event's binding to its personal details, without revealing them."""
    body = canonical({"ip_address": ip_address, "user_agent": user_agent, "request_text": text})
    return hmac.new(bytes.fromhex(salt), body.encode(), hashlib.sha256).hexdigest()


def utc_text(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def entry_of(event: AuditEvent) -> dict[str, Any]:
    """What the chain covers of a stored event."""
    return {
        "seq": event.seq,
        "occurred_at": utc_text(event.occurred_at),
        "action": event.action,
        "outcome": event.outcome,
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "recording_id": str(event.recording_id) if event.recording_id else None,
        "object_id": event.object_id,
        "details": event.details,
        "context_commitment": event.context_commitment,
    }


def link(entry: dict[str, Any], previous_hash: str) -> str:
    digest = _DOMAIN_DIGEST.copy()
    digest.update(canonical(entry).encode())
    digest.update(bytes.fromhex(previous_hash))
    return digest.hexdigest()


def _sqlite_uuid_text(column: str) -> str:
    return f"""CASE WHEN {column} IS NULL THEN 'null' ELSE '"' || lower(
        substr({column}, 1, 8) || '-' || substr({column}, 9, 4) || '-' || substr({column}, 13, 4)
        || '-' || substr({column}, 17, 4) || '-' || substr({column}, 21)) || '"' END"""


# The canonical line of every stored event, built by the database from its columns: the
# verifier then only hashes text, where building objects, parsing ``details`` and re-encoding
# them took most of the time. The line equals ``canonical(entry_of(event))`` whenever
# the stored ``details`` are in canonical form, as every engine writes them (``make_engine``).
# Where it is not (events stored before that, or a database escaping a character another way),
# the hash will not match and the event is hashed again by the definition (``links_to``), so
# the outcome never depends on this rendering, only the time does. Every text column is quoted
# by the database's JSON encoder and ``details`` must be valid JSON, so two different events
# never render as the same line: an edit cannot keep a stored hash by shifting text between
# columns.
_LINE_SQL = {
    "postgresql": """
        '{"action":' || to_json(action)::text
        || ',"actor_id":' || coalesce('"' || actor_id::text || '"', 'null')
        || ',"context_commitment":' || coalesce(to_json(context_commitment)::text, 'null')
        || ',"details":' || details::text
        || ',"object_id":' || coalesce(to_json(object_id)::text, 'null')
        || ',"occurred_at":"'
        || replace(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                   '.000000', '')
        || '+00:00","outcome":' || to_json(outcome)::text
        || ',"recording_id":' || coalesce('"' || recording_id::text || '"', 'null')
        || ',"seq":' || seq::text || '}'
    """,
    # SQLite keeps timestamps as UTC text with six decimals and UUIDs as 32 hex digits.
    "sqlite": """
        '{"action":' || json_quote(action)
        || ',"actor_id":' || ACTOR_ID
        || ',"context_commitment":' || json_quote(context_commitment)
        || ',"details":' || CASE WHEN json_valid(details) THEN details END
        || ',"object_id":' || json_quote(object_id)
        || ',"occurred_at":"' || replace(CASE WHEN substr(occurred_at, 20) = '.000000'
                THEN substr(occurred_at, 1, 19) ELSE occurred_at END, ' ', 'T')
        || '+00:00","outcome":' || json_quote(outcome)
        || ',"recording_id":' || RECORDING_ID
        || ',"seq":' || seq || '}'
    """.replace("ACTOR_ID", _sqlite_uuid_text("actor_id")).replace(
        "RECORDING_ID", _sqlite_uuid_text("recording_id")
    ),
}


class StoredEntry(NamedTuple):
    """A stored event as the chain sees it; ``line`` is its canonical entry as the database
    rendered it (None where it could not, as for details that are not JSON)."""

    row_id: int
    seq: int
    entry_hash: str
    line: str | None


@dataclass(frozen=True)
class StoredChain:
    """The chain head and the events after ``after`` up to ``through``, read by one statement,
    so as of one instant: appends go on while a verification runs, and an event appended
    after the head was read must not look like one the head never counted."""

    head_seq: int
    head_hash: str
    entries: Iterator[StoredEntry]


def _chain_sql(dialect: str, after: int | None, through: int | None) -> str:
    # The head comes in the same statement, as subqueries evaluated once, so that the events
    # keep coming in the order of their index as they are rendered: a join would make the
    # database render and sort every event before sending the first.
    line = _LINE_SQL.get(dialect, "NULL")
    head = f"FROM audit_chain_head WHERE id = {HEAD_ROW_ID}"
    bounds = " AND ".join(
        f"seq {operator} {int(bound)}"
        for operator, bound in ((">", after), ("<=", through))
        if bound is not None
    )
    return (
        f"SELECT id, seq, entry_hash, {line},"  # noqa: S608 - numbers only
        f" (SELECT seq {head}) AS head_seq, (SELECT entry_hash {head}) AS head_hash"
        f" FROM audit_events WHERE {bounds or 'seq IS NOT NULL'} ORDER BY seq"
    )


_HEAD = select(AuditChainHead.seq, AuditChainHead.entry_hash).where(
    AuditChainHead.id == HEAD_ROW_ID
)


def _head_of(result: Any) -> tuple[int, str] | None:
    row = result.first()
    return (row[0], row[1]) if row is not None else None


def _chain_of(rows: Iterator[Any], head: Callable[[], tuple[int, str] | None]) -> StoredChain:
    first = next(rows, None)
    if first is None:
        # No event in the range, so no row to carry the head: it is read by itself (a log
        # holds events from its initialisation on, so this is an empty range, not a race).
        seq, entry_hash = head() or (0, GENESIS_HASH)
        return StoredChain(seq, entry_hash, iter(()))
    entries = (
        StoredEntry(row[0], row[1], row[2], row[3]) for row in itertools.chain([first], rows)
    )
    if first[4] is None:
        return StoredChain(0, GENESIS_HASH, entries)
    return StoredChain(first[4], first[5], entries)


def stored_chain(
    session: Session, after: int | None = None, through: int | None = None
) -> StoredChain:
    """The events numbered above ``after`` and up to ``through`` (every one by default) in
    chain order, as the session's transaction sees them, read in batches so that memory
    stays flat however long the log is."""
    statement = text(_chain_sql(session.get_bind().dialect.name, after, through))
    rows = session.execute(statement, execution_options={"yield_per": _BATCH})
    return _chain_of(iter(rows), lambda: _head_of(session.execute(_HEAD)))


@contextmanager
def committed_chain(connection: Connection) -> Iterator[StoredChain]:
    """The whole stored chain as committed, streamed from the database driver itself.

    The driver's rows are taken as they come, without SQLAlchemy's result processing. On
    PostgreSQL they stream in chunks while the server renders the next ones, so its work and
    the hashing overlap; the connection is busy until the stream ends, so it is one of its
    own, never the session's.
    """
    driver = connection.connection.driver_connection
    sql = _chain_sql(connection.dialect.name, None, None)
    cursor = cast(Any, driver).cursor()
    rows: Iterator[Any]
    if connection.dialect.name == "postgresql":
        rows = cursor.stream(sql, size=_BATCH)
    else:  # SQLite steps through the result as it is read
        rows = iter(cursor.execute(sql))
    try:
        yield _chain_of(rows, lambda: _head_of(connection.execute(_HEAD)))
    finally:
        # A verification that stops at the first damage leaves the stream unfinished:
        # closing it makes the driver end the query, so the connection can be reused.
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        cursor.close()


class Linked(Enum):
    """How a stored event was found to link to its predecessor."""

    AS_STORED = "as_stored"  # its stored line hashes to its link
    BY_DEFINITION = "by_definition"  # only once rebuilt from its columns (``entry_of``)
    NOT = "not"  # it does not link: edited, or linked to another predecessor


def links_to(session: Session, entry: StoredEntry, previous_hash: str) -> Linked:
    """Whether the stored event hashes to its stored link after ``previous_hash``."""
    try:
        previous = bytes.fromhex(previous_hash)
    except ValueError:
        return Linked.NOT
    if entry.line is not None:
        digest = _DOMAIN_DIGEST.copy()
        digest.update(entry.line.encode())
        digest.update(previous)
        if digest.hexdigest() == entry.entry_hash:
            return Linked.AS_STORED
    event = session.get(AuditEvent, entry.row_id)
    if event is not None and link(entry_of(event), previous_hash) == entry.entry_hash:
        return Linked.BY_DEFINITION
    return Linked.NOT


# The stored columns of an event, as ``append`` writes them.
EVENT_COLUMNS = (
    "occurred_at",
    "action",
    "outcome",
    "actor_id",
    "recording_id",
    "object_id",
    "details",
    "seq",
    "entry_hash",
    "context_commitment",
)
_KEPT_COLUMNS = ("ip_address", "user_agent", "request_text", "salt")


@dataclass(frozen=True)
class KeptDetails:
    """An event's personal details, written to the erasable side table beside it."""

    ip_address: str | None
    user_agent: str | None
    request_text: str | None
    salt: str


def _typed(table: Any, columns: tuple[str, ...]) -> dict[str, Any]:
    # Parameters named after the table, never after a column: an UPDATE would take a
    # parameter named like one of its columns for a value to set.
    return {
        column: bindparam(f"{table.name}_{column}", type_=table.c[column].type)
        for column in columns
    }


def _parameters(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{table.name}_{column}": value for column, value in values.items()}


# The statements of an append, built once: everything said while the head is locked delays
# every other act's event, so nothing is composed or compiled then.
_NEXT_NUMBER = (
    update(AuditChainHead)
    .where(AuditChainHead.id == HEAD_ROW_ID)
    .values(seq=AuditChainHead.seq + 1)
    .returning(AuditChainHead.seq, AuditChainHead.entry_hash)
)
_SET_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.id == HEAD_ROW_ID)
    .values(entry_hash=bindparam("head_hash"))
)
_INSERT_EVENT = (
    insert(AuditEvent).values(_typed(AuditEvent.__table__, EVENT_COLUMNS)).returning(AuditEvent.id)
)
_INSERT_KEPT = insert(AuditEventContext).values(
    event_id=bindparam("kept_event_id"), **_typed(AuditEventContext.__table__, _KEPT_COLUMNS)
)


def _event_and_kept_in_one() -> Any:
    """The event and its kept details written by one statement, as PostgreSQL allows."""
    event = _INSERT_EVENT.cte("event")
    kept = _typed(AuditEventContext.__table__, _KEPT_COLUMNS)
    kept_row = insert(AuditEventContext).from_select(
        ["event_id", *_KEPT_COLUMNS],
        select(event.c.id, *kept.values()).where(kept["salt"].is_not(None)),
    )
    return select(event.c.id).add_cte(kept_row.cte("kept"))


# Said to the driver itself (``append``): through SQLAlchemy the statement costs several
# times the processor time of the driver's own round trip, and every act writes one. The
# statement casts each parameter, so the driver is given the values as the columns take
# them: details as their canonical JSON text, the time as an aware UTC datetime.
_OCCURRED_AT = cast(Any, AuditEvent.__table__.c.occurred_at.type)
_WRITE_UNLINKED_SQL = str(
    _event_and_kept_in_one().compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
)
# audit_link() (migration 0014) runs with its owner's rights: the runtime roles may link
# committed events through it but cannot write a link or the head themselves.
_LINK_SQL = "SELECT linked_after, linked_through FROM audit_link()"
# The session's note that its transaction wrote events to link once it commits.
LINK_DUE = "recvault.audit_link_due"


def append(session: Session, event: AuditEvent, kept: KeptDetails | None) -> None:
    """Write ``event`` (with ``kept`` beside it) in the caller's transaction, linked there
    on SQLite and just after the commit on PostgreSQL (``Linker``).

    On SQLite the head row's UPDATE takes the next number, and a rolled-back act rolls its
    number back with it. The act's pending changes are flushed and the entry's canonical
    text is made before, leaving only its number to add once the head is locked.
    """
    kept_values = _parameters(
        AuditEventContext.__table__,
        {column: getattr(kept, column) if kept else None for column in _KEPT_COLUMNS},
    )
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        as_stored = {column: getattr(event, column) for column in EVENT_COLUMNS} | {
            "occurred_at": _OCCURRED_AT.process_bind_param(event.occurred_at, dialect),
            "details": canonical(event.details),
        }
        values = _parameters(AuditEvent.__table__, as_stored)
        driver = cast(Any, session.connection().connection.driver_connection)
        (event.id,) = driver.execute(_WRITE_UNLINKED_SQL, values | kept_values).fetchone()
        session.info[LINK_DUE] = True
        return
    event.seq = 0
    # "seq" sorts last among the entry's keys: the canonical text ends with its number.
    before_number = canonical(entry_of(event))[: -len("0}")]
    session.flush()
    connection = session.connection()
    seq, previous = connection.execute(_NEXT_NUMBER).one()
    digest = _DOMAIN_DIGEST.copy()
    digest.update(f"{before_number}{seq}}}".encode())
    digest.update(bytes.fromhex(previous))
    event.seq, event.entry_hash = seq, digest.hexdigest()
    connection.execute(_SET_HEAD, {"head_hash": event.entry_hash})
    values = _parameters(
        AuditEvent.__table__, {column: getattr(event, column) for column in EVENT_COLUMNS}
    )
    event.id = connection.execute(_INSERT_EVENT, values).scalar_one()
    if kept is not None:
        connection.execute(_INSERT_KEPT, {"kept_event_id": event.id} | kept_values)
    if seq % CHECKPOINT_INTERVAL == 0:
        session.info[CHECKPOINT_DUE] = True


@dataclass(frozen=True)
class Linking:
    """What one linking did: the events numbered ``after`` + 1 to ``through``."""

    after: int
    through: int

    @property
    def reached_checkpoint(self) -> bool:
        """Whether it took the chain to a multiple of ``CHECKPOINT_INTERVAL``."""
        return self.through // CHECKPOINT_INTERVAL > self.after // CHECKPOINT_INTERVAL


def _autocommit(engine: Engine) -> Connection:
    # One statement, its own transaction: no round trips to open and commit one around it.
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


class LinkingFailed(Exception):
    """The database did not link: the events stay committed, unlinked, for the next one."""


def _linked_on(connection: Connection) -> Linking:
    # Said to the driver itself: a statement through SQLAlchemy costs several times the
    # processor time of the driver's own round trip, and this one follows every act.
    driver = cast(Any, connection.connection.driver_connection)
    try:
        after, through = driver.execute(_LINK_SQL).fetchone()
    except connection.dialect.loaded_dbapi.Error as exc:
        raise LinkingFailed(str(exc)) from exc
    return Linking(after, through)


class Linker:
    """The linking after the commits of one process's acts, on a connection of its own.

    A linking numbers and links every committed event not yet linked, in the order of their
    ids, in a transaction of its own (``audit_link()``, migration 0014); nothing to do on
    SQLite, where every event is linked when written. Linkings, of this process and of
    others, wait for each other on the head row's lock; each then links what the ones
    before it left, so a linking begun after an act's commit covers the act's event.

    Every act that committed events waits, after its commit, for a linking begun after it.
    The threads of a busy process commit faster than one linking at a time finishes, so
    those that commit while one runs are covered together by the next, run by one of them.
    The connection is kept between linkings: taking one from the pool costs a check that
    it is alive (a round trip) besides the linking's own, and this follows every act. A
    connection that fails is dropped, and the next linking opens another.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._turns = threading.Condition()
        self._requested = 0  # acts that asked, numbered in order
        self._covered = 0  # all acts up to this number have their events linked
        self._running = False
        self._connection: Connection | None = None

    def link_committed(self) -> Linking:
        """Return once the events the caller committed are linked: by a run of its own, or
        by one begun after it asked. Only a run of its own reports what it linked."""
        if self._engine.dialect.name != "postgresql":
            return Linking(0, 0)
        with self._turns:
            self._requested += 1
            mine = self._requested
            while self._running and self._covered < mine:
                self._turns.wait()
            if self._covered >= mine:
                return Linking(0, 0)
            self._running, covering = True, self._requested
        linked = False
        try:
            if self._connection is None:
                self._connection = _autocommit(self._engine)
            linking = _linked_on(self._connection)
            linked = True
            return linking
        except (SQLAlchemyError, LinkingFailed):
            self._drop_connection()
            raise
        finally:
            with self._turns:
                self._running = False
                if linked:
                    self._covered = max(self._covered, covering)
                self._turns.notify_all()

    def close(self) -> None:
        """Wait for a linking still running, then return the connection to the pool."""
        with self._turns:
            while self._running:
                self._turns.wait()
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            # A broken connection must not go back to the pool for an act to find.
            with suppress(SQLAlchemyError):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None


def unlinked_count(session: Session) -> int:
    """Committed events not linked yet: normally none but those committed an instant ago."""
    unlinked = select(func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))
    return session.scalar(unlinked) or 0


# The number and link as read from events selected by their number, which are linked ones.
LINKED_SEQ = type_coerce(AuditEvent.seq, BigInteger())
LINKED_HASH = type_coerce(AuditEvent.entry_hash, String(64))


def number_of(event: AuditEvent) -> int:
    """The number of an event read as part of the chain."""
    if event.seq is None:
        raise ValueError(f"audit event {event.id} is not linked yet")
    return event.seq


def committed_number(session: Session, event: AuditEvent) -> int:
    """The number of an event ``append`` wrote and the session committed, read back: on
    PostgreSQL it is linked only after the commit."""
    seq = session.scalar(select(AuditEvent.seq).where(AuditEvent.id == event.id))
    if seq is None:
        raise ValueError(f"audit event {event.id} is not linked yet")
    return seq


class Damage(StrEnum):
    """What is wrong at the first bad place of the chain."""

    EDITED = "edited"  # the event no longer hashes to its stored link
    DELETED = "deleted"  # a sequence number is missing
    OUT_OF_ORDER = "reordered"  # a number appears again, or goes backwards
    INSERTED = "inserted"  # an exported line that the chain never held
    TRUNCATED = "truncated"  # the head counts events that are no longer there
    HEAD_MISMATCH = "head_mismatch"  # the last event is not the one the head names
    # Found against signed checkpoints (``vault.services.audit_checkpoints``):
    ROLLED_BACK = "rolled_back"  # the log no longer holds what a kept checkpoint covers
    BAD_SIGNATURE = "bad_signature"  # a checkpoint not signed by the audit signing key
    INCONSISTENT_CHECKPOINT = "inconsistent_checkpoint"  # a stored checkpoint disagrees


@dataclass(frozen=True)
class Verdict:
    count: int
    head_hash: str
    damage: Damage | None = None
    at_seq: int | None = None
    # Events removed by the retention purge before the first one checked.
    purged: int = 0
    # Events whose stored form is not the canonical one, checked by rebuilding their entry
    # (``Linked.BY_DEFINITION``): those written before details were stored canonically.
    rehashed: int = 0
    # Events committed but not linked yet, outside the chain checked (``Linker``).
    unlinked: int = 0

    @property
    def intact(self) -> bool:
        return self.damage is None


@dataclass(frozen=True)
class Start:
    """Where the stored chain begins: after ``purged`` events, linking to ``previous_hash``."""

    purged: int
    previous_hash: str


def start_of(session: Session) -> Start | None:
    """The chain's beginning; None when events are missing from the start and no purge
    accounts for it.

    A purge stops at a signed checkpoint (the one covering exactly the purged events, whose
    head hash is the next event's link) and records itself after it, naming that checkpoint;
    without both, the missing events were deleted.
    """
    first = session.scalar(select(func.min(AuditEvent.seq)))
    if first is None or first == 1:
        return Start(0, GENESIS_HASH)
    through = first - 1
    boundary = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.tree_size == through)
    ).first()
    announced = session.scalars(
        select(AuditEvent.details).where(
            AuditEvent.action == PURGE_ACTION, AuditEvent.seq > through
        )
    )
    if boundary is None or not any(d.get("through_seq") == through for d in announced):
        return None
    return Start(through, boundary.head_hash)


def verify(session: Session) -> Verdict:
    """Walk the committed chain from its start and report the first damage found."""
    with session.get_bind().engine.connect() as connection, committed_chain(connection) as chain:
        return _walked(session, chain)


def _walked(session: Session, chain: StoredChain) -> Verdict:
    head_seq, head_hash = chain.head_seq, chain.head_hash
    start = start_of(session)
    if start is None:
        return Verdict(0, GENESIS_HASH, Damage.DELETED, 1)
    expected, previous, count, rehashed = start.purged + 1, start.previous_hash, 0, 0

    def verdict(damage: Damage | None = None, at: int | None = None) -> Verdict:
        return Verdict(
            count,
            previous,
            damage,
            at,
            purged=start.purged,
            rehashed=rehashed,
            unlinked=unlinked_count(session),
        )

    for entry in chain.entries:
        if entry.seq > expected:
            return verdict(Damage.DELETED, expected)
        if entry.seq < expected:
            return verdict(Damage.OUT_OF_ORDER, entry.seq)
        linked = links_to(session, entry, previous)
        if linked is Linked.NOT:
            return verdict(Damage.EDITED, entry.seq)
        rehashed += linked is Linked.BY_DEFINITION
        previous, count, expected = entry.entry_hash, count + 1, expected + 1
    if start.purged + count < head_seq:
        return verdict(Damage.TRUNCATED, expected)
    if previous != head_hash or start.purged + count > head_seq:
        return verdict(Damage.HEAD_MISMATCH, expected - 1)
    return verdict()
