-- Silent trackers (issue 17): each tracker's expected report cadence, learned from its own
-- history by the worker (domain/silence.py holds the rule; the adapter computes it in SQL),
-- and the moment it counts as silent: its last report plus `factor` times its cadence.
CREATE TABLE tracker_cadence (
    tracker_id         uuid PRIMARY KEY REFERENCES trackers (id) ON DELETE CASCADE,
    cadence_s          double precision NOT NULL CHECK (cadence_s > 0),
    gaps               integer NOT NULL,       -- gaps the cadence was learned from
    first_report_time  timestamptz,
    last_report_time   timestamptz,            -- NULL: no report yet
    silent_time        timestamptz,            -- last_report_time + factor * cadence
    update_time        timestamptz NOT NULL
);
CREATE INDEX tracker_cadence_silent_idx ON tracker_cadence (silent_time, tracker_id);
