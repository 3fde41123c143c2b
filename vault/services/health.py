"""Whether the database and the recording storage answer (for /healthz and monitoring)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage_backends.base import BlobStore, StorageError


@dataclass(frozen=True)
class HealthReport:
    database_ok: bool
    storage_ok: bool

    @property
    def ok(self) -> bool:
        return self.database_ok and self.storage_ok


def check(sessions: sessionmaker[Session], store: BlobStore) -> HealthReport:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        database_ok = True
    except SQLAlchemyError:
        database_ok = False
    try:
        store.check()
        storage_ok = True
    except StorageError:
        storage_ok = False
    return HealthReport(database_ok=database_ok, storage_ok=storage_ok)
