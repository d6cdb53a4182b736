-- Issue 12: a status rule that weighs evidence (kind EVIDENCE), and what each status change
-- tells of how sure it is and since when.

ALTER TABLE status_rules
    ADD COLUMN kind text NOT NULL DEFAULT 'CONSECUTIVE'
        CHECK (kind IN ('CONSECUTIVE', 'EVIDENCE')),
    ADD COLUMN min_probability double precision NOT NULL DEFAULT 0.99
        CHECK (min_probability BETWEEN 0.5 AND 0.999999),
    ADD COLUMN outlier_share double precision NOT NULL DEFAULT 0.02
        CHECK (outlier_share > 0 AND outlier_share <= 0.2);

-- A dwell with min_consecutive_reports = 1 silently needed a second report; the rule now
-- says so (a dwell needs at least two), and the rules that had it keep what they did.
UPDATE status_rules SET min_consecutive_reports = 2
WHERE min_dwell_s > 0 AND min_consecutive_reports < 2;

-- Runs that exist keep the rule they were evaluated under (a run without a row gets the
-- default kind of the code, which may change between versions).
INSERT INTO status_rules (production_run_id)
SELECT id FROM production_runs
ON CONFLICT (production_run_id) DO NOTHING;

ALTER TABLE tracker_status
    -- the evidence of the change to the current status
    ADD COLUMN probability double precision,
    ADD COLUMN evidence_since timestamptz,
    -- the evidence rule's belief after the last report (hypothesis NULL: in transit)
    ADD COLUMN belief_ids uuid[],
    ADD COLUMN belief_kinds text[],
    ADD COLUMN belief_probabilities double precision[],
    ADD COLUMN belief_time timestamptz,
    -- since when each other status has been plausible (evidence rule)
    ADD COLUMN onset_delivered timestamptz,
    ADD COLUMN onset_storage timestamptz,
    ADD COLUMN onset_transit timestamptz;

ALTER TABLE status_history
    ADD COLUMN probability double precision,
    ADD COLUMN evidence_since timestamptz;
