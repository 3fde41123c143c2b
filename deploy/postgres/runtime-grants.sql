-- Table privileges of the runtime role (vault_app), the role the web app connects as.
--
-- deploy/init.sh applies this file after every migration, connected as the owner of the
-- tables (vault_owner), to the schema the connection uses (current_schema(), normally
-- "public"). Running it again changes nothing. The role's name comes from the setting
-- recvault.app_role (default vault_app). By hand, as vault_owner:
--     psql "$URL" -c "SET recvault.app_role = 'vault_app'" -f runtime-grants.sql
--
-- The runtime role reads and writes the ordinary tables, but the audit log is append-only
-- for it: on audit_events and audit_checkpoints it has SELECT and INSERT only, never UPDATE,
-- DELETE or TRUNCATE.
-- A compromised web process can add events but cannot rewrite or erase history; and since
-- PostgreSQL ties SELECT ... FOR UPDATE to the UPDATE privilege, it cannot lock those rows
-- either (the chain's serialisation must not rely on locking audit rows).
-- Privileges are rebuilt from nothing on every run, so one removed here is removed there.

DO $grants$
DECLARE
    app_role text := coalesce(nullif(current_setting('recvault.app_role', true), ''), 'vault_app');
    target text := current_schema();
    -- Tables the runtime role may only read and append to.
    append_only text[] := ARRAY['audit_events', 'audit_checkpoints'];
    -- Tables only migrations write.
    read_only text[] := ARRAY['alembic_version'];
    table_name text;
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no current schema: check the search_path of the connection';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = app_role) THEN
        RAISE EXCEPTION 'the runtime role % does not exist (deploy/postgres/initdb creates it)',
            app_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = app_role AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'the runtime role % must not be a superuser or bypass row security',
            app_role;
    END IF;
    -- An owner may do anything to its tables whatever was granted, and so may its members.
    IF app_role = current_user OR pg_has_role(app_role, current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'the runtime role % must not be, or act as, the owner role %',
            app_role, current_user;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_tables WHERE schemaname = target AND tableowner = app_role
    ) THEN
        RAISE EXCEPTION 'the runtime role % owns tables in schema %', app_role, target;
    END IF;
    FOREACH table_name IN ARRAY append_only LOOP
        IF to_regclass(format('%I.%I', target, table_name)) IS NULL THEN
            RAISE EXCEPTION 'table %.% does not exist: run the migrations (recvault init) first',
                target, table_name;
        END IF;
    END LOOP;

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target, app_role);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', target, app_role);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I', target, app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
        target, app_role);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', target, app_role);

    FOREACH table_name IN ARRAY append_only LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
            target, table_name, app_role);
        EXECUTE format('REVOKE ALL ON %I.%I FROM PUBLIC', target, table_name);
    END LOOP;
    FOREACH table_name IN ARRAY read_only LOOP
        IF to_regclass(format('%I.%I', target, table_name)) IS NOT NULL THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
                target, table_name, app_role);
        END IF;
    END LOOP;
END
$grants$;
