"""Run one SQL file on the PostgreSQL database named by VAULT_DATABASE_URL, in one transaction.

Usage: python3 run_sql.py FILE [NAME=VALUE ...]

Each NAME=VALUE (NAME with a dot, such as ``recvault.app_role``) becomes a transaction-local
setting that the SQL reads with ``current_setting(NAME)``: values reach the database as bound
parameters, never by editing SQL text. The image has no psql; this is its stand-in for the
init service (deploy/init.sh).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")


def connect_arguments(url: str) -> dict[str, Any]:
    """Connection parameters from the URL, parsed as the app parses it (SQLAlchemy's rules)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() != "postgresql":
        raise SystemExit("run_sql.py: VAULT_DATABASE_URL must name a PostgreSQL database")
    arguments: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    for name, value in parsed.query.items():
        arguments[name] = value if isinstance(value, str) else value[-1]
    return arguments


def parse_settings(arguments: list[str]) -> list[tuple[str, str]]:
    settings = []
    for argument in arguments:
        name, separator, value = argument.partition("=")
        if not separator or not _SETTING_NAME.fullmatch(name):
            raise SystemExit(f"run_sql.py: expected NAME=VALUE, NAME dotted; got {argument!r}")
        settings.append((name, value))
    return settings


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    sql = Path(argv[1]).read_text(encoding="utf-8")
    settings = parse_settings(argv[2:])
    arguments = connect_arguments(os.environ.get("VAULT_DATABASE_URL", ""))
    try:
        with psycopg.connect(**arguments) as connection:
            for name, value in settings:
                connection.execute("SELECT set_config(%s, %s, true)", (name, value))
            connection.execute(sql.encode())
    except psycopg.Error as exc:
        print(f"run_sql.py: {argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
