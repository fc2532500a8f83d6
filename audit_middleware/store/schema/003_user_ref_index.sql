-- One user's activity when the app's user ids are not UUIDs (Django's and most Flask apps' integers):
-- the writer keeps them as text in metadata.user_ref, and EventFilter(user=...) / --user reads them
-- with "metadata ? 'user_ref' AND metadata->>'user_ref' = $n". Partial (only rows that have a
-- user_ref), so apps with UUID ids pay nothing for it; keyset order like the user_id index.
-- On a large existing table, build it first with CREATE INDEX CONCURRENTLY under the same name.
CREATE INDEX IF NOT EXISTS {idx_user_ref_created_at} ON {schema}.{table}
    USING btree ((metadata->>'user_ref'), created_at, id) WHERE metadata ? 'user_ref';
