"""Typed SQLAlchemy 2.0 models. Imports only SQLAlchemy.

Domain objects have random UUIDv4 keys, so ids reveal neither counts nor order.
The audit table keeps an integer sequence, because the hash chain needs a total order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Explicit constraint names, so migrations can drop and alter them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no BIGINT autoincrement; INTEGER PRIMARY KEY is its 64-bit rowid.
BigIntPrimaryKey = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned as aware UTC datetimes on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[dict[str, Any]]: JSON(),
    }


class AuditEvent(Base):
    """One audited act, written in the same transaction as the act itself.

    Actors and objects are referenced by pseudonymous ids, never by name, so that a
    person's data can later be erased without rewriting the history of what happened.
    """

    __tablename__ = "audit_events"
    # The linker's search (``audit_chain.Linker``): only the few events not yet
    # linked are ever in this index.
    __table_args__ = (
        Index(
            "ix_audit_events_unlinked",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPrimaryKey, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    recording_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    object_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The hash chain (``vault.services.audit_chain``): a gap-free number, separate from the
    # autoincrement id because a PostgreSQL sequence skips values on rollback; the link to
    # the previous event; and the commitment to the personal details kept in the side table.
    # The number and link are empty on PostgreSQL from the act's commit until the event is
    # linked, just after it (``audit_chain.Linker``).
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    entry_hash: Mapped[str | None] = mapped_column(String(64))
    context_commitment: Mapped[str | None] = mapped_column(String(64))


class AuditChainHead(Base):
    """The one row naming the chain's last event: appends lock it to take the next number."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement of the audit chain's state: the Merkle root (RFC 6962) over the
    entry hashes of its first ``tree_size`` events, and the last of them.

    ``body`` is the signed statement (canonical JSON) and ``signature`` Ed25519 over it with
    the audit signing key; an officer who keeps copies outside the server can later show
    that the log still holds exactly those events.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigIntPrimaryKey, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    head_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    # The hashes of the tree's maximal perfect subtrees (a JSON list of hex): the next
    # checkpoint extends them with the newer events instead of rereading the whole log, and
    # they fold to ``root_hash``, so a tampered list is found.
    frontier: Mapped[list[str]] = mapped_column(JSON, default=list)


