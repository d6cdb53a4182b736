-- Setup domain: clients -> brands -> production runs -> locations, and trackers.
-- Composite foreign keys keep each child's denormalised client_id equal to its parent's.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE clients (
    id            uuid PRIMARY KEY,
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL
);

CREATE TABLE brands (
    id            uuid PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL,
    UNIQUE (id, client_id)
);
CREATE INDEX brands_client_id_idx ON brands (client_id, id);

CREATE TABLE production_runs (
    id            uuid PRIMARY KEY,
    brand_id      uuid NOT NULL,
    client_id     uuid NOT NULL,
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    start_time    timestamptz NOT NULL,
    end_time      timestamptz NOT NULL,
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL,
    CHECK (end_time > start_time),
    UNIQUE (id, client_id),
    FOREIGN KEY (brand_id, client_id) REFERENCES brands (id, client_id)
);
CREATE INDEX production_runs_brand_id_idx ON production_runs (brand_id, id);
CREATE INDEX production_runs_client_id_idx ON production_runs (client_id, id);
CREATE INDEX production_runs_window_idx ON production_runs (start_time, end_time);

CREATE TABLE locations (
    id                 uuid PRIMARY KEY,
    production_run_id  uuid NOT NULL REFERENCES production_runs (id),
    kind               text NOT NULL CHECK (kind IN ('DELIVERY', 'STORAGE')),
    display_name       text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    center             geography (Point, 4326) NOT NULL,
    radius_m           double precision NOT NULL CHECK (radius_m > 0 AND radius_m <= 100000),
    create_time        timestamptz NOT NULL,
    update_time        timestamptz NOT NULL
);
CREATE INDEX locations_production_run_id_idx ON locations (production_run_id, id);
CREATE INDEX locations_center_gist ON locations USING gist (center);

CREATE TABLE trackers (
    id                        uuid PRIMARY KEY,
    client_id                 uuid NOT NULL REFERENCES clients (id),
    production_run_id         uuid NOT NULL,
    mac_address               text NOT NULL,
    advertisement_key         bytea NOT NULL CHECK (length(advertisement_key) = 28),
    hashed_advertisement_key  bytea NOT NULL CHECK (length(hashed_advertisement_key) = 32),
    -- Filled by key provisioning (AES-GCM ciphertext and the id of the key-encryption key).
    private_key_ciphertext    bytea,
    private_key_kek_id        text,
    display_name              text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    create_time               timestamptz NOT NULL,
    update_time               timestamptz NOT NULL,
    CONSTRAINT trackers_mac_address_key UNIQUE (mac_address),
    CONSTRAINT trackers_advertisement_key_key UNIQUE (advertisement_key),
    CONSTRAINT trackers_hashed_advertisement_key_key UNIQUE (hashed_advertisement_key),
    FOREIGN KEY (production_run_id, client_id) REFERENCES production_runs (id, client_id)
);
CREATE INDEX trackers_client_id_idx ON trackers (client_id, id);
CREATE INDEX trackers_production_run_id_idx ON trackers (production_run_id, id);
