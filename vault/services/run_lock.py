"""One lifecycle runner at a time, across processes and hosts.

The hourly scheduler, an operator's `recvault year-end` and a second scheduler started by
mistake must never shred the same year at once. On PostgreSQL the guard is a session-level
advisory lock, held on a connection of its own for the whole run. On SQLite (one host by
construction) it is an exclusive lock on a file beside the database. Both are released by
the operating system or the server when the holder dies, so a killed run never blocks the
next one.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from vault.services.runtime import Runtime

# "rvlc" as a number: distinct from the keyring's transaction-scoped lock.
_LIFECYCLE_LOCK_ID = 0x72766C63
# Advisory locks are per database: the schema is part of the key, so that two instances
# in one database (each in its own schema) do not wait for each other.
_KEY = ":id, hashtext(current_schema())"
# A database without a file (in memory) lives in one process: a process lock suffices.
_IN_PROCESS = threading.Lock()


@contextmanager
def lifecycle_lock(runtime: Runtime) -> Iterator[bool]:
    """Hold the lifecycle lock while the block runs; yields False (and holds nothing) when
    another runner has it."""
    if runtime.engine.dialect.name == "postgresql":
        with _advisory(runtime) as held:
            yield held
        return
    database = runtime.engine.url.database
    if not database or database == ":memory:":
        acquired = _IN_PROCESS.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                _IN_PROCESS.release()
        return
    with _file_lock(Path(f"{database}.lifecycle.lock")) as held:
        yield held


@contextmanager
def _advisory(runtime: Runtime) -> Iterator[bool]:
    # Autocommit: the lock belongs to the connection, and no transaction stays open idle
    # for the length of a year-end.
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as held_on:
        acquired = bool(
            held_on.execute(
                text(f"SELECT pg_try_advisory_lock({_KEY})"), {"id": _LIFECYCLE_LOCK_ID}
            ).scalar_one()
        )
        try:
            yield acquired
        finally:
            if acquired:
                held_on.execute(
                    text(f"SELECT pg_advisory_unlock({_KEY})"), {"id": _LIFECYCLE_LOCK_ID}
                )


@contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
