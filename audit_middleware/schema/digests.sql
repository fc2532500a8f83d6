-- Tamper evidence: the companion digests table (see audit_middleware/digests.py). Applied by
-- `init-db --digests` (schema.tamper.apply_digests), not by the numbered migrations: a deployment
-- without a digest key never needs it. Idempotent; never touches existing rows.
CREATE TABLE IF NOT EXISTS {schema}.{digests} (
    seq             bigint       NOT NULL,
    ids             uuid[]       NOT NULL,
    row_hashes      bytea        NOT NULL,
    batch_hash      bytea        NOT NULL,
    min_created_at  timestamp    NULL,
    max_created_at  timestamp    NULL,
    prev_mac        bytea        NOT NULL,
    mac             bytea        NOT NULL,
    written_at      timestamptz  NOT NULL DEFAULT now(),
    pruned_before   timestamp    NULL,
    CONSTRAINT {digests_pkey} PRIMARY KEY (seq)
);
