"""Settings come from VAULT_ variables, with absolute paths and no secret defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vault.app import create_app, create_secret_file
from vault.settings import Settings, SettingsError, setting_names

SPEC_VARIABLES = {
    "VAULT_INSTANCE_DIR",
    "VAULT_DATABASE_URL",
    "VAULT_STORAGE_URL",
    "VAULT_KEYS_DIR",
    "VAULT_MASTER_KEY",
    "VAULT_SECRET_KEY_FILE",
    "VAULT_BASE_URL",
    "VAULT_SCHOOL_NAME",
    "VAULT_SCHOOL_ADDRESS",
    "VAULT_DPO_CONTACT",
    "VAULT_TIMEZONE",
    "VAULT_SHRED_HOUR",
    "VAULT_MAX_UPLOAD_BYTES",
    "VAULT_TEACHER_QUOTA_BYTES",
    "VAULT_SMTP_URL",
    "VAULT_MAIL_FROM",
    "VAULT_RATELIMIT_STORAGE_URL",
    "VAULT_TOMBSTONE_DAYS",
    "VAULT_AUDIT_RETENTION_DAYS",
}


def test_every_specified_variable_is_a_setting() -> None:
    assert setting_names() >= SPEC_VARIABLES


def test_defaults_live_in_the_instance_folder_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.instance_dir == tmp_path / "instance"
    assert settings.keys_dir == tmp_path / "instance" / "keys"
    assert settings.secret_key_file.is_absolute()
    assert settings.database_url == f"sqlite:///{tmp_path / 'instance' / 'vault.db'}"
    assert settings.storage_url == (tmp_path / "instance" / "store").as_uri()
    assert settings.timezone == "Europe/Riga"
    assert settings.shred_hour == 18
    assert settings.master_key is None


def test_settings_are_frozen_and_hide_secrets_from_repr(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"VAULT_INSTANCE_DIR": str(tmp_path), "VAULT_MASTER_KEY": "c2VjcmV0"}
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.shred_hour = 3  # type: ignore[misc]
    assert "c2VjcmV0" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VAULT_SHRED_HOUR", "25"),
        ("VAULT_SHRED_HOUR", "six"),
        ("VAULT_TIMEZONE", "Mars/Base"),
        ("VAULT_BASE_URL", "ftp://x"),
        ("VAULT_MAX_UPLOAD_BYTES", "0"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_postgres_urls_use_psycopg() -> None:
    settings = Settings.from_env({"VAULT_DATABASE_URL": "postgresql://u@db:5432/vault"})
    assert settings.database_url == "postgresql+psycopg://u@db:5432/vault"


def test_the_app_refuses_to_start_without_its_secret(tmp_path: Path) -> None:
    settings = Settings.from_env({"VAULT_INSTANCE_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="recvault init"):
        create_app(settings)


def test_secret_file_is_owner_only_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert create_secret_file(path)
    first = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert not create_secret_file(path)
    assert path.read_bytes() == first
