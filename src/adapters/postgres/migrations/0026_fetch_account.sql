-- The Apple account that last fetched each tracker (issue 17: the Apple-account cohort of
-- outage detection; an account banned or logged out silences exactly its trackers).
ALTER TABLE fetch_state ADD COLUMN last_account text;
