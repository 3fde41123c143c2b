"""The production deployment: docker-compose.yml, the image, and the scripts its services run.

`docker compose` cannot run where the tests run (there is no container runtime), so the compose
file, the Dockerfile and the lock are checked as files, and the commands of the init and
scheduler services are run natively, with the environment compose gives them adapted: paths
moved under a temporary directory, the database pointing to a fresh PostgreSQL schema owned by
a role of its own, the bucket on the test session's SeaweedFS.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from botocore.exceptions import ClientError
from psycopg import errors, sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from storage_backends.base import LifecycleRules
from storage_backends.url import open_store
from tests.conftest import create_postgres_schema, drop_postgres_schema, postgres_base_url
from tests.support.backends import missing_backend
from tests.support.clock import MachineClock
from tests.support.people import add_person
from tests.support.processes import free_port, stop_group
from tests.support.recording_support import available_recording
from tests.support.seaweed import SeaweedServer
from vault import schema
from vault.app import build_runtime
from vault.db import make_engine, make_session_factory
from vault.models import AuditEvent, Recording
from vault.services import audit, audit_chain, lifecycle, year_end
from vault.settings import Settings, setting_names

# The store dates what it keeps by the machine's clock (file times, S3's Initiated), and
# so does whatever reads them back: these comparisons need that clock, not the test clock.
machine_clock = MachineClock()

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK_FILE = ROOT / "requirements.lock"
DEPLOY = ROOT / "deploy"
RUNTIME_GRANTS = DEPLOY / "postgres" / "runtime-grants.sql"
ROLES_SQL = DEPLOY / "postgres" / "initdb" / "roles.psql"
ROLES_SCRIPT = DEPLOY / "postgres" / "initdb" / "10-roles.sh"

# Where the image puts things, and where the native runs put them instead.
IMAGE_DEPLOY_DIR = "/app/deploy"
IMAGE_STATE_DIR = "/var/lib/recvault"

VAULT_NAME = re.compile(r"\bVAULT_[A-Z0-9_]+")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SCRIPT_TIMEOUT = 120


# -- the compose file as data --------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose()["services"]
    assert isinstance(services, dict)
    return services


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, whether compose spells it as a mapping or as a list."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (str(item).partition("=") for item in environment)
        return {name: value for name, _, value in pairs}
    assert isinstance(environment, dict)
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        assert separator, f".env.example: not NAME=VALUE: {line!r}"
        values[name] = value
    return values


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, from ``variables``.

    A required variable left empty (a password in .env.example) gets a placeholder, as the
    operator would fill it in.
    """

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = variables.get(name, "")
        if operator in (":-", "-"):
            return value or argument
        if operator in (":?", "?"):
            return value or f"example-{name.lower()}"
        return value

    return INTERPOLATION.sub(replace, text)


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), "commands are written in exec form"
    return [str(part) for part in command]


def native_path(value: str, state_dir: Path) -> str:
    """A path of the image, as the native run has it."""
    value = value.replace(IMAGE_DEPLOY_DIR, str(DEPLOY))
    return value.replace(IMAGE_STATE_DIR, str(state_dir))


# -- static checks -------------------------------------------------------------------------


