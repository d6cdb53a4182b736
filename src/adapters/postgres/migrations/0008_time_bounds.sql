-- Every stored time within the bounds of domain/instants.py (issue 10). Before, a caller
-- could store 0001-01-01 or 9999-12-31 (asyncpg writes them as -infinity/infinity), which
-- Python cannot read back: runs became unreadable, and the worker failed on every batch
-- holding such a report. The servers now refuse such times; this cleans what is stored.

-- Production runs are clamped into years 2000..2100, not deleted: a run is setup data with
-- trackers under it, and a run from -infinity to +infinity meant "always active", which the
-- clamped run (2000-01-01 to 2100-01-01) still is for any time the system can see. A run
-- lying wholly outside the bounds becomes a one-day run at the nearer bound (inactive,
-- as it was).
UPDATE production_runs SET
    start_time = s.new_start,
    end_time = CASE WHEN s.new_end > s.new_start THEN s.new_end
                    ELSE s.new_start + interval '1 day' END
FROM (
    SELECT id,
           least(greatest(start_time, '2000-01-01T00:00:00Z'::timestamptz),
                 '2100-01-01T00:00:00Z'::timestamptz - interval '1 day') AS new_start,
           least(greatest(end_time, '2000-01-01T00:00:00Z'::timestamptz),
                 '2100-01-01T00:00:00Z'::timestamptz) AS new_end
    FROM production_runs
    WHERE NOT (start_time >= '2000-01-01T00:00:00Z' AND start_time <= '2100-01-01T00:00:00Z'
               AND end_time >= '2000-01-01T00:00:00Z' AND end_time <= '2100-01-01T00:00:00Z')
) AS s
WHERE production_runs.id = s.id;

ALTER TABLE production_runs ADD CONSTRAINT production_runs_time_bounds
    CHECK (start_time >= '2000-01-01T00:00:00Z' AND end_time <= '2100-01-01T00:00:00Z');

-- Reports outside [2019-01-01, 2100-01-01) are removed, not clamped: a report is evidence of
-- where a tag was at its time; moving it to another time would invent evidence, and no
-- genuine Find My report can be older than 2019 or from the next century.
-- (Written as two ranges so only the default partition and partitions outside are scanned.)
DELETE FROM reports
WHERE report_time < '2019-01-01T00:00:00Z' OR report_time >= '2100-01-01T00:00:00Z';

-- An optional publication time out of range is dropped; the report stays. (One pass over
-- the table: nothing indexes published_time; it is read by no query.)
UPDATE reports SET published_time = NULL
WHERE published_time IS NOT NULL
  AND NOT (published_time >= '2019-01-01T00:00:00Z' AND published_time < '2100-01-01T00:00:00Z');

-- What processing derived from the removed reports goes with them (the next report of the
-- tracker rebuilds its status from what is left).
DELETE FROM status_history
WHERE NOT (report_time >= '2019-01-01T00:00:00Z' AND report_time < '2100-01-01T00:00:00Z');
DELETE FROM location_hourly
WHERE NOT (bucket_start >= '2019-01-01T00:00:00Z' AND bucket_start < '2100-01-01T00:00:00Z');
DELETE FROM location_daily
WHERE NOT (bucket_start >= '2019-01-01T00:00:00Z' AND bucket_start < '2100-01-01T00:00:00Z');
DELETE FROM tracker_status
WHERE NOT (last_report_time >= '2019-01-01T00:00:00Z' AND last_report_time < '2100-01-01T00:00:00Z')
   OR NOT coalesce(status_since >= '2019-01-01T00:00:00Z' AND status_since < '2100-01-01T00:00:00Z', true)
   OR NOT coalesce(pending_since >= '2019-01-01T00:00:00Z' AND pending_since < '2100-01-01T00:00:00Z', true);

-- Queued work keeps its trackers but forgets the hours of removed reports.
UPDATE processing_queue SET
    since = least(greatest(since, '2019-01-01T00:00:00Z'::timestamptz),
                  '2099-12-31T23:00:00Z'::timestamptz),
    hours = ARRAY(SELECT h FROM unnest(hours) AS h
                  WHERE h >= '2019-01-01T00:00:00Z' AND h < '2100-01-01T00:00:00Z' ORDER BY h)
WHERE NOT (since >= '2019-01-01T00:00:00Z' AND since < '2100-01-01T00:00:00Z')
   OR EXISTS (SELECT 1 FROM unnest(hours) AS h
              WHERE NOT (h >= '2019-01-01T00:00:00Z' AND h < '2100-01-01T00:00:00Z'));
-- The same for work still in the inbox (0007: new reports are noted there first).
UPDATE processing_inbox SET
    since = least(greatest(since, '2019-01-01T00:00:00Z'::timestamptz),
                  '2099-12-31T23:00:00Z'::timestamptz),
    hours = ARRAY(SELECT h FROM unnest(hours) AS h
                  WHERE h >= '2019-01-01T00:00:00Z' AND h < '2100-01-01T00:00:00Z' ORDER BY h)
WHERE NOT (since >= '2019-01-01T00:00:00Z' AND since < '2100-01-01T00:00:00Z')
   OR EXISTS (SELECT 1 FROM unnest(hours) AS h
              WHERE NOT (h >= '2019-01-01T00:00:00Z' AND h < '2100-01-01T00:00:00Z'));