class DenialTally(Base):
    """Refusals of unauthenticated requests from one address in one minute (the audit log's
    flood guard, in ``vault.services.audit``). Beyond the first few, which are recorded one
    by one, each minute's count becomes one audit event and the row is removed."""

    __tablename__ = "denial_tallies"

    address: Mapped[str] = mapped_column(String(45), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class AuditEventContext(Base):
    """Personal request details (IP, user agent, the free text of a data subject's request)
    kept beside the event, not inside it.

    They are erasable on their own (GDPR art. 17) without touching the audit event.
    """

    __tablename__ = "audit_event_context"

    event_id: Mapped[int] = mapped_column(
        BigIntPrimaryKey, ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    request_text: Mapped[str | None] = mapped_column(Text)
    # The key of the event's commitment to these details; erased with them.
    salt: Mapped[str | None] = mapped_column(String(64))


class MasterKeyVersion(Base):
    """A version of the master key: which key (by fingerprint), never the key itself.

    The key material lives in the keys directory or the environment. The database only
    records which version wraps what, so a wrong keys directory is detected instead of
    silently starting afresh.
    """

    __tablename__ = "master_key_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when a shred requires this version to be replaced (its copies in old backups
    # could still unwrap the shredded year key).
    must_retire: Mapped[bool] = mapped_column(default=False)
    retired_at: Mapped[datetime | None]
    destroyed_at: Mapped[datetime | None]


class SchoolYearKey(Base):
    """A school year's key, wrapped by a master key version; emptied by the year-end shred."""

    __tablename__ = "school_year_keys"

    school_year: Mapped[str] = mapped_column(String(9), primary_key=True)
    master_version: Mapped[int] = mapped_column(ForeignKey("master_key_versions.version"))
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    shredded_at: Mapped[datetime | None]


class SealedSecret(Base):
    """A small secret (a TOTP seed, the audit signing key) wrapped by the master key.

    Kept in one table so that a master-key rotation re-wraps every one of them.
    """

    __tablename__ = "sealed_secrets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    master_version: Mapped[int] = mapped_column(ForeignKey("master_key_versions.version"))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class User(Base):
    """An account. Personal data here (name, e-mail) is never copied into the audit chain."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    # None until the person sets a password through their invitation link.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None]
    # The TOTP seed itself is a sealed secret (wrapped by the master key), not a column.
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    # The last accepted TOTP time step: a code is accepted once, never again (replay).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    role_rows: Mapped[list[UserRole]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True
    )

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(row.role for row in self.role_rows)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hmac: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class LoginSession(Base):
    """A signed-in browser session. The cookie carries a random token; only its hash is here,
    so a copy of the database cannot be replayed as a cookie."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    second_factor: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))


class ApiToken(Base):
    """A personal API token, stored as an HMAC under a server secret, never in clear."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    token_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginAttempt(Base):
    """Sign-in attempts, counted per (account, address) for the lockout."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(BigIntPrimaryKey, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    ip_address: Mapped[str] = mapped_column(String(45))
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    succeeded: Mapped[bool]


class AccountLink(Base):
    """An invitation or password-reset link: single use, with an expiry."""

    __tablename__ = "account_links"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class SchoolYear(Base):
    """The school-year calendar: the last school day decides retention and the shred."""

    __tablename__ = "school_years"

    school_year: Mapped[str] = mapped_column(String(9), primary_key=True)
    last_day: Mapped[date]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MethodologicalRequest(Base):
    """The director's request to a teacher to record a lesson for methodological work
    (procedure §12 and §20)."""

    __tablename__ = "methodological_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    director_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    teacher_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    lesson: Mapped[str] = mapped_column(String(300))
    aim: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Recording(Base):
    """A lesson recording: the metadata the procedure demands, and where its ciphertext is.

    After deletion or shredding the row stays as a tombstone (status ``deleted`` or
    ``shredded``) without its key or object, so art. 15 questions can still be answered.
    """

    __tablename__ = "recordings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    # Set when the director takes over responsibility for a disabled teacher's recording.
    responsible_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(100))
    class_group: Mapped[str] = mapped_column(String(50), index=True)
    lesson_date: Mapped[date] = mapped_column(index=True)
    platform: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(24))
    aim: Mapped[str] = mapped_column(Text)
    visible: Mapped[str] = mapped_column(String(24))
    subjects_informed_method: Mapped[str] = mapped_column(String(300))
    subjects_informed_at: Mapped[date]
    third_party_warning: Mapped[bool]
    device: Mapped[str] = mapped_column(String(24))
    request_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("methodological_requests.id"))
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    retain_until: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The encrypted object: key in the store, data key wrapped by the school-year key.
    object_key: Mapped[str | None] = mapped_column(String(200))
    wrapped_data_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(64))
    plaintext_sha256: Mapped[str | None] = mapped_column(String(64))
    ciphertext_sha256: Mapped[str | None] = mapped_column(String(64))
    available_at: Mapped[datetime | None]
    restricted_at: Mapped[datetime | None]
    # The status to return to when an art. 18 restriction is lifted.
    status_before_restriction: Mapped[str | None] = mapped_column(String(16))
    deleted_at: Mapped[datetime | None]
    deletion_reason: Mapped[str | None] = mapped_column(String(32))
    certificate_id: Mapped[uuid.UUID | None]


