-- Append-only audit trail (`init-db --append-only`, schema.tamper.apply_append_only).
-- UPDATE, DELETE and TRUNCATE are rejected unless the transaction ran
--     SET LOCAL audit_middleware.prune = 'on'
-- (the prune command's path). One exception on the audit table: the foreign key's
-- ON DELETE SET NULL (a user deleted by the app) may clear user_id and nothing else.
-- Triggers do not stop the table owner or a superuser from dropping them: give the application a
-- role that can only INSERT (see the GRANTs init-db prints).
CREATE OR REPLACE FUNCTION {schema}.audit_middleware_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('audit_middleware.prune', true), '') = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- (nested IFs: PL/pgSQL plans a condition whole, and NEW.user_id exists only on the audit table)
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW' AND TG_ARGV[0] = 'audit' AND pg_trigger_depth() > 1 THEN
        IF NEW.user_id IS NULL AND OLD.user_id IS NOT NULL
           AND (NEW.id, NEW.action, NEW.metadata, NEW.created_at)
               IS NOT DISTINCT FROM (OLD.id, OLD.action, OLD.metadata, OLD.created_at) THEN
            RETURN NEW;  -- the foreign key's ON DELETE SET NULL
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_middleware: % on %.% is not allowed: the audit trail is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the prune path (SET LOCAL audit_middleware.prune = ''on'') may delete';
END
$fn$;

-- UPDATE is checked per row (to allow exactly the foreign key's SET NULL); DELETE and TRUNCATE once
-- per statement, so a large prune pays nothing per row.
DROP TRIGGER IF EXISTS {trigger_update} ON {schema}.{table};
CREATE TRIGGER {trigger_update} BEFORE UPDATE ON {schema}.{table}
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_middleware_append_only('{kind}');

DROP TRIGGER IF EXISTS {trigger_delete} ON {schema}.{table};
CREATE TRIGGER {trigger_delete} BEFORE DELETE OR TRUNCATE ON {schema}.{table}
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_middleware_append_only('{kind}');
