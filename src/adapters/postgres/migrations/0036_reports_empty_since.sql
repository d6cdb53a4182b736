-- The status step's readings (issue 12, speed) probe `reports` once per tracker for the
-- reports after its start key. With no upper bound on report_time every probe also visited
-- each empty partition made ahead of time (three months, and the default): a sixth of the
-- probe. `reports_empty_since()` is the time from which `reports` holds no row: the start of
-- the earliest monthly partition from which on every monthly partition is empty, provided
-- the default partition is empty and every partition is a monthly one made by the
-- maintenance step (`reports_YYYY_MM`, one month each); else infinity (no bound). The status
-- step reads `report_time < (SELECT reports_empty_since())`: evaluated once per statement,
-- in the statement's own snapshot (a STABLE function sees what its caller sees), so a report
-- stored meanwhile is either seen by both or by neither; the probes then leave out the empty
-- partitions.
CREATE OR REPLACE FUNCTION reports_empty_since() RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    part record;
    found boolean;
    since timestamptz := 'infinity';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'reports'::regclass
                 AND c.relname !~ '^reports_[0-9]{4}_[0-9]{2}$'
                 AND c.relname <> 'reports_default')
       OR EXISTS (SELECT 1 FROM reports_default) THEN
        RETURN 'infinity';
    END IF;
    FOR part IN
        SELECT c.oid::regclass AS rel, c.relname AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'reports'::regclass AND c.relname ~ '^reports_[0-9]{4}_[0-9]{2}$'
        ORDER BY c.relname DESC
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', part.rel) INTO found;
        EXIT WHEN found;
        since := make_timestamptz(substr(part.name, 9, 4)::int, substr(part.name, 14, 2)::int,
                                  1, 0, 0, 0, 'UTC');
    END LOOP;
    RETURN since;
END $$;
