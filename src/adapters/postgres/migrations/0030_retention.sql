-- Retention (domain/retention.py): what grows without bound besides reports is deleted by
-- age, in chunks, by the collector's maintenance. Indexes to find the oldest rows; sightings
-- and detector statuses are found per detector through their primary keys.
CREATE INDEX events_create_time_idx ON events (create_time);
CREATE INDEX webhook_deliveries_delivered_idx ON webhook_deliveries (deliver_time)
    WHERE state = 'DELIVERED';

-- Per pruned kind: the newest pruned row's transaction and id. A stream cursor that had not
-- yet read it would resume with a gap, so the stream refuses it (CURSOR_EXPIRED).
CREATE TABLE retention_marks (
    kind         text PRIMARY KEY,
    pruned_xid   xid8 NOT NULL,
    pruned_id    bigint NOT NULL,
    pruned_until timestamptz NOT NULL
);
