-- Firmware rollouts (issue 18): a target combination for selected devices, in phases, with a
-- throttle of concurrent upgrades per group (cell tower, site).
CREATE TABLE rollouts (
    id               uuid PRIMARY KEY,
    client_id        uuid NOT NULL REFERENCES clients (id),
    device_type_id   uuid NOT NULL REFERENCES device_types (id),
    name             text NOT NULL,
    target           jsonb NOT NULL,
    policy           jsonb NOT NULL,
    state            text NOT NULL CHECK (state IN ('RUNNING', 'PAUSED', 'ABORTED', 'COMPLETED')),
    phase            integer NOT NULL,
    phase_succeeded  integer NOT NULL,
    phase_failed     integer NOT NULL,
    reason           text NOT NULL,
    create_time      timestamptz NOT NULL,
    update_time      timestamptz NOT NULL
);
CREATE INDEX rollouts_client_idx ON rollouts (client_id, id);

CREATE TABLE rollout_devices (
    rollout_id      uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id       uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    group_key       text NOT NULL,
    bucket          double precision NOT NULL,
    state           text NOT NULL CHECK (state IN ('PENDING', 'IN_PROGRESS', 'DONE', 'FAILED')),
    attempts        integer NOT NULL DEFAULT 0,
    step            jsonb,                 -- {"component", "from", "to", "result": {...}}
    step_time       timestamptz,
    last_error      text NOT NULL DEFAULT '',
    update_time     timestamptz,
    -- "active": the rollout is RUNNING or PAUSED (kept in step by the adapter), so that
    -- a device is in at most one active rollout.
    active          boolean NOT NULL DEFAULT true,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE UNIQUE INDEX rollout_devices_one_active ON rollout_devices (device_id) WHERE active;
CREATE INDEX rollout_devices_phase_idx ON rollout_devices (rollout_id, bucket) INCLUDE (state);
CREATE INDEX rollout_devices_in_flight_idx ON rollout_devices (rollout_id, step_time)
    WHERE state = 'IN_PROGRESS';

CREATE TABLE rollout_groups (
    rollout_id  uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    group_key   text NOT NULL,
    in_flight   integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    PRIMARY KEY (rollout_id, group_key)
);
