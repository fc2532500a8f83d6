-- Indexes for reading at scale (audit-middleware query/export/tail/stats/prune, audit_middleware.query).
-- BTREE rather than BRIN on created_at: every read is a keyset page "ORDER BY created_at, id LIMIT n"
-- after a (created_at, id) position, and only a BTREE returns rows in that order, so the first page of
-- a month costs the same as the first page of a minute. A BRIN index is tiny but only narrows the scan
-- to block ranges: the whole range must then be read and sorted before the first row comes out, and
-- rows from retried batches land out of created_at order, which widens its ranges. UUIDv7 ids and
-- capture-time created_at both grow with time, so inserts append at the right edge of these indexes.
-- On a large existing table, build them first with CREATE INDEX CONCURRENTLY under the same names:
-- this file would otherwise hold a lock that blocks the writer for the whole build.
CREATE INDEX IF NOT EXISTS {idx_created_at} ON {schema}.{table} USING btree (created_at, id);
-- One user's activity over a time range ("what did this account do in March"), in keyset order.
CREATE INDEX IF NOT EXISTS {idx_user_created_at} ON {schema}.{table} USING btree (user_id, created_at, id);
