-- The audit table range-partitioned by month on created_at (init-db --partitioned). Run before the
-- numbered migrations, whose CREATE TABLE IF NOT EXISTS then leaves it alone and whose indexes are
-- created on every partition. The primary key is (id, created_at): a unique constraint on a
-- partitioned table must include the partition key, because each partition enforces it only on its
-- own rows. ids are UUIDv7 made at capture time together with created_at, so (id, created_at) is as
-- unique as id. The DEFAULT partition catches rows outside every monthly partition: no insert fails.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.{table} (
    id          uuid         NOT NULL DEFAULT gen_random_uuid(),
    user_id     uuid         NULL,
    action      varchar(100) NULL,
    metadata    jsonb        NULL,
    created_at  timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT {pkey} PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS {schema}.{default_partition} PARTITION OF {schema}.{table} DEFAULT;
