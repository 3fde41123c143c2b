#!/bin/sh
# Runs once, when the postgres service starts on an empty data directory
# (/docker-entrypoint-initdb.d). Creates the owner role and the runtime roles of the web app
# and the scheduler from roles.psql.
# Changing the passwords later, or adding the scheduler's role to a database created before
# it existed, is done by hand: see docs/operations.md.
if [ -z "${DB_OWNER_PASSWORD:-}" ] || [ -z "${DB_APP_PASSWORD:-}" ] ||
    [ -z "${DB_SCHEDULER_PASSWORD:-}" ]; then
    echo "10-roles.sh: DB_OWNER_PASSWORD, DB_APP_PASSWORD and DB_SCHEDULER_PASSWORD must be set" \
        "(see .env.example)" >&2
    exit 1
fi
psql --no-psqlrc --set=ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=db="$POSTGRES_DB" \
    --set=owner_password="$DB_OWNER_PASSWORD" \
    --set=app_password="$DB_APP_PASSWORD" \
    --set=scheduler_password="$DB_SCHEDULER_PASSWORD" \
    --file=/docker-entrypoint-initdb.d/roles.psql