class Upload(Base):
    """A resumable (tus) upload in progress. Holds no plaintext: the encryptor state keeps
    its carry-over encrypted, and the pending bytes are ciphertext waiting to fill a part."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    recording_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), unique=True
    )
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    multipart_id: Mapped[str | None] = mapped_column(String(1024))
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    encryptor_state: Mapped[bytes | None] = mapped_column(LargeBinary)
    pending_ciphertext: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    content_type: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[datetime | None]
    # The PATCH receiving this upload counts ``hold_beat`` up while bytes arrive and sets
    # ``hold_closing`` once its body has ended and it commits what arrived; both are cleared
    # when it is done. A client that reconnects right after a dropped PATCH waits for that
    # request to end instead of resuming from the offset it started at. Counted, not timed,
    # so that holders in different processes need no common clock: a beat that stops means
    # a dead holder.
    hold_beat: Mapped[int | None]
    hold_closing: Mapped[bool] = mapped_column(default=False)


def _year_of_issue(context: Any) -> int:
    issued_on: date = context.get_current_parameters()["issued_on"]
    return issued_on.year


class AccessOrder(Base):
    """A director's order naming persons and recordings (procedure §22). Immutable once
    issued; revocation is a separate act recorded on it."""

    __tablename__ = "access_orders"
    # An order number names one legal act per calendar year of issue. Enforced here as well
    # as in the service: two directors issuing the same number at the same instant would
    # both pass the service's check.
    __table_args__ = (UniqueConstraint("number", "issued_year"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(64))
    issued_on: Mapped[date]
    # The year of ``issued_on``, stored so that the database can enforce the numbering;
    # always derived on insert, never given.
    issued_year: Mapped[int] = mapped_column(default=_year_of_issue)
    purpose: Mapped[str] = mapped_column(Text)
    issued_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    valid_from: Mapped[date]
    valid_until: Mapped[date]
    # The filter the recordings were chosen by, kept for the printed order; the chosen
    # recordings themselves are frozen in access_order_recordings at issue time.
    selection_filter: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    revocation_reason: Mapped[str | None] = mapped_column(Text)


class AccessOrderGrantee(Base):
    __tablename__ = "access_order_grantees"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("access_orders.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)


class AccessOrderRecording(Base):
    __tablename__ = "access_order_recordings"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("access_orders.id", ondelete="CASCADE"), primary_key=True
    )
    recording_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recordings.id"), primary_key=True, index=True
    )


class Certificate(Base):
    """A signed deletion certificate: early deletion of one recording, or a year's shred.

    ``body`` is the signed statement (canonical JSON); ``signature`` is Ed25519 over it with
    the audit signing key, verifiable offline with the published public key.
    """

    __tablename__ = "certificates"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(24))
    recording_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    key_fingerprint: Mapped[str] = mapped_column(String(64))


class View(Base):
    """One viewing of a recording: bound to the viewer, their sign-in session and the order
    that allowed it, and alive only while the watch page keeps sending heartbeats.

    A stream URL names a view; every request on it is checked against this row, so ending a
    session, revoking the order or letting the heartbeats lapse stops the stream at once.
    """

    __tablename__ = "views"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    recording_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), index=True
    )
    viewer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    # The server-side sign-in session; None only for the owner's view opened with an API token.
    login_session_id: Mapped[str | None] = mapped_column(String(64))
    # The order that allowed the view; None for the owner.
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("access_orders.id"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(index=True)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # What the player reported it played, in seconds (merged intervals). Reported by the
    # client, so only as trustworthy as the browser that sent it.
    played_reported: Mapped[list[list[float]]] = mapped_column(JSON, default=list)
    duration_reported: Mapped[float | None] = mapped_column(Float)
    # Set once the view is summarised: the whole file was fetched much faster than it plays.
    fetched_fast: Mapped[bool] = mapped_column(default=False)


class ViewRange(Base):
    """A raw record of one stream request: the bytes asked for and the bytes actually sent.

    Kept beside the audit chain rather than in it; each view enters the chain once, as a
    summary built from these rows.
    """

    __tablename__ = "view_ranges"

    id: Mapped[int] = mapped_column(BigIntPrimaryKey, primary_key=True, autoincrement=True)
    view_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("views.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[int] = mapped_column(Integer)
    # The plaintext byte range planned for the response, [first, end).
    first: Mapped[int] = mapped_column(BigInteger)
    end: Mapped[int] = mapped_column(BigInteger)
    # How many of those bytes left the server (the client may stop reading early).
    sent: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class YearEnd(Base):
    """A school year's year-end: which of its steps are done, so that a run interrupted at
    any point resumes where it stopped (``vault.services.year_end``).

    A row with ``frozen_at`` set closes the year: no new uploads, orders or views.
    """

    __tablename__ = "year_ends"

    school_year: Mapped[str] = mapped_column(String(9), primary_key=True)
    # Run before the year's shred time (`recvault year-end --early`).
    early: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime]
    frozen_at: Mapped[datetime | None]
    # What the year-end destroys, written before anything is destroyed.
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manifest_at: Mapped[datetime | None]
    # The year's deletion certificate, once signed.
    certificate_id: Mapped[uuid.UUID | None]
    keys_destroyed_at: Mapped[datetime | None]
    # The operator's remaining step when the master key is held outside the app.
    keys_pending: Mapped[str | None] = mapped_column(Text)
    objects_deleted_at: Mapped[datetime | None]
    # Objects the store refused to delete: left for the operator, named by the certificate.
    objects_pending: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    tombstoned_at: Mapped[datetime | None]
    certified_at: Mapped[datetime | None]


class NoticeSent(Base):
    """An e-mail the lifecycle run sent about a coming deletion, so that later runs do not
    send it again. A new date for the same year is a new notice."""

    __tablename__ = "notices_sent"
    __table_args__ = (UniqueConstraint("kind", "school_year", "user_id", "about_date"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(24))
    school_year: Mapped[str] = mapped_column(String(9))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    about_date: Mapped[date]
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
