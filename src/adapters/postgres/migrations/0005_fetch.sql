-- Fetch bookkeeping per tracker, written by the fetcher after every turn. Redis holds the live
-- queue; this table is what the queue is rebuilt from (due times and backoff survive a Redis
-- restart or FLUSHALL) and what the admin's GetFetchState reads when Redis has no entry.
CREATE TABLE fetch_state (
    tracker_id            uuid PRIMARY KEY REFERENCES trackers (id) ON DELETE CASCADE,
    factor                smallint NOT NULL CHECK (factor >= 1),
    successes             bigint NOT NULL DEFAULT 0 CHECK (successes >= 0),
    failures              bigint NOT NULL DEFAULT 0 CHECK (failures >= 0),
    consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_success_time     timestamptz,
    last_attempt_time     timestamptz,
    last_result           text,
    next_due_time         timestamptz,
    update_time           timestamptz NOT NULL DEFAULT now()
);

-- The fetcher finds active runs by time.
CREATE INDEX production_runs_active_idx ON production_runs (end_time, start_time);
