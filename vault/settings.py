"""Configuration: one frozen value built from ``VAULT_`` environment variables.

There are no secret defaults here. The Flask secret and the keys live in files that
``recvault init`` generates; a missing secret stops the app instead of silently
running with a guessable one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

GIB = 1024**3

ENV_PREFIX = "VAULT_"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    instance_dir: Path
    database_url: str
    storage_url: str
    keys_dir: Path
    secret_key_file: Path
    # The master key as base64 when the operator keeps it outside the keys directory.
    # Excluded from repr so it never reaches a log line or a traceback.
    master_key: str | None = field(default=None, repr=False)
    # The previous master key, set only while the operator rotates an environment-held key.
    master_key_previous: str | None = field(default=None, repr=False)
    base_url: str = "http://127.0.0.1:5000"
    school_name: str = ""
    school_address: str = ""
    dpo_contact: str = ""
    timezone: str = "Europe/Riga"
    shred_hour: int = 18
    max_upload_bytes: int = 8 * GIB
    teacher_quota_bytes: int = 100 * GIB
    smtp_url: str | None = field(default=None, repr=False)
    mail_from: str | None = None
    ratelimit_storage_url: str | None = field(default=None, repr=False)
    tombstone_days: int = 365
    audit_retention_days: int = 3 * 365
    # A store apart from the recordings' (a bucket with S3 Object Lock) where every signed
    # audit checkpoint is also written, to stay out of reach of whoever controls the server.
    audit_witness_url: str | None = field(default=None, repr=False)
    # How many reverse proxies in front of the app set X-Forwarded-For; the client address
    # feeds lockout and rate limits, so trusting a spoofable header would let one attacker
    # pose as many.
    proxy_count: int = 0
    # A view ends this long after its last heartbeat (the watch page sends several a period).
    view_idle_timeout_seconds: int = 15 * 60
    # A long body (one open-ended request can carry a whole lesson) re-runs the policy this
    # often while it is sent; 0 re-runs it before every piece.
    stream_recheck_seconds: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value.strip() if value is not None and value.strip() != "" else None

        def get_int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None
            if value < minimum or (maximum is not None and value > maximum):
                bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
                raise SettingsError(f"{ENV_PREFIX}{name} must be {bounds}, got {value}")
            return value

        instance_dir = Path(get("INSTANCE_DIR") or "instance").expanduser().resolve()
        keys_dir = Path(get("KEYS_DIR") or instance_dir / "keys").expanduser().resolve()
        secret_key_file = (
            Path(get("SECRET_KEY_FILE") or instance_dir / "secret_key").expanduser().resolve()
        )
        database_url = normalise_database_url(
            get("DATABASE_URL") or f"sqlite:///{instance_dir / 'vault.db'}"
        )
        storage_url = get("STORAGE_URL") or (instance_dir / "store").as_uri()
        timezone = get("TIMEZONE") or cls.timezone
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"{ENV_PREFIX}TIMEZONE is not a known time zone: {timezone!r}"
            ) from None
        base_url = (get("BASE_URL") or cls.base_url).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise SettingsError(f"{ENV_PREFIX}BASE_URL must be an http(s) URL, got {base_url!r}")

        return cls(
            instance_dir=instance_dir,
            database_url=database_url,
            storage_url=storage_url,
            keys_dir=keys_dir,
            secret_key_file=secret_key_file,
            master_key=get("MASTER_KEY"),
            master_key_previous=get("MASTER_KEY_PREVIOUS"),
            base_url=base_url,
            school_name=get("SCHOOL_NAME") or "",
            school_address=get("SCHOOL_ADDRESS") or "",
            dpo_contact=get("DPO_CONTACT") or "",
            timezone=timezone,
            shred_hour=get_int("SHRED_HOUR", cls.shred_hour, 0, 23),
            max_upload_bytes=get_int("MAX_UPLOAD_BYTES", cls.max_upload_bytes, 1),
            teacher_quota_bytes=get_int("TEACHER_QUOTA_BYTES", cls.teacher_quota_bytes, 1),
            smtp_url=get("SMTP_URL"),
            mail_from=get("MAIL_FROM"),
            ratelimit_storage_url=get("RATELIMIT_STORAGE_URL"),
            tombstone_days=get_int("TOMBSTONE_DAYS", cls.tombstone_days, 0),
            audit_retention_days=get_int("AUDIT_RETENTION_DAYS", cls.audit_retention_days, 1),
            audit_witness_url=get("AUDIT_WITNESS_URL"),
            proxy_count=get_int("PROXY_COUNT", cls.proxy_count, 0, 5),
            view_idle_timeout_seconds=get_int(
                "VIEW_IDLE_TIMEOUT", cls.view_idle_timeout_seconds, 1, 24 * 3600
            ),
            stream_recheck_seconds=get_int(
                "STREAM_RECHECK_SECONDS", cls.stream_recheck_seconds, 0, 3600
            ),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def view_idle_timeout(self) -> timedelta:
        return timedelta(seconds=self.view_idle_timeout_seconds)

    @property
    def served_over_https(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    def read_secret_key(self) -> bytes:
        """The Flask secret, which ``recvault init`` wrote; never a fallback."""
        try:
            secret = self.secret_key_file.read_bytes().strip()
        except FileNotFoundError:
            raise SettingsError(
                f"the secret key file {self.secret_key_file} does not exist; run `recvault init`"
            ) from None
        if len(secret) < 32:
            raise SettingsError(f"the secret key in {self.secret_key_file} is too short")
        return secret


def normalise_database_url(url: str) -> str:
    """Route PostgreSQL URLs to the psycopg 3 driver, the one the project installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def setting_names() -> frozenset[str]:
    """Every ``VAULT_`` variable this class reads (used to check deployment files)."""
    return frozenset(ENV_PREFIX + f.name.upper() for f in fields(Settings))
