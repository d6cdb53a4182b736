-- Status change events (0024) for a batch of changes (issue 12, speed): each change's client
-- by one index probe of `trackers`. The plain join was planned as a hash of the whole
-- `trackers` table for every batch of a tenth of the fleet (0.3 s of 1.3 s per 25,000
-- changes at 250,000 trackers), a cost that grew with the fleet rather than the batch. The
-- LATERAL subquery with OFFSET 0 is not flattened into a join, so it stays a probe per row.
CREATE OR REPLACE FUNCTION status_history_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (client_id, kind, tracker_id, occur_time, data)
    SELECT t.client_id, 'STATUS_CHANGED', n.tracker_id, n.report_time,
           jsonb_build_object(
               'status', n.status, 'previous_status', n.previous_status,
               'location_id', n.location_id, 'report_time', n.report_time,
               'latitude', n.latitude_e7 / 1e7, 'longitude', n.longitude_e7 / 1e7)
    FROM new_rows n
    CROSS JOIN LATERAL (
        SELECT tr.client_id FROM trackers tr WHERE tr.id = n.tracker_id OFFSET 0) t
    ORDER BY n.tracker_id, n.report_time;
    RETURN NULL;
END $$;
