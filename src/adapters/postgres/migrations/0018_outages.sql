-- Outage detection (issue 17): each turn's silent share per cohort (the history a cohort's
-- baseline is the mean of), and outage events: a cohort whose share jumped above it.
CREATE TABLE cohort_silence (
    taken_time  timestamptz NOT NULL,
    client_id   uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    dimension   text NOT NULL,
    key         text NOT NULL,
    trackers    integer NOT NULL,
    silent      integer NOT NULL,
    PRIMARY KEY (taken_time, client_id, dimension, key)
);
CREATE INDEX cohort_silence_cohort_idx ON cohort_silence (client_id, dimension, key, taken_time);

CREATE TABLE outage_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id   uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    dimension   text NOT NULL,
    key         text NOT NULL,
    trackers    integer NOT NULL,
    silent      integer NOT NULL,
    share       double precision NOT NULL,
    baseline    double precision NOT NULL,
    start_time  timestamptz NOT NULL,
    end_time    timestamptz
);
CREATE UNIQUE INDEX outage_events_open_idx ON outage_events (client_id, dimension, key)
    WHERE end_time IS NULL;
CREATE INDEX outage_events_client_idx ON outage_events (client_id, id DESC);
