"""`recvault init` is idempotent and never replaces a secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import CliRunner

from vault import schema
from vault.cli import main
from vault.db import make_engine


def instance_env(tmp_path: Path) -> dict[str, str]:
    return {"VAULT_INSTANCE_DIR": str(tmp_path / "instance")}


def test_init_creates_the_instance_and_then_changes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    env = instance_env(tmp_path)
    first = runner.invoke(main, ["init"], env=env)
    assert first.exit_code == 0, first.output
    instance = tmp_path / "instance"
    secret = instance / "secret_key"
    assert "created: secret key" in first.output
    assert instance.stat().st_mode & 0o777 == 0o700
    assert secret.stat().st_mode & 0o777 == 0o600
    before = secret.read_bytes()
    engine = make_engine(f"sqlite:///{instance / 'vault.db'}")
    try:
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()

    second = runner.invoke(main, ["init"], env=env)
    assert second.exit_code == 0, second.output
    assert "nothing new to create" in second.output
    assert secret.read_bytes() == before


def test_malformed_settings_are_a_clear_cli_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["init"], env={**instance_env(tmp_path), "VAULT_SHRED_HOUR": "99"}
    )
    assert result.exit_code != 0
    assert "VAULT_SHRED_HOUR" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["serve", "--help"], ["init", "--help"]])
def test_commands_document_themselves(command: list[str]) -> None:
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_init_refuses_a_wrong_keys_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    env = instance_env(tmp_path)
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    empty_keys = tmp_path / "other-keys"
    empty_keys.mkdir()
    result = runner.invoke(main, ["init"], env={**env, "VAULT_KEYS_DIR": str(empty_keys)})
    assert result.exit_code != 0
    assert "never starts afresh" in result.output
    assert list(empty_keys.iterdir()) == []


def test_keys_generate_prints_a_256_bit_key() -> None:
    result = CliRunner().invoke(main, ["keys", "generate"])
    assert result.exit_code == 0
    assert len(base64.b64decode(result.output.strip())) == 32


def test_keys_rotate_replaces_the_master_key_file(tmp_path: Path) -> None:
    runner = CliRunner()
    env = instance_env(tmp_path)
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    keys_dir = tmp_path / "instance" / "keys"
    before = sorted(keys_dir.glob("master-*.key"))
    result = runner.invoke(main, ["keys", "rotate", "--force"], env=env)
    assert result.exit_code == 0, result.output
    assert "rotated to version 2" in result.output
    after = sorted(keys_dir.glob("master-*.key"))
    assert len(after) == 1 and after != before
    assert runner.invoke(main, ["keys", "rotate"], env=env).output.strip() == "nothing to do"
