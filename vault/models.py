"""Typed SQLAlchemy 2.0 models. Imports only SQLAlchemy.

Domain objects have random UUIDv4 keys, so ids reveal neither counts nor order.
The audit table keeps an integer sequence, because the hash chain needs a total order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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
    }


class AuditEvent(Base):
    """One audited act, written in the same transaction as the act itself.

    Actors and objects are referenced by pseudonymous ids, never by name, so that a
    person's data can later be erased without rewriting the history of what happened.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntPrimaryKey, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    recording_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    object_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditEventContext(Base):
    """Personal request details (IP, user agent) kept beside the event, not inside it.

    They are erasable on their own (GDPR art. 17) without touching the audit event.
    """

    __tablename__ = "audit_event_context"

    event_id: Mapped[int] = mapped_column(
        BigIntPrimaryKey, ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)


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
