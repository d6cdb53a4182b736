-- Devices and firmware (issue 18): device types with components, firmware releases per
-- component with their requirements, known-good combinations, configuration profiles per
-- client / production run / location, and the devices that check in.
CREATE TABLE device_types (
    id          uuid PRIMARY KEY,
    client_id   uuid NOT NULL REFERENCES clients (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    components  text[] NOT NULL CHECK (cardinality(components) BETWEEN 1 AND 8),
    CONSTRAINT device_types_client_name_key UNIQUE (client_id, name)
);

CREATE TABLE firmware_releases (
    device_type_id  uuid NOT NULL REFERENCES device_types (id) ON DELETE CASCADE,
    component       text NOT NULL,
    version         text NOT NULL,          -- semver, without build metadata
    requires        jsonb NOT NULL,         -- [[component, range], ...]
    notes           text NOT NULL DEFAULT '',
    CONSTRAINT firmware_releases_version_key PRIMARY KEY (device_type_id, component, version)
);

-- versions: {"component": "version", ...}; ckey: the same as sorted "c=v c=v" text, unique.
CREATE TABLE firmware_combinations (
    device_type_id  uuid NOT NULL REFERENCES device_types (id) ON DELETE CASCADE,
    ckey            text NOT NULL,
    versions        jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('CANDIDATE', 'KNOWN_GOOD', 'RETIRED')),
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (device_type_id, ckey)
);

CREATE TABLE device_profiles (
    id              uuid PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients (id),
    name            text NOT NULL,
    scope           smallint NOT NULL CHECK (scope IN (1, 2, 3)),   -- client, run, location
    scope_id        uuid NOT NULL,
    device_type_id  uuid REFERENCES device_types (id) ON DELETE CASCADE,
    vals            jsonb NOT NULL,
    secrets         jsonb NOT NULL,        -- {"key": [kek_id, base64 ciphertext]}
    services        jsonb NOT NULL,
    version         integer NOT NULL,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL
);
CREATE UNIQUE INDEX device_profiles_scope_key
    ON device_profiles (scope, scope_id, coalesce(device_type_id, '00000000-0000-0000-0000-000000000000'));
CREATE INDEX device_profiles_client_idx ON device_profiles (client_id);

CREATE TABLE devices (
    id                 uuid PRIMARY KEY,
    client_id          uuid NOT NULL REFERENCES clients (id),
    device_type_id     uuid NOT NULL REFERENCES device_types (id),
    serial             text NOT NULL,
    group_key          text NOT NULL,
    production_run_id  uuid REFERENCES production_runs (id) ON DELETE SET NULL,
    location_id        uuid REFERENCES locations (id) ON DELETE SET NULL,
    tracker_id         uuid,
    versions           jsonb,
    last_check_in      timestamptz,
    health             jsonb NOT NULL DEFAULT '{}',
    create_time        timestamptz NOT NULL,
    update_time        timestamptz NOT NULL,
    CONSTRAINT devices_client_serial_key UNIQUE (client_id, serial)
);
CREATE INDEX devices_type_idx ON devices (device_type_id);
CREATE INDEX devices_last_check_in_idx ON devices (client_id, last_check_in);