def test_compose_sets_only_real_settings() -> None:
    names = setting_names()
    for service_name, service in compose_services().items():
        set_here = {name for name in environment_of(service) if name.startswith("VAULT_")}
        assert set_here <= names, f"{service_name} sets unknown variables {set_here - names}"
    # Anywhere else in the file too: shared blocks, interpolations, comments.
    mentioned = set(VAULT_NAME.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert mentioned <= names, f"docker-compose.yml names unknown variables {mentioned - names}"
    in_dockerfile = set(VAULT_NAME.findall(DOCKERFILE.read_text(encoding="utf-8")))
    assert in_dockerfile <= names, f"Dockerfile names unknown variables {in_dockerfile - names}"


def test_env_example_matches_the_compose_file() -> None:
    names = setting_names()
    example = env_example()
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    mentioned = set(VAULT_NAME.findall(text))
    assert mentioned <= names, f".env.example names unknown variables {mentioned - names}"
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = {match.group(1) for match in INTERPOLATION.finditer(compose_text)}
    required = {
        match.group(1) for match in INTERPOLATION.finditer(compose_text) if match.group(2) == ":?"
    }
    assert set(example) <= used, f".env.example sets what compose ignores: {set(example) - used}"
    assert required <= set(example), f".env.example lacks {required - set(example)}"


def test_compose_environment_makes_valid_settings() -> None:
    variables = env_example()
    for service_name in ("app", "init", "scheduler"):
        service = compose_services()[service_name]
        environment = {
            name: interpolate(value, variables) for name, value in environment_of(service).items()
        }
        settings = Settings.from_env(environment)
        assert settings.database_url.startswith("postgresql+psycopg://"), service_name
        assert settings.storage_url.startswith("s3://"), service_name
        assert settings.secret_key_file.parent == settings.keys_dir
        assert settings.proxy_count == 1
        open_store(settings.storage_url)  # parses; nothing is contacted


def test_every_service_has_a_healthcheck() -> None:
    for name, service in compose_services().items():
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert test and test != ["NONE"], f"{name} has an empty healthcheck"


def test_one_shot_services_run_once_and_gate_the_others() -> None:
    services = compose_services()
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"init", "minio-setup"}
    for name in set(services) - one_shot:
        assert services[name].get("restart") == "unless-stopped", name
    for name in ("app", "scheduler"):
        condition = services[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", name
    init_depends = services["init"]["depends_on"]
    assert init_depends["postgres"]["condition"] == "service_healthy"
    assert init_depends["minio-setup"]["condition"] == "service_completed_successfully"


def test_app_runs_recvault_serve_and_the_others_the_deploy_scripts() -> None:
    services = compose_services()
    app_command = command_of(services["app"])
    assert app_command[:2] == ["recvault", "serve"]
    assert app_command[app_command.index("--host") + 1] == "0.0.0.0"
    assert command_of(services["init"]) == ["sh", f"{IMAGE_DEPLOY_DIR}/init.sh"]
    assert command_of(services["scheduler"]) == ["sh", f"{IMAGE_DEPLOY_DIR}/scheduler.sh"]
    assert services["minio"]["image"] == services["minio-setup"]["image"]
    assert ":latest" not in COMPOSE_FILE.read_text(encoding="utf-8")


def test_database_roles_and_the_keys_volume() -> None:
    services = compose_services()

    def database_user(service: str) -> str:
        url = environment_of(services[service])["VAULT_DATABASE_URL"]
        match = re.match(r"postgresql://([a-z_]+):", url)
        assert match, url
        return match.group(1)

    assert database_user("app") == "vault_app"
    assert database_user("init") == "vault_owner"
    assert database_user("scheduler") == "vault_scheduler"
    assert environment_of(services["init"])["DB_APP_ROLE"] == "vault_app"
    assert environment_of(services["init"])["DB_SCHEDULER_ROLE"] == "vault_scheduler"
    roles = ROLES_SQL.read_text(encoding="utf-8")
    assert "CREATE ROLE vault_owner" in roles
    assert "CREATE ROLE vault_app" in roles
    assert "CREATE ROLE vault_scheduler" in roles
    # Neither the web app nor the scheduler holds the owner's password or the MinIO root key.
    for service in ("app", "scheduler"):
        service_text = yaml.safe_dump(services[service])
        for secret in ("DB_OWNER_PASSWORD", "MINIO_ROOT", "POSTGRES_PASSWORD"):
            assert secret not in service_text, f"{service} receives {secret}"

    def keys_mount(service: str) -> str:
        for volume in services[service].get("volumes", []):
            if f":{IMAGE_STATE_DIR}/keys" in volume:
                return str(volume)
        raise AssertionError(f"{service} does not mount the keys volume")

    assert keys_mount("app").endswith(":ro")
    assert not keys_mount("scheduler").endswith(":ro")
    keys_volume = keys_mount("init").split(":")[0]
    data_volumes = {
        str(volume).split(":")[0]
        for name in ("postgres", "minio")
        for volume in services[name]["volumes"]
    }
    assert keys_volume in load_compose()["volumes"]
    assert keys_volume not in data_volumes


def test_the_scheduler_role_is_made_like_the_web_apps() -> None:
    """roles.psql makes vault_scheduler as it makes vault_app (a login that inherits nothing
    and may connect), and 10-roles.sh gets its password from compose as it gets vault_app's."""
    roles = ROLES_SQL.read_text(encoding="utf-8")

    def created(role: str) -> str:
        match = re.search(rf"^CREATE ROLE {role} (.*) PASSWORD :'(\w+)';$", roles, re.MULTILINE)
        assert match, f"roles.psql does not create {role}"
        return match.group(1)

    assert created("vault_scheduler") == created("vault_app") == "LOGIN NOINHERIT"
    for role in ("vault_app", "vault_scheduler"):
        assert f'GRANT CONNECT ON DATABASE :"db" TO {role};' in roles
    assert ":'scheduler_password'" in roles
    script = ROLES_SCRIPT.read_text(encoding="utf-8")
    assert '--set=scheduler_password="$DB_SCHEDULER_PASSWORD"' in script
    assert '[ -z "${DB_SCHEDULER_PASSWORD:-}" ]' in script
    postgres = environment_of(compose_services()["postgres"])
    assert "DB_SCHEDULER_PASSWORD" in postgres
    scheduler_url = environment_of(compose_services()["scheduler"])["VAULT_DATABASE_URL"]
    assert "${DB_SCHEDULER_PASSWORD:?" in scheduler_url


def test_dockerfile_installs_only_hashed_requirements() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    installs = re.findall(r"pip install ([^\n]*)", text)
    locked = [line for line in installs if "requirements.lock" in line]
    assert locked, "the Dockerfile must install requirements.lock"
    assert all("--require-hashes" in line and "--no-deps" in line for line in locked)
    project = [line for line in installs if line.rstrip().endswith(" .")]
    assert project, "the Dockerfile must install the project itself"
    assert all("--no-deps" in line for line in project)
    assert "pybabel compile -d vault/translations" in text
    assert re.search(r"^EXPOSE 5000$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    # Every deploy file a compose service runs from the image is copied into it.
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    for script in set(re.findall(rf"{IMAGE_DEPLOY_DIR}/([\w./-]+)", compose_text)):
        assert (DEPLOY / script).is_file(), script
        assert f"deploy/{script}" in text, f"the Dockerfile does not copy deploy/{script}"


def test_build_context_excludes_secrets() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allow-list: everything is excluded unless named.
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed.isdisjoint({".env", "keys", "instance", ".git", ".venv", "tests"})
    assert {"vault", "storage_backends", "deploy", "requirements.lock"} <= allowed


def lock_requirements() -> list[str]:
    """The lock's requirements, one logical line each (continuations joined)."""
    text = LOCK_FILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_requirement_with_hashes() -> None:
    requirements = lock_requirements()
    assert requirements
    locked = {}
    for requirement in requirements:
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", requirement)
        assert match, f"not pinned: {requirement[:80]}"
        assert "--hash=sha256:" in requirement, f"no hash: {match.group(1)}"
        locked[canonical(match.group(1))] = match.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        name = canonical(re.split(r"[\s<>=!~;\[]", dependency, maxsplit=1)[0])
        assert name in locked, f"{name} is not in requirements.lock: run deploy/lock.sh"
    assert {"psycopg", "psycopg-binary", "redis", "setuptools"} <= set(locked)


# -- PostgreSQL sandboxes ------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """A fresh schema owned by a fresh owner role, and fresh runtime roles for the web app and
    the scheduler, made as deploy/postgres/initdb/roles.psql makes theirs.

    The test connects as the superuser of VAULT_TEST_DATABASE_URL and acts as a role through
    the ``role`` startup option, so no passwords or pg_hba entries are needed.
    """

    base_url: str
    schema: str
    owner: str
    app_role: str
    scheduler_role: str

    def url(self, role: str) -> str:
        options = f"-csearch_path={self.schema} -crole={role}"
        return (
            make_url(self.base_url)
            .update_query_dict({"options": options})
            .render_as_string(hide_password=False)
        )

    @property
    def owner_url(self) -> str:
        return self.url(self.owner)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    parsed = make_url(url)
    arguments: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    for name, value in parsed.query.items():
        arguments[name] = value if isinstance(value, str) else value[-1]
    return psycopg.connect(autocommit=autocommit, connect_timeout=5, **arguments)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    base_url = postgres_base_url()
    if base_url is None:
        missing_backend("PostgreSQL: set VAULT_TEST_DATABASE_URL")
    try:
        connect(base_url).close()
    except psycopg.OperationalError as exc:
        missing_backend(f"PostgreSQL of VAULT_TEST_DATABASE_URL does not answer: {exc}")
    suffix = uuid.uuid4().hex[:10]
    owner, app_role = f"vault_owner_t{suffix}", f"vault_app_t{suffix}"
    scheduler_role = f"vault_scheduler_t{suffix}"
    schema_name: str | None = None
    try:
        with connect(base_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
            for runtime_role in (app_role, scheduler_role):
                admin.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(sql.Identifier(runtime_role))
                )
        schema_name, _ = create_postgres_schema(base_url, "vault_deploy")
        with connect(base_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                    sql.Identifier(schema_name), sql.Identifier(owner)
                )
            )
        yield Sandbox(base_url, schema_name, owner, app_role, scheduler_role)
    finally:
        if schema_name is not None:
            drop_postgres_schema(base_url, schema_name)
        with connect(base_url, autocommit=True) as admin:
            for role in (app_role, scheduler_role, owner):
                exists = admin.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone()
                if exists:
                    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def apply_runtime_grants(sandbox: Sandbox) -> None:
    """What deploy/run_sql.py does for deploy/init.sh, as the owner."""
    with connect(sandbox.owner_url) as connection:
        connection.execute("SELECT set_config('recvault.app_role', %s, true)", (sandbox.app_role,))
        connection.execute(
            "SELECT set_config('recvault.scheduler_role', %s, true)", (sandbox.scheduler_role,)
        )
        connection.execute(RUNTIME_GRANTS.read_bytes())


# -- the runtime role ----------------------------------------------------------------------


def migrate_as_owner(sandbox: Sandbox) -> None:
    """The migrations, run as the tables' owner, as `recvault init` runs them."""
    engine = make_engine(sandbox.owner_url)
    try:
        schema.upgrade(engine)
    finally:
        engine.dispose()


def owner_verdict(sandbox: Sandbox) -> audit_chain.Verdict:
    """`recvault audit verify`'s verdict on the sandbox's chain, read as the owner."""
    engine = make_engine(sandbox.owner_url)
    try:
        with make_session_factory(engine)() as session:
            return audit_chain.verify(session)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_runtime_role_appends_to_the_audit_log_but_cannot_rewrite_it(sandbox: Sandbox) -> None:
    migrate_as_owner(sandbox)
    apply_runtime_grants(sandbox)
    apply_runtime_grants(sandbox)  # again, as every init does

    with connect(sandbox.url(sandbox.app_role), autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone() == (sandbox.app_role,)
        row = app.execute(
            "INSERT INTO audit_events (occurred_at, action, outcome, details, seq, entry_hash) "
            "VALUES (now(), 'test:appended', 'success', '{}', 1, repeat('0', 64)) RETURNING id"
        ).fetchone()
        assert row is not None
        event_id = row[0]
        selected = app.execute("SELECT action FROM audit_events WHERE id = %s", (event_id,))
        assert selected.fetchone() == ("test:appended",)
        app.execute(
            "INSERT INTO audit_event_context (event_id, ip_address) VALUES (%s, '192.0.2.1')",
            (event_id,),
        )
        # Personal details beside the chain stay erasable.
        app.execute(
            "UPDATE audit_event_context SET ip_address = NULL WHERE event_id = %s", (event_id,)
        )

        refused: list[sql.SQL | sql.Composed] = [
            sql.SQL("UPDATE audit_events SET action = 'test:rewritten' WHERE id = {}").format(
                event_id
            ),
            sql.SQL("DELETE FROM audit_events WHERE id = {}").format(event_id),
            sql.SQL("TRUNCATE audit_events CASCADE"),
            sql.SQL("UPDATE alembic_version SET version_num = 'x'"),
        ]
        for statement in refused:
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)
        remaining = app.execute("SELECT count(*) FROM audit_events WHERE id = %s", (event_id,))
        assert remaining.fetchone() == (1,)

        # An ordinary table: the runtime role reads and writes it freely.
        app.execute(
            "INSERT INTO master_key_versions (version, fingerprint, provider, created_at, "
            "must_retire) VALUES (99, 'f' || md5(random()::text), 'file', now(), false)"
        )
        app.execute("UPDATE master_key_versions SET must_retire = true WHERE version = 99")
        app.execute("DELETE FROM master_key_versions WHERE version = 99")
        assert app.execute("SELECT count(*) FROM master_key_versions").fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.parametrize("which", ["app_role", "scheduler_role"])
def test_runtime_grants_refuse_a_runtime_role_that_can_act_as_the_owner(
    sandbox: Sandbox, which: str
) -> None:
    migrate_as_owner(sandbox)
    runtime_role = getattr(sandbox, which)
    with connect(sandbox.base_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(sandbox.owner), sql.Identifier(runtime_role)
            )
        )
    with pytest.raises(errors.RaiseException, match="must not be, or act as, the owner"):
        apply_runtime_grants(sandbox)
    # Refused as a whole: the other role was not granted anything either.
    with connect(sandbox.owner_url) as connection:
        granted = connection.execute(
            "SELECT count(*) FROM information_schema.role_table_grants "
            "WHERE grantee IN (%s, %s) AND table_schema = %s",
            (sandbox.app_role, sandbox.scheduler_role, sandbox.schema),
        ).fetchone()
    assert granted == (0,)


@pytest.mark.postgres
def test_runtime_grants_name_a_missing_scheduler_role(sandbox: Sandbox) -> None:
    """A database made before the scheduler had a role of its own: init stops and says why,
    rather than leaving the scheduler to fail on every connection."""
    migrate_as_owner(sandbox)
    missing = f"vault_scheduler_missing_{uuid.uuid4().hex[:8]}"
    with connect(sandbox.owner_url) as connection:
        connection.execute("SELECT set_config('recvault.app_role', %s, true)", (sandbox.app_role,))
        connection.execute("SELECT set_config('recvault.scheduler_role', %s, true)", (missing,))
        with pytest.raises(errors.RaiseException, match=f"runtime role {missing} does not exist"):
            connection.execute(RUNTIME_GRANTS.read_bytes())


# -- who may rewrite the audit log: nobody --------------------------------------------------


def append_through_the_service(url: str, label: str) -> None:
    """Two events chained by the real ``audit.record`` over a connection as the role of
    ``url``, each committed on its own as an act commits its event and then linked: one with
    a request's personal details (kept in the erasable side table), one without."""
    engine = make_engine(url)
    linker = audit_chain.Linker(engine)
    try:
        sessions = make_session_factory(engine)
        for context in (audit.RequestContext("192.0.2.7", "Mozilla/5.0"), None):
            with sessions() as session, session.begin():
                audit.record(
                    session,
                    audit.Event(
                        audit.AuditAction.ACCESS_DENIED,
                        outcome=audit.Outcome.DENIED,
                        details={"reason": "rights_test", "role": label},
                        context=context,
                    ),
                )
            linker.link_committed()
    finally:
        linker.close()
        engine.dispose()


# The transaction-local settings by which the owner's functions open the append-only trigger.
PURGING = "recvault.audit_purge"
LINKING = "recvault.audit_link"


def refusal(url: str, statement: str, *, opening: str | None = None) -> str:
    """Run ``statement`` as the role of ``url`` in a transaction of its own (with the
    trigger's setting ``opening`` on, if given); it must be refused with
    insufficient_privilege. Returns PostgreSQL's message."""
    with connect(url) as connection:
        if opening is not None:
            connection.execute("SELECT set_config(%s, 'on', true)", (opening,))
        with pytest.raises(errors.InsufficientPrivilege) as refused:
            connection.execute(statement.encode())
        connection.rollback()
    return str(refused.value)


# What a role that wanted to hide an act would try, on the log and on its signed checkpoints.
REWRITES = [
    "UPDATE audit_events SET action = 'test:rewritten'",
    "UPDATE audit_events SET details = '{}' WHERE seq = 1",
    # A link of the role's own making, or a head moved: only audit_link() writes them.
    "UPDATE audit_events SET seq = 99, entry_hash = repeat('0', 64) WHERE seq IS NULL",
    "UPDATE audit_chain_head SET seq = 0, entry_hash = repeat('0', 64)",
    "DELETE FROM audit_events",
    "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
    "TRUNCATE audit_events CASCADE",
    "SELECT id FROM audit_events FOR UPDATE",
    "UPDATE audit_checkpoints SET tree_size = 0",
    "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
]


@pytest.mark.postgres
def test_audit_events_are_append_only_for_the_web_app_and_the_scheduler_and_the_owner(
    sandbox: Sandbox,
) -> None:
    migrate_as_owner(sandbox)
    apply_runtime_grants(sandbox)

    for runtime_role in (sandbox.app_role, sandbox.scheduler_role):
        url = sandbox.url(runtime_role)
        with connect(url) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (runtime_role,)
        # Appending is what both roles are for.
        append_through_the_service(url, runtime_role)
        for statement in REWRITES:
            message = refusal(url, statement)
            assert "permission denied" in message, (runtime_role, statement, message)
        # Announcing the retention purge opens the trigger, never the table: the purge is
        # the owner's function, not a runtime role's DELETE.
        message = refusal(url, "DELETE FROM audit_events", opening=PURGING)
        assert "permission denied" in message, (runtime_role, message)

    # The owner holds every privilege on its table, and still the trigger refuses.
    for statement, operation in [
        ("UPDATE audit_events SET action = 'test:rewritten'", "UPDATE"),
        ("UPDATE audit_events SET context_commitment = NULL WHERE seq = 1", "UPDATE"),
        ("DELETE FROM audit_events WHERE seq = 4", "DELETE"),
        ("DELETE FROM audit_events", "DELETE"),
    ]:
        message = refusal(sandbox.owner_url, statement)
        assert f"audit events are never changed or removed ({operation})" in message, message
    # The purge's setting admits a removal only, never a rewrite.
    message = refusal(
        sandbox.owner_url, "UPDATE audit_events SET outcome = 'success'", opening=PURGING
    )
    assert "never changed or removed (UPDATE)" in message, message
    # TRUNCATE fires no row trigger: a statement trigger refuses it, even with the setting.
    for statement in ("TRUNCATE audit_events CASCADE", "TRUNCATE audit_checkpoints"):
        message = refusal(sandbox.owner_url, statement, opening=PURGING)
        assert "never changed or removed (TRUNCATE)" in message, (statement, message)
    with connect(sandbox.owner_url, autocommit=True) as owner:
        owner.execute(FORGED_CHECKPOINT.encode())  # a row for the row triggers to guard
    for statement, operation in [
        ("UPDATE audit_checkpoints SET tree_size = 0", "UPDATE"),
        ("DELETE FROM audit_checkpoints", "DELETE"),
    ]:
        message = refusal(sandbox.owner_url, statement)
        assert f"audit checkpoints are never changed or removed ({operation})" in message

    engine = make_engine(sandbox.owner_url)
    try:
        with make_session_factory(engine)() as session:
            verdict = audit_chain.verify(session)
            roles = [
                event.details["role"]
                for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
            ]
    finally:
        engine.dispose()
    assert verdict.intact, verdict
    assert verdict.count == 4
    assert roles == [sandbox.app_role] * 2 + [sandbox.scheduler_role] * 2


UNLINKED_EVENT = (
    "INSERT INTO audit_events (occurred_at, action, outcome, details) "
    "VALUES (now(), 'test:unlinked', 'success', '{}')"
)


@pytest.mark.postgres
def test_an_event_is_linked_once_by_the_linking_function_and_nothing_else_changes(
    sandbox: Sandbox,
) -> None:
    migrate_as_owner(sandbox)
    apply_runtime_grants(sandbox)
    app_url = sandbox.url(sandbox.app_role)
    with connect(app_url, autocommit=True) as app:
        app.execute(UNLINKED_EVENT)  # as an act commits its event: no number, no link yet
    # With the linking setting on, even the owner may not change anything else of an event
    # while linking it.
    message = refusal(
        sandbox.owner_url,
        "UPDATE audit_events SET seq = 1, entry_hash = repeat('0', 64), "
        "action = 'test:rewritten' WHERE seq IS NULL",
        opening=LINKING,
    )
    assert "never changed or removed (UPDATE)" in message, message
    for runtime_role in (sandbox.app_role, sandbox.scheduler_role):
        with connect(sandbox.url(runtime_role), autocommit=True) as linker:
            linked = linker.execute("SELECT linked_after, linked_through FROM audit_link()")
            # The first call links the event; the second finds nothing left to link.
            assert linked.fetchone() == ((0, 1) if runtime_role == sandbox.app_role else (1, 1))
    # A linked event is never linked again, not even by the owner with the setting on.
    message = refusal(sandbox.owner_url, "UPDATE audit_events SET seq = 2", opening=LINKING)
    assert "never changed or removed (UPDATE)" in message, message
    verdict = owner_verdict(sandbox)
    assert verdict.intact and verdict.count == 1 and verdict.rehashed == 0, verdict


FORGED_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (tree_size, root_hash, head_hash, created_at, body, "
    "signature, key_fingerprint, frontier) VALUES "
    "(2, repeat('0', 64), repeat('0', 64), now(), '{}', 'forged', 'forged', '[]')"
)
FORGED_PURGE = (
    "INSERT INTO audit_events (occurred_at, action, outcome, details, seq, entry_hash) "
    "VALUES (now(), 'audit:purged', 'success', '{\"through_seq\": 2}', 1000, repeat('0', 64))"
)


@pytest.mark.postgres
def test_only_the_scheduler_may_call_the_retention_purge(sandbox: Sandbox) -> None:
    """The purge runs with the owner's rights. The web app may append a purge event and a
    checkpoint of its own making, so were it allowed to call the purge it could erase the
    log up to them: it is refused, and only the scheduler, which runs the purge, may call."""
    migrate_as_owner(sandbox)
    apply_runtime_grants(sandbox)
    append_through_the_service(sandbox.url(sandbox.app_role), sandbox.app_role)
    with connect(sandbox.url(sandbox.app_role), autocommit=True) as app:
        app.execute(FORGED_CHECKPOINT)
        app.execute(FORGED_PURGE)
        with pytest.raises(errors.InsufficientPrivilege, match="function audit_purge"):
            app.execute("SELECT audit_purge(2)")
        kept = app.execute("SELECT count(*) FROM audit_events WHERE seq <= 2").fetchone()
    assert kept == (2,)
    # The scheduler gets past the privilege check: the function itself judges the range.
    with (
        connect(sandbox.url(sandbox.scheduler_role), autocommit=True) as scheduler,
        pytest.raises(errors.RaiseException, match="no checkpoint covers exactly 1 "),
    ):
        scheduler.execute("SELECT audit_purge(1)")
    with connect(sandbox.owner_url) as connection:
        connection.execute("SELECT set_config('recvault.app_role', %s, true)", (sandbox.app_role,))
        connection.execute(
            "SELECT set_config('recvault.scheduler_role', %s, true)", (sandbox.app_role,)
        )
        with pytest.raises(errors.RaiseException, match="must not be the web app's role"):
            connection.execute(RUNTIME_GRANTS.read_bytes())


# -- the init service, natively ------------------------------------------------------------


def service_environment(
    service: str, state_dir: Path, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The service's compose environment with .env.example's values, adapted to this host."""
    variables = env_example()
    environment = {
        name: native_path(interpolate(value, variables), state_dir)
        for name, value in environment_of(compose_services()[service]).items()
    }
    base = {
        name: value for name, value in os.environ.items() if not name.startswith(("VAULT_", "DB_"))
    }
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**base, **environment, **overrides}


def service_command(service: str, state_dir: Path) -> list[str]:
    """The service's command with .env.example's values, adapted to this host."""
    variables = env_example()
    return [
        native_path(interpolate(part, variables), state_dir)
        for part in command_of(compose_services()[service])
    ]


def run_service_command(
    service: str, environment: Mapping[str, str], state_dir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    command = service_command(service, state_dir)
    return subprocess.run(
        [*command, *extra],
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )


def witness_url(server: SeaweedServer, bucket: str) -> str:
    """The audit witness bucket that minio-setup makes beside ``bucket`` (made here: init
    checks it and never makes it, since only a bucket's creation can turn its lock on)."""
    name = f"{bucket}-witness"
    with suppress(ClientError):  # made already, for an earlier service of the same test
        server.client().create_bucket(Bucket=name)
    return server.url(name)


def init_environment(
    sandbox: Sandbox, server: SeaweedServer, bucket: str, state_dir: Path
) -> dict[str, str]:
    state_dir.mkdir(mode=0o700, exist_ok=True)
    (state_dir / "keys").mkdir(mode=0o700, exist_ok=True)
    return service_environment(
        "init",
        state_dir,
        {
            "VAULT_DATABASE_URL": sandbox.owner_url,
            "VAULT_STORAGE_URL": server.url(bucket),
            "VAULT_AUDIT_WITNESS_URL": witness_url(server, bucket),
            "DB_APP_ROLE": sandbox.app_role,
            "DB_SCHEDULER_ROLE": sandbox.scheduler_role,
            "INIT_DONE_FILE": str(state_dir / "init.done"),
            **server.env(),
        },
    )


def service_after_init(
    service: str,
    role: str,
    sandbox: Sandbox,
    server: SeaweedServer,
    tmp_path: Path,
    extra: dict[str, str],
) -> tuple[dict[str, str], Path]:
    """Run the init service on a fresh bucket, then give ``service`` its environment as
    ``role``, with ``extra`` settings: what compose does before starting it."""
    bucket = server.new_bucket_name()
    state_dir = tmp_path / "state"
    prepared = run_service_command(
        "init", init_environment(sandbox, server, bucket, state_dir), state_dir
    )
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    environment = service_environment(
        service,
        state_dir,
        {
            "VAULT_DATABASE_URL": sandbox.url(role),
            "VAULT_STORAGE_URL": server.url(bucket),
            "VAULT_AUDIT_WITNESS_URL": witness_url(server, bucket),
            **extra,
            **server.env(),
        },
    )
    return environment, state_dir


def snapshot(sandbox: Sandbox, server: SeaweedServer, bucket: str, state_dir: Path) -> object:
    """Everything init may touch: files, database rows and privileges, bucket rules."""
    files = {
        str(path.relative_to(state_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(state_dir.rglob("*"))
        if path.is_file() and path.name != "init.done"
    }
    with connect(sandbox.owner_url) as connection:
        database = {
            "revision": connection.execute("SELECT version_num FROM alembic_version").fetchall(),
            "masters": connection.execute(
                "SELECT version, fingerprint, retired_at FROM master_key_versions ORDER BY 1"
            ).fetchall(),
            "sealed": connection.execute(
                "SELECT name, master_version, wrapped FROM sealed_secrets ORDER BY 1"
            ).fetchall(),
            "events": connection.execute("SELECT count(*) FROM audit_events").fetchall(),
            "grants": connection.execute(
                "SELECT grantee, table_name, privilege_type "
                "FROM information_schema.role_table_grants "
                "WHERE grantee IN (%s, %s) AND table_schema = %s ORDER BY 1, 2, 3",
                (sandbox.app_role, sandbox.scheduler_role, sandbox.schema),
            ).fetchall(),
        }
    rules = server.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return files, database, rules


@pytest.mark.postgres
@pytest.mark.s3
def test_init_service_prepares_database_bucket_and_roles_and_is_idempotent(
    sandbox: Sandbox, s3_env: SeaweedServer, tmp_path: Path
) -> None:
    bucket = s3_env.new_bucket_name()  # the init creates it
    state_dir = tmp_path / "state"
    environment = init_environment(sandbox, s3_env, bucket, state_dir)

    first = run_service_command("init", environment, state_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^created: .*master key", first.stdout, re.MULTILINE), first.stdout
    assert (state_dir / "init.done").is_file()

    engine = make_engine(sandbox.owner_url)
    try:
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()
    rules = open_store(s3_env.url(bucket)).get_lifecycle_rules()
    assert rules.abort_incomplete_after_days == LifecycleRules().abort_incomplete_after_days
    keys_dir = state_dir / "keys"
    assert len(list(keys_dir.glob("master-*.key"))) == 1
    assert (keys_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    with connect(sandbox.owner_url) as connection:
        for runtime_role in (sandbox.app_role, sandbox.scheduler_role):
            privileges = connection.execute(
                "SELECT has_table_privilege(%s, 'audit_events', 'INSERT'), "
                "has_table_privilege(%s, 'audit_events', 'UPDATE'), "
                "has_table_privilege(%s, 'sealed_secrets', 'UPDATE')",
                (runtime_role,) * 3,
            ).fetchone()
            assert privileges == (True, False, True), runtime_role

    before = snapshot(sandbox, s3_env, bucket, state_dir)
    second = run_service_command("init", environment, state_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing new to create" in second.stdout
    assert snapshot(sandbox, s3_env, bucket, state_dir) == before


@pytest.mark.postgres
@pytest.mark.s3
def test_app_service_serves_as_the_runtime_role_and_passes_its_healthcheck(
    sandbox: Sandbox, s3_env: SeaweedServer, tmp_path: Path
) -> None:
    environment, state_dir = service_after_init(
        "app",
        sandbox.app_role,
        sandbox,
        s3_env,
        tmp_path,
        # No Redis here: the rate-limit counters stay in the process.
        {"VAULT_RATELIMIT_STORAGE_URL": ""},
    )
    port = free_port()
    command = service_command("app", state_dir)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--workers") + 1] = "1"
    log_path = tmp_path / "app.log"
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while healthcheck("app", environment, state_dir, port) != 0:
            assert app.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.5)
    finally:
        stop_group(app, grace_seconds=15)


# -- the scheduler service, natively -------------------------------------------------------


STUB_RECVAULT = """#!/bin/sh
echo "$*" >>"$STUB_CALLS"
exit "${STUB_STATUS:-0}"
"""


@contextmanager
def stub_scheduler_environment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The scheduler's environment with a stand-in `recvault` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "recvault"
    stub.write_text(STUB_RECVAULT, encoding="utf-8")
    stub.chmod(0o755)
    environment = service_environment(
        "scheduler",
        tmp_path,
        {
            "STUB_CALLS": str(tmp_path / "calls"),
            "SCHEDULER_STATE_FILE": str(tmp_path / "last-success"),
        },
    )
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment['PATH']}"
    yield environment


def healthcheck(
    service: str, environment: Mapping[str, str], state_dir: Path, port: int | None = None
) -> int:
    """Run the service's compose healthcheck natively; its exit status."""
    test = compose_services()[service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [native_path(str(part), state_dir) for part in test[1:]]
    if port is not None:
        command = [part.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for part in command]
    return subprocess.run(
        command, env=dict(environment), capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.file_times
def test_scheduler_runs_the_lifecycle_job_and_reports_its_health(tmp_path: Path) -> None:
    with stub_scheduler_environment(tmp_path) as environment:
        calls = tmp_path / "calls"
        assert healthcheck("scheduler", environment, tmp_path) != 0  # no run yet

        failed = run_service_command(
            "scheduler", {**environment, "STUB_STATUS": "3"}, tmp_path, "--once"
        )
        assert failed.returncode == 3
        assert "failed with status 3" in failed.stderr
        assert healthcheck("scheduler", environment, tmp_path) != 0

        succeeded = run_service_command("scheduler", environment, tmp_path, "--once")
        assert succeeded.returncode == 0, succeeded.stderr
        assert calls.read_text().splitlines() == ["lifecycle run", "lifecycle run"]
        assert healthcheck("scheduler", environment, tmp_path) == 0

        # Too old a success is unhealthy again: two missed runs.
        stale = machine_clock.timestamp() - 2 * 3600 - 601
        os.utime(tmp_path / "last-success", (stale, stale))
        assert healthcheck("scheduler", environment, tmp_path) != 0


def test_scheduler_loop_repeats_keeps_going_after_a_failure_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    with stub_scheduler_environment(tmp_path) as environment:
        calls = tmp_path / "calls"
        loop = subprocess.Popen(
            service_command("scheduler", tmp_path),
            env={**environment, "SCHEDULER_INTERVAL_SECONDS": "1", "STUB_STATUS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if calls.exists() and len(calls.read_text().splitlines()) >= 2:
                    break
                time.sleep(0.1)
            assert calls.exists() and len(calls.read_text().splitlines()) >= 2
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(timeout=5) == 0
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()


@pytest.mark.postgres
@pytest.mark.s3
def test_scheduler_runs_the_real_lifecycle_job_after_init(
    sandbox: Sandbox, s3_env: SeaweedServer, tmp_path: Path
) -> None:
    # The scheduler's own role, with the runtime grants init gave it: the whole job
    # (clean-up, ending views, the signed checkpoint) needs nothing more.
    state_file = tmp_path / "state" / "last-success"
    environment, state_dir = service_after_init(
        "scheduler",
        sandbox.scheduler_role,
        sandbox,
        s3_env,
        tmp_path,
        {"SCHEDULER_STATE_FILE": str(state_file)},
    )
    ran = run_service_command("scheduler", environment, state_dir, "--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert healthcheck("scheduler", environment, state_dir) == 0


@pytest.mark.postgres
@pytest.mark.s3
def test_the_scheduler_role_purges_expired_audit_events_through_the_function(
    sandbox: Sandbox, s3_env: SeaweedServer, tmp_path: Path
) -> None:
    """The lifecycle job, as the scheduler's role, removes the events past the retention
    period: its grants are enough for the purge, which goes through the owner's function."""
    environment, _ = service_after_init(
        "scheduler",
        sandbox.scheduler_role,
        sandbox,
        s3_env,
        tmp_path,
        {"VAULT_AUDIT_RETENTION_DAYS": "1"},
    )
    runtime = build_runtime(Settings.from_env(environment), machine_clock)
    try:
        # Two days on, every event init recorded is past the one-day retention.
        report = lifecycle.run(runtime, machine_clock() + timedelta(days=2), dry_run=False)
    finally:
        runtime.upload_workers.shutdown()
        runtime.engine.dispose()
    assert report.failures == ()
    assert report.audit_purge is not None and report.audit_purge.removed > 0
    verified = subprocess.run(
        ["recvault", "audit", "verify"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.postgres
@pytest.mark.s3
def test_the_scheduler_role_shreds_a_year_and_later_purges_its_tombstones(
    sandbox: Sandbox, s3_env: SeaweedServer, tmp_path: Path
) -> None:
    """The year-end, as the scheduler's role with the grants init gave it: the keys, the
    objects, the tombstones and the certificate need nothing more; nor does the purge of
    the tombstones a year on."""
    environment, _ = service_after_init(
        "scheduler", sandbox.scheduler_role, sandbox, s3_env, tmp_path, {}
    )
    runtime = build_runtime(Settings.from_env(environment), machine_clock)
    try:
        add_person(runtime, "skolotaja", "teacher")
        recording_id = available_recording(runtime, "skolotaja", 4_000)
        with runtime.sessions() as session:
            recording = session.get(Recording, recording_id)
            assert recording is not None
            school_year = recording.school_year
        outcome = year_end.run(runtime, school_year, machine_clock(), early=True)
        assert outcome.complete and outcome.objects_pending == 0
        a_year_on = machine_clock() + timedelta(days=runtime.settings.tombstone_days + 1)
        report = lifecycle.run(runtime, a_year_on, dry_run=False)
        assert report.failures == ()
        assert report.tombstones_purged == 1
    finally:
        runtime.close()
