"""The collaborators every use case may need, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage_backends.base import BlobStore
from vault.keyring import Keyring
from vault.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    keyring: Keyring
