-- Detectors, links, sightings (keyed device ids, never raw MACs), detector statuses, travel
-- times per link and bin, and the travel-time worker's claims (issue 16, seed 003).
CREATE TABLE detectors (
    id            uuid PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    latitude      double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude     double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    radios        smallint[] NOT NULL CHECK (cardinality(radios) >= 1),
    range_m       double precision NOT NULL DEFAULT 0 CHECK (range_m BETWEEN 0 AND 10000),
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL,
    UNIQUE (client_id, id)
);

-- links/<destination>/<source>; both detectors of one client (composite foreign keys).
CREATE TABLE detector_links (
    destination_id  uuid NOT NULL,
    source_id       uuid NOT NULL,
    client_id       uuid NOT NULL,
    max_seconds     integer NOT NULL CHECK (max_seconds BETWEEN 1 AND 86400),
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (destination_id, source_id),
    CHECK (destination_id <> source_id),
    FOREIGN KEY (client_id, destination_id) REFERENCES detectors (client_id, id) ON DELETE CASCADE,
    FOREIGN KEY (client_id, source_id) REFERENCES detectors (client_id, id) ON DELETE CASCADE
);
CREATE INDEX detector_links_source_idx ON detector_links (source_id);

-- One row per (detector, keyed device, time): storing a sighting twice is harmless. No
-- foreign key (a per-row check at 50,000 rows/s); deleting a detector deletes its rows.
-- xid: the inserting transaction, so a stream can hand out each committed row once.
CREATE TABLE sightings (
    detector_id  uuid NOT NULL,
    seen_time    timestamptz NOT NULL,
    device_key   bytea NOT NULL CHECK (length(device_key) = 16),
    key_id       smallint NOT NULL,
    rssi_dbm     smallint,
    radio        smallint NOT NULL,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (detector_id, seen_time, device_key)
);
CREATE INDEX sightings_stream_idx ON sightings (detector_id, xid);

CREATE TABLE detector_statuses (
    detector_id      uuid NOT NULL REFERENCES detectors (id) ON DELETE CASCADE,
    report_time      timestamptz NOT NULL,
    battery_voltage  double precision NOT NULL CHECK (battery_voltage BETWEEN 0 AND 100),
    bluetooth_count  bigint NOT NULL CHECK (bluetooth_count >= 0),
    wifi_count       bigint NOT NULL CHECK (wifi_count >= 0),
    PRIMARY KEY (detector_id, report_time)
);

-- Per link and bin (by arrival at the destination): the estimate and its spread.
CREATE TABLE travel_times (
    destination_id  uuid NOT NULL REFERENCES detectors (id) ON DELETE CASCADE,
    source_id       uuid NOT NULL REFERENCES detectors (id) ON DELETE CASCADE,
    bin_start       timestamptz NOT NULL,
    bin_seconds     integer NOT NULL CHECK (bin_seconds > 0),
    estimate_s      double precision,
    p10_s           double precision,
    p90_s           double precision,
    used_count      integer NOT NULL,
    rejected_count  integer NOT NULL,
    mean_s          double precision,
    update_time     timestamptz NOT NULL,
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (destination_id, source_id, bin_start)
);
CREATE INDEX travel_times_stream_idx ON travel_times (destination_id, xid);

-- The worker's unit of work is a destination detector (seed 003): claimed with a lease.
CREATE TABLE travel_time_work (
    destination_id  uuid PRIMARY KEY REFERENCES detectors (id) ON DELETE CASCADE,
    due_time        timestamptz NOT NULL DEFAULT '-infinity',
    lease_owner     text,
    lease_until     timestamptz,
    done_until      timestamptz
);
CREATE INDEX travel_time_work_due_idx ON travel_time_work (due_time);
