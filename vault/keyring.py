"""The key hierarchy: master key versions, school-year keys, per-recording data keys.

    master key (file per version in the keys directory, or VAULT_MASTER_KEY)
      └─ wraps each school-year key            (table school_year_keys)
           └─ wraps each recording's data key  (stored with the recording)
      └─ wraps small secrets: TOTP seeds, the audit signing key (table sealed_secrets)

Shredding a year empties its key row and forces a master-key rotation: every surviving
wrapped key is re-wrapped under a new master version and the old version is destroyed, so
a database backup taken before the shred holds a year key that no existing master key can
unwrap.

No process keeps an unwrapped year key or data key between opens: every open reads the
year's key row, so a shred committed by one process takes effect in every other process on
its next open. Only master keys are cached, and a cached master key is used only while the
database says its version is live.

Every write to the hierarchy (a new year key, sealing, destroying a year key, rotating,
destroying old versions) first takes the keyring lock, held until its transaction ends, and
then reads the state afresh: a rotation can neither miss a year key created meanwhile nor
sweep the key file of a rotation still running. On PostgreSQL the lock is a transaction-scoped
advisory lock; on SQLite the database itself lets one writer at a time commit, and a writer
whose snapshot went stale is refused rather than allowed to write over the change.

This module does no commits: callers (the services) decide transaction boundaries, so each
step is recorded in the audit log together with its effect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from vault import crypto
from vault.models import MasterKeyVersion, SchoolYearKey, SealedSecret

_FINGERPRINT_LABEL = b"recording-vault/master-key-fingerprint/v1"
_YEAR_FINGERPRINT_LABEL = b"recording-vault/school-year-key-fingerprint/v1"
_KEY_FILE_PREFIX = "master-"
_KEY_FILE_SUFFIX = ".key"
# The advisory lock that serialises key-hierarchy writes ("rvkr" as a number).
_KEYRING_LOCK_ID = 0x72766B72
# A key file no version row names is swept only when it is older than this: long enough that
# no running operation can still be about to register it.
ORPHAN_KEY_GRACE = timedelta(hours=1)


class KeyringError(Exception):
    """A key operation cannot proceed; the message says what the operator should do."""


class WrongKeysError(KeyringError):
    """The database references a master key that the configured provider does not hold."""


class YearShredded(KeyringError):
    """The school year's key has been destroyed; its recordings can never be decrypted."""


class OperatorActionRequired(KeyringError):
    """The master key is held outside the app, so the operator must finish the step."""


