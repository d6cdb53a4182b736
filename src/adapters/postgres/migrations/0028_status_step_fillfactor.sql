-- The status step's hot rows (issue 12, speed): every batch rewrites the checkpoint of each
-- of its trackers (tracker_status) and claims, then deletes, its queue rows
-- (processing_queue); none of those writes changes an indexed column. With free room on
-- each page the new row version stays on its page (a HOT update: no index entry, no
-- second page dirtied). Pages written from now on keep that room; old ones as they are.
ALTER TABLE tracker_status SET (fillfactor = 50);
ALTER TABLE processing_queue SET (fillfactor = 50);
