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
-- UUIDs and SHA-256 hashes do not compress: store them out of line without trying (a digest of a
-- 2,000-row batch holds 96 kB of them; pglz spent ~0.4 ms failing on each). Changes no stored data;
-- skipped once done, so a repeated init-db takes no table lock for it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.{digests}'::regclass
               AND attname IN ('ids', 'row_hashes') AND attstorage <> 'e') THEN
        ALTER TABLE {schema}.{digests}
            ALTER COLUMN ids SET STORAGE EXTERNAL,
            ALTER COLUMN row_hashes SET STORAGE EXTERNAL;
    END IF;
END
$$;
-- The signature of a prune stub (see digests.compute_prune_mac): what counts as pruned is covered by
-- the key. NULL until the digest is pruned. Added in place to tables made before stubs were signed
-- (no rewrite: a nullable column without default); skipped once there, so no table lock then.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.{digests}'::regclass
                   AND attname = 'prune_mac' AND NOT attisdropped) THEN
        ALTER TABLE {schema}.{digests} ADD COLUMN prune_mac bytea NULL;
    END IF;
END
$$;
