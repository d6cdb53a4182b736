-- Changes pushed (issue 17): an outbox of events per client, written by triggers in the same
-- transaction as the change each describes (a status change, a tracker going silent or
-- reporting again, an outage opened or closed), and webhooks per client with one delivery
-- row per event and webhook, also written in that transaction (at least once).
--
-- id: increasing, but ids are not committed in order; a stream reads by `xid` (the writing
-- transaction) against PostgreSQL snapshots, as the detector streams do (0014).
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id   uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('STATUS_CHANGED', 'TRACKER_SILENT',
                    'TRACKER_REPORTING_AGAIN', 'OUTAGE_OPENED', 'OUTAGE_CLOSED')),
    tracker_id  uuid,
    outage_id   bigint,
    occur_time  timestamptz NOT NULL,
    data        jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX events_stream_idx ON events (xid);
CREATE INDEX events_client_idx ON events (client_id, id);

CREATE TABLE webhooks (
    id            uuid PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    display_name  text NOT NULL DEFAULT '',
    url           text NOT NULL,
    kinds         text[] NOT NULL DEFAULT '{}',   -- empty: every kind
    secret_kek_id text NOT NULL,
    secret_sealed bytea NOT NULL,                 -- AES-GCM under the KEK, never returned
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL
);
CREATE INDEX webhooks_client_idx ON webhooks (client_id, id);

CREATE TABLE webhook_deliveries (
    webhook_id        uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id          bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    state             text NOT NULL DEFAULT 'PENDING'
                          CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_attempt_time timestamptz,
    last_status       integer,            -- HTTP status of the last attempt (NULL: none)
    last_error        text,
    deliver_time      timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_time)
    WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (webhook_id, event_id)
    WHERE state = 'DEAD';

-- Each new event: a delivery for every webhook of its client that wants its kind.
CREATE FUNCTION events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, event_id)
    SELECT w.id, e.id FROM new_events e JOIN webhooks w ON w.client_id = e.client_id
    WHERE cardinality(w.kinds) = 0 OR e.kind = ANY (w.kinds);
    RETURN NULL;
END $$;
CREATE TRIGGER events_fan_out AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION events_fan_out();

-- Status changes: one event per row of status_history.
CREATE FUNCTION status_history_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (client_id, kind, tracker_id, occur_time, data)
    SELECT t.client_id, 'STATUS_CHANGED', n.tracker_id, n.report_time,
           jsonb_build_object(
               'status', n.status, 'previous_status', n.previous_status,
               'location_id', n.location_id, 'report_time', n.report_time,
               'latitude', n.latitude_e7 / 1e7, 'longitude', n.longitude_e7 / 1e7)
    FROM new_rows n JOIN trackers t ON t.id = n.tracker_id
    ORDER BY n.tracker_id, n.report_time;
    RETURN NULL;
END $$;
CREATE TRIGGER status_history_events AFTER INSERT ON status_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION status_history_events();

-- Silence: whether the cadence pass found the tracker silent; a change is an event.
ALTER TABLE tracker_cadence ADD COLUMN silent boolean NOT NULL DEFAULT false;

CREATE FUNCTION tracker_cadence_silent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.silent := NEW.silent_time IS NOT NULL AND NEW.silent_time <= NEW.update_time;
    RETURN NEW;
END $$;
CREATE TRIGGER tracker_cadence_silent BEFORE INSERT OR UPDATE ON tracker_cadence
    FOR EACH ROW EXECUTE FUNCTION tracker_cadence_silent();

CREATE FUNCTION tracker_cadence_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NOT NEW.silent THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.silent = OLD.silent THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (client_id, kind, tracker_id, occur_time, data)
    SELECT t.client_id,
           CASE WHEN NEW.silent THEN 'TRACKER_SILENT' ELSE 'TRACKER_REPORTING_AGAIN' END,
           NEW.tracker_id,
           CASE WHEN NEW.silent THEN NEW.silent_time ELSE NEW.last_report_time END,
           jsonb_build_object(
               'silent_since', CASE WHEN NEW.silent THEN NEW.silent_time END,
               'last_report_time', NEW.last_report_time,
               'expected_interval_s', NEW.cadence_s)
    FROM trackers t WHERE t.id = NEW.tracker_id;
    RETURN NULL;
END $$;
CREATE TRIGGER tracker_cadence_events AFTER INSERT OR UPDATE ON tracker_cadence
    FOR EACH ROW EXECUTE FUNCTION tracker_cadence_events();

-- Outages: opened (a new row), closed (its end_time set).
CREATE FUNCTION outage_events_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NOT (OLD.end_time IS NULL AND NEW.end_time IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (client_id, kind, outage_id, occur_time, data)
    VALUES (NEW.client_id,
            CASE WHEN TG_OP = 'INSERT' THEN 'OUTAGE_OPENED' ELSE 'OUTAGE_CLOSED' END,
            NEW.id, coalesce(NEW.end_time, NEW.start_time),
            jsonb_build_object(
                'dimension', NEW.dimension, 'cohort_key', NEW.key, 'trackers', NEW.trackers,
                'silent', NEW.silent, 'share', NEW.share, 'baseline', NEW.baseline,
                'start_time', NEW.start_time, 'end_time', NEW.end_time));
    RETURN NULL;
END $$;
CREATE TRIGGER outage_events_events AFTER INSERT OR UPDATE ON outage_events
    FOR EACH ROW EXECUTE FUNCTION outage_events_events();
