#!/bin/sh
# The one-shot `init` service of docker-compose.yml. tests/test_deploy.py runs this same script
# natively against PostgreSQL and an S3 server.
#
# 1. `recvault init`, connected as the database owner: migrates the schema to the Alembic head,
#    creates the Flask secret and the master key if they are missing (and refuses to create a
#    master key when the database already references one), creates the bucket if needed and
#    applies its lifecycle rules. Running it again changes nothing.
# 2. On PostgreSQL, the runtime roles' privileges from postgres/runtime-grants.sql, for the
#    web app's role and the scheduler's alike. They are applied after every migration, so a
#    table added by an upgrade is covered at once and audit_events stays append-only for
#    every role but the owner.
#
# Environment: the VAULT_ settings (VAULT_DATABASE_URL must name the owner role), the AWS
# credentials of the bucket, DB_APP_ROLE (default vault_app), DB_SCHEDULER_ROLE (default
# vault_scheduler) and INIT_DONE_FILE (default /tmp/recvault-init.done), which is written
# last and read by the service's healthcheck.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
done_file="${INIT_DONE_FILE:-/tmp/recvault-init.done}"
rm -f "$done_file"

recvault init

case "${VAULT_DATABASE_URL:-}" in
    postgresql:* | postgresql+psycopg:* | postgres:*)
        python3 "$here/run_sql.py" "$here/postgres/runtime-grants.sql" \
            "recvault.app_role=${DB_APP_ROLE:-vault_app}" \
            "recvault.scheduler_role=${DB_SCHEDULER_ROLE:-vault_scheduler}"
        echo "runtime roles ${DB_APP_ROLE:-vault_app} and ${DB_SCHEDULER_ROLE:-vault_scheduler}: privileges applied"
        ;;
    *)
        echo "the database is not PostgreSQL: no runtime role to configure"
        ;;
esac

date -u +%Y-%m-%dT%H:%M:%SZ >"$done_file"
