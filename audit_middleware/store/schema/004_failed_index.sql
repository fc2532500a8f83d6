-- Failed outcomes by time (issue 13, the viewer). Actions ending in '_failed' (the middleware's
-- failed_suffix: login_failed, password_reset_failed, ...) are a few percent of the rows; this partial
-- index holds only them, so the viewer's chart counts failures per bucket with an index-only scan and
-- its "failed only" list pages through them without reading the other rows. Queries use it when they
-- repeat the predicate exactly: action LIKE '%\_failed' (audit_middleware.viewer.queries.FAILED_SQL).
-- On a large existing table, build it first with CREATE INDEX CONCURRENTLY under the same name.
CREATE INDEX IF NOT EXISTS {idx_failed} ON {schema}.{table} USING btree (created_at, id) WHERE action LIKE '%\_failed';
