-- Privileges of the runtime roles: vault_app, the role the web app connects as, and
-- vault_scheduler, the role of the scheduler (the hourly lifecycle job and the operator's
-- console commands). Both get exactly the same table privileges and may link committed
-- audit events into the chain; only the scheduler may call the retention purge.
--
-- deploy/init.sh applies this file after every migration, connected as the owner of the
-- tables (vault_owner), to the schema the connection uses (current_schema(), normally
-- "public"). Running it again changes nothing. The roles' names come from the settings
-- recvault.app_role (default vault_app) and recvault.scheduler_role (default
-- vault_scheduler). By hand, as vault_owner:
--     psql "$URL" -c "SET recvault.app_role = 'vault_app'" \
--         -c "SET recvault.scheduler_role = 'vault_scheduler'" -f runtime-grants.sql
--
-- The runtime roles read and write the ordinary tables, but the audit log is append-only
-- for them: on audit_events and audit_checkpoints they have SELECT and INSERT only, never
-- UPDATE, DELETE or TRUNCATE.
-- A compromised web process can add events but cannot rewrite or erase history, nor can
-- the scheduler other than through the purge below; and since PostgreSQL ties SELECT ...
-- FOR UPDATE to the UPDATE privilege, neither can lock those rows (the chain's
-- serialisation must not rely on locking audit rows).
--
-- Events are numbered and linked into the chain by audit_link (migration 0014), a function
-- that runs with the owner's rights and that both roles may call: the chain head is
-- read-only for them, and the events' links are written only by that function, so neither
-- role can move the head or give an event a link of its own making.
--
-- The retention purge deletes old events through audit_purge (migration 0013), a function
-- that runs with the owner's rights, so neither role needs DELETE on the log. PostgreSQL lets
-- PUBLIC execute every new function; since both runtime roles may append to audit_events
-- and audit_checkpoints, a role that could call audit_purge could first record a purge and
-- a checkpoint of its own and then erase the log up to them. So nobody but the owner may
-- execute the owner's functions of the schema, except those listed in scheduler_routines,
-- which the scheduler (the only one that runs the purge) may call; the web app may not.
-- Privileges are rebuilt from nothing on every run, so one removed here is removed there.

DO $grants$
DECLARE
    app_role text := coalesce(nullif(current_setting('recvault.app_role', true), ''), 'vault_app');
    scheduler_role text := coalesce(
        nullif(current_setting('recvault.scheduler_role', true), ''), 'vault_scheduler');
    runtime_roles text[];
    runtime_role text;
    target text := current_schema();
    -- Tables the runtime roles may only read and append to.
    append_only text[] := ARRAY['audit_events', 'audit_checkpoints'];
    -- Tables only migrations and the owner's functions write.
    read_only text[] := ARRAY['alembic_version', 'audit_chain_head'];
    -- The owner's functions both runtime roles may call.
    runtime_routines text[] := ARRAY['audit_link()'];
    -- The owner's functions only the scheduler may call.
    scheduler_routines text[] := ARRAY['audit_purge(bigint)'];
    table_name text;
    routine text;
BEGIN
    runtime_roles := ARRAY[app_role, scheduler_role];
    IF target IS NULL THEN
        RAISE EXCEPTION 'no current schema: check the search_path of the connection';
    END IF;
    IF app_role = scheduler_role THEN
        RAISE EXCEPTION 'the scheduler role % must not be the web app''s role: only the '
            'scheduler may call the retention purge', scheduler_role;
    END IF;
    -- Every check for every role first, so that a refused role leaves the other untouched.
    FOREACH runtime_role IN ARRAY runtime_roles LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = runtime_role) THEN
            RAISE EXCEPTION 'the runtime role % does not exist (deploy/postgres/initdb creates '
                'it; for a database created before it, see docs/operations.md)', runtime_role;
        END IF;
        IF EXISTS (
            SELECT 1 FROM pg_roles
            WHERE rolname = runtime_role AND (rolsuper OR rolbypassrls)
        ) THEN
            RAISE EXCEPTION 'the runtime role % must not be a superuser or bypass row security',
                runtime_role;
        END IF;
        -- An owner may do anything to its tables whatever was granted, and so may its members.
        IF runtime_role = current_user OR pg_has_role(runtime_role, current_user, 'MEMBER') THEN
            RAISE EXCEPTION 'the runtime role % must not be, or act as, the owner role %',
                runtime_role, current_user;
        END IF;
        IF EXISTS (
            SELECT 1 FROM pg_tables WHERE schemaname = target AND tableowner = runtime_role
        ) THEN
            RAISE EXCEPTION 'the runtime role % owns tables in schema %', runtime_role, target;
        END IF;
    END LOOP;
    FOREACH table_name IN ARRAY append_only LOOP
        IF to_regclass(format('%I.%I', target, table_name)) IS NULL THEN
            RAISE EXCEPTION 'table %.% does not exist: run the migrations (recvault init) first',
                target, table_name;
        END IF;
    END LOOP;
    FOREACH routine IN ARRAY runtime_routines || scheduler_routines LOOP
        IF to_regprocedure(format('%I.%s', target, routine)) IS NULL THEN
            RAISE EXCEPTION 'function %.% does not exist: run the migrations (recvault init) first',
                target, routine;
        END IF;
    END LOOP;

    FOREACH runtime_role IN ARRAY runtime_roles LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target, runtime_role);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', target, runtime_role);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I', target, runtime_role);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
            target, runtime_role);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I',
            target, runtime_role);

        FOREACH table_name IN ARRAY append_only LOOP
            EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
                target, table_name, runtime_role);
        END LOOP;
        FOREACH table_name IN ARRAY read_only LOOP
            IF to_regclass(format('%I.%I', target, table_name)) IS NOT NULL THEN
                EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
                    target, table_name, runtime_role);
            END IF;
        END LOOP;
    END LOOP;
    FOREACH table_name IN ARRAY append_only LOOP
        EXECUTE format('REVOKE ALL ON %I.%I FROM PUBLIC', target, table_name);
    END LOOP;

    -- The owner's functions only: an extension's functions in the same schema belong to
    -- whoever installed it and are left as they are.
    FOR routine IN
        SELECT p.oid::regprocedure::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = target AND p.proowner = (
            SELECT oid FROM pg_roles WHERE rolname = current_user
        )
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', routine);
        FOREACH runtime_role IN ARRAY runtime_roles LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', routine, runtime_role);
        END LOOP;
    END LOOP;
    FOREACH routine IN ARRAY runtime_routines LOOP
        FOREACH runtime_role IN ARRAY runtime_roles LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I',
                to_regprocedure(format('%I.%s', target, routine)), runtime_role);
        END LOOP;
    END LOOP;
    FOREACH routine IN ARRAY scheduler_routines LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I',
            to_regprocedure(format('%I.%s', target, routine)), scheduler_role);
    END LOOP;
END
$grants$;