def fingerprint(master_key: bytes) -> str:
    """A public identifier of a master key (an HMAC under the key; reveals nothing of it)."""
    return hmac.new(master_key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


class MasterKeyProvider(Protocol):
    """Where master key material comes from. A KMS provider would implement the same."""

    @property
    def name(self) -> str: ...

    @property
    def can_manage(self) -> bool:
        """Whether the app itself can create and destroy master keys here."""
        ...

    def available(self) -> list[bytes]: ...

    def create(self) -> bytes: ...

    def destroy(self, key_fingerprint: str) -> bool:
        """Destroy the key with this fingerprint; True if it existed."""
        ...

    def older_than(self, key_fingerprint: str, age: timedelta) -> bool:
        """Whether the key with this fingerprint was written more than ``age`` ago."""
        ...


class FileMasterKeys:
    """One file per master key version in the keys directory (mode 0600)."""

    name = "file"
    can_manage = True

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _files(self) -> list[Path]:
        if not self._directory.is_dir():
            return []
        return sorted(
            path
            for path in self._directory.iterdir()
            if path.name.startswith(_KEY_FILE_PREFIX) and path.name.endswith(_KEY_FILE_SUFFIX)
        )

    def _read(self, path: Path) -> bytes:
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except (OSError, binascii.Error) as exc:
            raise KeyringError(f"the master key file {path} is unreadable: {exc}") from None
        if len(key) != crypto.KEY_SIZE:
            raise KeyringError(f"the master key file {path} does not hold a 256-bit key")
        return key

    def available(self) -> list[bytes]:
        return [self._read(path) for path in self._files()]

    def create(self) -> bytes:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = crypto.new_key()
        path = self._directory / f"{_KEY_FILE_PREFIX}{fingerprint(key)}{_KEY_FILE_SUFFIX}"
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(key) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(self._directory)
        return key

    def older_than(self, key_fingerprint: str, age: timedelta) -> bool:
        # File times come from the machine's clock, so the comparison uses it too.
        cutoff = time.time() - age.total_seconds()
        return any(
            fingerprint(self._read(path)) == key_fingerprint and path.stat().st_mtime < cutoff
            for path in self._files()
        )

    def destroy(self, key_fingerprint: str) -> bool:
        destroyed = False
        for path in self._files():
            if fingerprint(self._read(path)) != key_fingerprint:
                continue
            # Overwrite before unlinking, to shrink the chance of recovering the key
            # from the disk blocks by forensic analysis (not a guarantee on SSDs or
            # copy-on-write file systems; keys/README.md says so).
            size = path.stat().st_size
            with path.open("r+b") as handle:
                handle.write(os.urandom(size))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
            destroyed = True
        if destroyed:
            _fsync_directory(self._directory)
        return destroyed


class EnvMasterKeys:
    """The master key from VAULT_MASTER_KEY (base64), with the previous one during a rotation.

    The app can neither create nor destroy such a key: rotation and destruction are the
    operator's steps, and the shred records them as pending until done.
    """

    name = "env"
    can_manage = False

    def __init__(self, current: str, previous: str | None = None) -> None:
        self._keys = [_decode_env_key("VAULT_MASTER_KEY", current)]
        if previous:
            self._keys.append(_decode_env_key("VAULT_MASTER_KEY_PREVIOUS", previous))

    def available(self) -> list[bytes]:
        return list(self._keys)

    def create(self) -> bytes:
        raise OperatorActionRequired(
            "the master key comes from VAULT_MASTER_KEY; generate a new one with "
            "`recvault keys generate`, then follow keys/README.md"
        )

    def destroy(self, key_fingerprint: str) -> bool:
        return False

    def older_than(self, key_fingerprint: str, age: timedelta) -> bool:
        return False


def _decode_env_key(variable: str, value: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise KeyringError(f"{variable} is not valid base64") from None
    if len(key) != crypto.KEY_SIZE:
        raise KeyringError(f"{variable} must hold a 256-bit key (32 bytes, base64)")
    return key


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _year_context(school_year: str) -> bytes:
    return f"year-key:{school_year}".encode()


def _data_key_context(recording_id: uuid.UUID, school_year: str) -> bytes:
    return f"data-key:{recording_id}:{school_year}".encode()


def _sealed_context(name: str) -> bytes:
    return f"sealed:{name}".encode()


@dataclass(frozen=True)
class Rotation:
    retired_versions: tuple[int, ...]
    new_version: int


class Keyring:
    def __init__(self, provider: MasterKeyProvider) -> None:
        self._provider = provider
        self._master_keys: dict[str, bytes] = {}

    @property
    def provider_name(self) -> str:
        return self._provider.name

    @property
    def can_manage_master_keys(self) -> bool:
        return self._provider.can_manage

    # -- the lock ----------------------------------------------------------------------

    @staticmethod
    def _lock(session: Session) -> None:
        """Hold the keyring lock until the session's transaction ends."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _KEYRING_LOCK_ID})

    # -- master keys -------------------------------------------------------------------

    def _load_provider_keys(self) -> dict[str, bytes]:
        """The provider's keys as they are now; the cache is emptied, to refill on use."""
        self._master_keys = {}
        return {fingerprint(key): key for key in self._provider.available()}

    def _master_key(self, session: Session, version: int) -> bytes:
        row = session.get(MasterKeyVersion, version, populate_existing=True)
        if row is None or row.destroyed_at is not None:
            raise KeyringError(f"master key version {version} has been destroyed")
        key = self._master_keys.get(row.fingerprint) or self._load_provider_keys().get(
            row.fingerprint
        )
        if key is None:
            raise WrongKeysError(
                f"master key version {version} (fingerprint {row.fingerprint}) is not in the "
                f"configured {self._provider.name} key provider; check VAULT_KEYS_DIR or "
                "VAULT_MASTER_KEY. The vault never starts afresh with a new key."
            )
        # Only the key of a live version stays in memory: a version retired or destroyed by
        # any process leaves this one's cache at its next key operation.
        self._master_keys = {row.fingerprint: key} if row.retired_at is None else {}
        return key

    def current_version(self, session: Session) -> MasterKeyVersion | None:
        return session.scalars(
            select(MasterKeyVersion)
            .where(MasterKeyVersion.retired_at.is_(None))
            .order_by(MasterKeyVersion.version.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        ).first()

    def initialise(self, session: Session) -> str | None:
        """Make sure a usable master key exists; returns what was done, or None.

        Refuses to create a key when the database already references one: a missing key
        is a misconfiguration to fix, not a reason to start over and orphan every recording.
        """
        self._lock(session)
        current = self.current_version(session)
        if current is not None:
            self._load_provider_keys()  # check the provider as it is now, not a cached copy
            self._master_key(session, current.version)
            return None
        if session.scalars(select(MasterKeyVersion).limit(1)).first() is not None:
            raise KeyringError("every master key version is retired; the keyring is damaged")
        keys = self._provider.available()
        if len(keys) > 1:
            raise KeyringError(
                "several master keys are present but the database references none; "
                "remove the ones that do not belong to this instance"
            )
        created = not keys
        key = self._provider.create() if created else keys[0]
        session.add(
            MasterKeyVersion(version=1, fingerprint=fingerprint(key), provider=self._provider.name)
        )
        session.flush()
        origin = "new" if created else "existing"
        return f"master key version 1 ({origin}, {self._provider.name})"

    def _current_master(self, session: Session) -> tuple[int, bytes]:
        current = self.current_version(session)
        if current is None:
            raise KeyringError("no master key; run `recvault init`")
        return current.version, self._master_key(session, current.version)

    # -- school-year keys and data keys ------------------------------------------------

    def _year_key(self, session: Session, school_year: str, *, create: bool) -> bytes:
        row = session.get(SchoolYearKey, school_year, populate_existing=True)
        if row is None and create:
            self._lock(session)
            # Another process may have made it while this one waited for the lock.
            row = session.get(SchoolYearKey, school_year, populate_existing=True)
        if row is None and create:
            version, master = self._current_master(session)
            key = crypto.new_key()
            session.add(
                SchoolYearKey(
                    school_year=school_year,
                    master_version=version,
                    wrapped_key=crypto.wrap_key(master, key, _year_context(school_year)),
                )
            )
            session.flush()
            return key
        if row is None:
            raise KeyringError(f"there is no key for the school year {school_year}")
        if row.wrapped_key is None:
            raise YearShredded(f"the key of the school year {school_year} has been destroyed")
        master = self._master_key(session, row.master_version)
        return crypto.unwrap_key(master, row.wrapped_key, _year_context(school_year))

    def new_data_key(
        self, session: Session, recording_id: uuid.UUID, school_year: str
    ) -> tuple[bytes, bytes]:
        """A fresh data key and its wrapped form, to store with the recording."""
        year_key = self._year_key(session, school_year, create=True)
        data_key = crypto.new_key()
        wrapped = crypto.wrap_key(year_key, data_key, _data_key_context(recording_id, school_year))
        return data_key, wrapped

    def data_key(
        self, session: Session, recording_id: uuid.UUID, school_year: str, wrapped: bytes
    ) -> bytes:
        year_key = self._year_key(session, school_year, create=False)
        return crypto.unwrap_key(year_key, wrapped, _data_key_context(recording_id, school_year))

    def year_key_fingerprint(self, session: Session, school_year: str) -> str | None:
        """A public identifier of the year's live key (None if it has none), for the deletion
        certificate to name the key it destroyed without revealing anything of it."""
        row = session.get(SchoolYearKey, school_year, populate_existing=True)
        if row is None or row.wrapped_key is None:
            return None
        key = self._year_key(session, school_year, create=False)
        return hmac.new(key, _YEAR_FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]

    def year_is_shredded(self, session: Session, school_year: str) -> bool:
        row = session.get(SchoolYearKey, school_year)
        return row is not None and row.wrapped_key is None

    # -- sealed secrets ----------------------------------------------------------------

    def seal(self, session: Session, name: str, secret: bytes) -> None:
        self._lock(session)
        version, master = self._current_master(session)
        wrapped = crypto.wrap_key(master, secret, _sealed_context(name))
        row = session.get(SealedSecret, name, populate_existing=True)
        if row is None:
            session.add(SealedSecret(name=name, master_version=version, wrapped=wrapped))
        else:
            row.master_version = version
            row.wrapped = wrapped
        session.flush()

    def unseal(self, session: Session, name: str) -> bytes | None:
        row = session.get(SealedSecret, name, populate_existing=True)
        if row is None:
            return None
        master = self._master_key(session, row.master_version)
        return crypto.unwrap_key(master, row.wrapped, _sealed_context(name))

    def forget(self, session: Session, name: str) -> None:
        self._lock(session)
        row = session.get(SealedSecret, name, populate_existing=True)
        if row is not None:
            session.delete(row)
            session.flush()

    # -- shredding ---------------------------------------------------------------------

    def destroy_year_key(self, session: Session, school_year: str, now: datetime) -> bool:
        """Step 1 of a shred: empty the year's key row. True if it was live until now.

        Every live master version is marked for retirement in the same transaction, so a
        crash before the rotation still leaves the rotation due.
        """
        self._lock(session)
        row = session.get(SchoolYearKey, school_year, populate_existing=True)
        if row is not None and row.wrapped_key is None:
            return False
        if row is None:
            # A year shredded before any recording existed still refuses new recordings.
            version, _ = self._current_master(session)
            row = SchoolYearKey(school_year=school_year, master_version=version)
            session.add(row)
        row.wrapped_key = None
        row.shredded_at = now
        for version_row in session.scalars(
            select(MasterKeyVersion).where(MasterKeyVersion.retired_at.is_(None))
        ):
            version_row.must_retire = True
        session.flush()
        return True

    def rotation_due(self, session: Session) -> bool:
        current = self.current_version(session)
        return current is not None and current.must_retire

    def rotate_master(self, session: Session, now: datetime) -> Rotation:
        """Step 2: a new master version; every wrapped key and secret re-wrapped under it.

        With a file provider the app writes the new key itself. With VAULT_MASTER_KEY the
        operator supplies it (new key in VAULT_MASTER_KEY, old in VAULT_MASTER_KEY_PREVIOUS).
        """
        self._lock(session)
        current = self.current_version(session)
        if current is None:
            raise KeyringError("no master key; run `recvault init`")
        registered = set(session.scalars(select(MasterKeyVersion.fingerprint)))
        if self._provider.can_manage:
            new_key = self._provider.create()
        else:
            fresh = [k for k in self._provider.available() if fingerprint(k) not in registered]
            if not fresh:
                raise OperatorActionRequired(ENV_ROTATION_INSTRUCTION)
            new_key = fresh[0]
        self._load_provider_keys()
        new_version = MasterKeyVersion(
            version=current.version + 1,
            fingerprint=fingerprint(new_key),
            provider=self._provider.name,
        )
        session.add(new_version)
        session.flush()
        self._rewrap(session, new_version.version, new_key, below=new_version.version)
        retired = []
        for old in session.scalars(
            select(MasterKeyVersion).where(
                MasterKeyVersion.retired_at.is_(None),
                MasterKeyVersion.version != new_version.version,
            )
        ):
            old.retired_at = now
            old.must_retire = False
            retired.append(old.version)
        session.flush()
        return Rotation(retired_versions=tuple(retired), new_version=new_version.version)

    def _rewrap(self, session: Session, version: int, key: bytes, *, below: int) -> None:
        """Wrap every live year key and sealed secret still under a version before ``below``
        under ``version`` (whose key is ``key``)."""
        for year in session.scalars(
            select(SchoolYearKey)
            .where(SchoolYearKey.wrapped_key.is_not(None), SchoolYearKey.master_version < below)
            .execution_options(populate_existing=True)
        ):
            assert year.wrapped_key is not None
            context = _year_context(year.school_year)
            old_master = self._master_key(session, year.master_version)
            unwrapped = crypto.unwrap_key(old_master, year.wrapped_key, context)
            year.wrapped_key = crypto.wrap_key(key, unwrapped, context)
            year.master_version = version
        for secret in session.scalars(
            select(SealedSecret)
            .where(SealedSecret.master_version < below)
            .execution_options(populate_existing=True)
        ):
            context = _sealed_context(secret.name)
            old_master = self._master_key(session, secret.master_version)
            value = crypto.unwrap_key(old_master, secret.wrapped, context)
            secret.wrapped = crypto.wrap_key(key, value, context)
            secret.master_version = version
        session.flush()

    def retired_undestroyed_versions(self, session: Session) -> list[int]:
        return list(
            session.scalars(
                select(MasterKeyVersion.version).where(
                    MasterKeyVersion.retired_at.is_not(None),
                    MasterKeyVersion.destroyed_at.is_(None),
                )
            )
        )

    def destroy_retired_masters(self, session: Session, now: datetime) -> list[int]:
        """Step 3: destroy retired master versions. Returns those still pending.

        A file provider overwrites and deletes the files, including keys that a crashed
        rotation wrote but never registered. An environment-held key counts as destroyed
        once the operator has removed it (VAULT_MASTER_KEY_PREVIOUS unset).
        """
        self._lock(session)
        current_version, current_key = self._current_master(session)  # the right keys dir
        # Never destroy a version a row still names (a key wrapped under it by a writer that
        # raced a rotation before the lock existed): move such rows to the current version.
        self._rewrap(session, current_version, current_key, below=current_version)
        live = {
            row.fingerprint
            for row in session.scalars(
                select(MasterKeyVersion).where(MasterKeyVersion.retired_at.is_(None))
            )
        }
        available = {fingerprint(key) for key in self._provider.available()}
        pending = []
        for row in session.scalars(
            select(MasterKeyVersion).where(
                MasterKeyVersion.retired_at.is_not(None), MasterKeyVersion.destroyed_at.is_(None)
            )
        ):
            if row.fingerprint in available and not self._provider.destroy(row.fingerprint):
                pending.append(row.version)
                continue
            row.destroyed_at = now
            self._master_keys.pop(row.fingerprint, None)
        if self._provider.can_manage:
            registered = set(session.scalars(select(MasterKeyVersion.fingerprint)))
            for orphan in available - registered - live:
                # A rotation that crashed left it; one still running holds the lock, and
                # the grace period covers a writer on SQLite, which has no such lock.
                if self._provider.older_than(orphan, ORPHAN_KEY_GRACE):
                    self._provider.destroy(orphan)
        session.flush()
        assert current_version not in pending
        return pending


ENV_ROTATION_INSTRUCTION = (
    "The master key is held in VAULT_MASTER_KEY, so the app cannot rotate or destroy it. "
    "To complete the shred: (1) run `recvault keys generate` and keep its output as the new "
    "key; (2) restart the app and run `recvault keys rotate` with VAULT_MASTER_KEY set to the "
    "new key and VAULT_MASTER_KEY_PREVIOUS set to the old one; (3) unset "
    "VAULT_MASTER_KEY_PREVIOUS, restart, run `recvault keys rotate` once more to record the "
    "destruction, and destroy every other copy of the old key (password managers, escrow, "
    "deployment secrets). Until then, a database backup taken before the shred, together "
    "with the old key, can still decrypt the shredded year."
)
