"""The collaborators every use case may need, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage_backends.base import BlobStore
from vault.keyring import Keyring
from vault.services.audit_chain import Linker
from vault.services.fairness import Slots
from vault.services.passwords import Passwords
from vault.services.upload_workers import UploadWorkers
from vault.settings import Settings

Clock = Callable[[], datetime]
"""Answers the current instant as an aware UTC datetime.

School days, order validity and retention are counted in the school's local days, so every
decision that depends on "now" takes it from the runtime's clock: a test can then put the
whole application at any instant (the last school day, a midnight, a summer-time switch).
"""


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    keyring: Keyring
    # Shared by every upload this runtime serves.
    upload_workers: UploadWorkers
    # Links the audit events of this runtime's acts after their commits.
    audit_linker: Linker
    clock: Clock = system_clock
    passwords: Passwords = field(default_factory=Passwords)
    # Where every signed audit checkpoint is also written (VAULT_AUDIT_WITNESS_URL), if set.
    witness_store: BlobStore | None = None
    # What each person and view holds of this process's threads (``fairness``).
    slots: Slots = field(default_factory=Slots)

    def close(self) -> None:
        """The runtime is done: its upload threads stop, its connections close."""
        self.upload_workers.shutdown()
        self.audit_linker.close()
        self.engine.dispose()
