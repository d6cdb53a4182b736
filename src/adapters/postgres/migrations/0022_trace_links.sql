-- Traces through the processing queue (issue 15). A transaction that stores reports while it
-- is traced says so with `SET LOCAL tracker.traceparent = '<W3C traceparent>'` (the reports
-- adapter does, only while tracing is on); the trigger notes it beside the inbox row, the
-- fold keeps the newest few per queued tracker, and the worker's batch span links to them:
-- one report's path from IngestReports (or a fetch) to the worker's batch is one click.

ALTER TABLE processing_inbox ADD COLUMN traceparent text;
-- at most 8 per queued tracker (a batch span links to at most 128 traces anyway)
ALTER TABLE processing_queue ADD COLUMN traceparents text[] NOT NULL DEFAULT '{}';

CREATE OR REPLACE FUNCTION enqueue_new_reports() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- NULL when never set in this session, '' after a transaction that set it locally
    tp text := nullif(current_setting('tracker.traceparent', true), '');
BEGIN
    INSERT INTO processing_inbox (tracker_id, since, hours, traceparent)
    SELECT tracker_id, min(report_time),
           array_agg(DISTINCT date_trunc('hour', report_time, 'UTC')), tp
    FROM new_reports
    GROUP BY tracker_id;
    RETURN NULL;
END $$;
