-- The audit table exactly as specified in user_audit_logs.md. The schema, table
-- (and the index and constraint names) are quoted identifiers filled in by schema.apply(). Never drops or
-- rewrites existing data.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.{table} (
    id          uuid         NOT NULL DEFAULT gen_random_uuid(),
    user_id     uuid         NULL,
    action      varchar(100) NULL,
    metadata    jsonb        NULL,
    created_at  timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT {pkey} PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS {idx_user_id} ON {schema}.{table} USING btree (user_id);
CREATE INDEX IF NOT EXISTS {idx_action} ON {schema}.{table} USING btree (action);
