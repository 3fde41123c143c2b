"""`recvault`: the operator's command line. It calls services, as the web layer does."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from vault.app import build_runtime, create_app, initialise_instance
from vault.services import keys as key_service
from vault.services.errors import ServiceError
from vault.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(help="Recording Vault: restricted-access storage for recordings of online lessons.")
def main() -> None:
    """Entry point of the console script."""


@main.command(help="Create or update the instance: folders, secrets, database schema, storage.")
def init() -> None:
    try:
        report = initialise_instance(_settings())
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines():
        click.echo(line)


@main.group(help="Master key operations (see keys/README.md).")
def keys() -> None:
    """Group of key commands."""


@keys.command("generate", help="Print a new random master key (base64) for VAULT_MASTER_KEY.")
def keys_generate() -> None:
    click.echo(key_service.generate_master_key_material())


@keys.command("rotate", help="Finish a pending master-key rotation, or rotate now with --force.")
@click.option("--force", is_flag=True, help="Rotate even though no shred requires it.")
def keys_rotate(force: bool) -> None:
    runtime = build_runtime(_settings())
    try:
        outcome = key_service.finish_master_rotation(runtime, datetime.now(UTC), force=force)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        runtime.engine.dispose()
    if outcome.new_version is not None:
        click.echo(f"master key rotated to version {outcome.new_version}")
    if outcome.destroyed_versions:
        versions = ", ".join(map(str, outcome.destroyed_versions))
        click.echo(f"destroyed master key versions: {versions}")
    if outcome.pending_operator_action:
        click.echo(outcome.pending_operator_action, err=True)
        sys.exit(3)
    if outcome.new_version is None and not outcome.destroyed_versions:
        click.echo("nothing to do")


class _GunicornApplication(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """Runs the app under gunicorn without a config file, so `recvault serve` is self-contained."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Built in each worker after the fork, so no database connection crosses processes.
        return create_app(self._settings)


# Streams and uploads hold a thread for as long as they last, so a worker needs many
# threads; with gthread the worker's liveness is independent of request length, and
# the timeout only has to cover a stuck worker.
SERVE_THREADS = 32
SERVE_TIMEOUT_SECONDS = 120
# The access log leaves out query strings: they may carry signed tokens.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


@main.command(help="Run the app under gunicorn (gthread workers).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=SERVE_THREADS, show_default=True, type=click.IntRange(1, 256))
def serve(host: str, port: int, workers: int, threads: int) -> None:
    settings = _settings()
    try:
        settings.read_secret_key()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "worker_class": "gthread",
        "workers": workers,
        "threads": threads,
        "timeout": SERVE_TIMEOUT_SECONDS,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "preload_app": False,
    }
    _GunicornApplication(settings, options).run()
    sys.exit(0)


if __name__ == "__main__":
    main()
