-- Processing without deadlocks, with failure isolation (issues 10 and 13).
--
-- Lock order. Before, the reports trigger upserted `processing_queue` rows in the writer's
-- transaction while workers updated and deleted the same rows in no fixed order at the end of
-- their batches: PostgreSQL found deadlocks. Now ingestion only appends to
-- `processing_inbox` (no unique key but an identity, no ON CONFLICT: it never waits for
-- anyone and holds nothing a worker wants). Only workers write `processing_queue`, and every
-- statement that can wait for a queue row takes its rows in tracker_id order, in one
-- statement, holding no other queue row: the fold (inbox -> queue upsert, ORDER BY
-- tracker_id), complete and hand-back (SELECT ... ORDER BY tracker_id FOR UPDATE first).
-- Claims use SKIP LOCKED and never wait.

CREATE TABLE processing_inbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tracker_id   uuid NOT NULL,
    since        timestamptz NOT NULL,          -- earliest new report time
    hours        timestamptz[] NOT NULL,        -- hour buckets (UTC) the new reports touch
    arrive_time  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION enqueue_new_reports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO processing_inbox (tracker_id, since, hours)
    SELECT tracker_id, min(report_time),
           array_agg(DISTINCT date_trunc('hour', report_time, 'UTC'))
    FROM new_reports
    GROUP BY tracker_id;
    RETURN NULL;
END $$;

-- Queue rows of deleted trackers are dropped by the worker when it claims them (it finds no
-- tracker); the delete no longer locks queue rows, which would add a second order.
CREATE OR REPLACE FUNCTION delete_derived_of_trackers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tracker_status WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM status_history WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM location_hourly WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM location_daily WHERE tracker_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;

-- Quarantine: a tracker whose processing failed on its own (the rest of its batch was
-- processed without it) keeps its queue row with the reason, and is retried with backoff
-- from `retry_time` on; it leaves quarantine when it processes fine.
ALTER TABLE processing_queue
    -- arrival of the oldest reports folded in while the row was claimed (they are not part
    -- of the running batch; the row's enqueue_time becomes this when the claim is released)
    ADD COLUMN newer_time          timestamptz,
    ADD COLUMN attempts            integer NOT NULL DEFAULT 0,  -- failures in a row
    ADD COLUMN last_error          text,
    ADD COLUMN first_failure_time  timestamptz,
    ADD COLUMN last_failure_time   timestamptz,
    ADD COLUMN retry_time          timestamptz;
CREATE INDEX processing_queue_quarantined_idx ON processing_queue (tracker_id) WHERE attempts > 0;
