-- Location reports: the big table. Partitioned by month of report_time (partitions are made
-- on demand by the adapter), keyed for idempotency, positions as GiST-indexed geography.
CREATE TABLE reports (
    tracker_id             uuid NOT NULL,
    report_time            timestamptz NOT NULL,
    latitude_e7            integer NOT NULL CHECK (latitude_e7 BETWEEN -900000000 AND 900000000),
    longitude_e7           integer NOT NULL CHECK (longitude_e7 BETWEEN -1800000000 AND 1800000000),
    confidence             smallint NOT NULL CHECK (confidence BETWEEN 1 AND 3),
    horizontal_accuracy_m  integer NOT NULL CHECK (horizontal_accuracy_m >= 0),
    status                 smallint NOT NULL DEFAULT 0,
    published_time         timestamptz,
    source                 text NOT NULL,
    fetch_time             timestamptz NOT NULL DEFAULT now(),
    position               geography (Point, 4326) GENERATED ALWAYS AS (
        ST_SetSRID(ST_MakePoint(longitude_e7 / 1e7, latitude_e7 / 1e7), 4326)::geography
    ) STORED,
    PRIMARY KEY (tracker_id, report_time, latitude_e7, longitude_e7)
) PARTITION BY RANGE (report_time);

CREATE INDEX reports_position_gist ON reports USING gist (position);
CREATE INDEX reports_fetch_time_idx ON reports (fetch_time);
CREATE TABLE reports_default PARTITION OF reports DEFAULT;
