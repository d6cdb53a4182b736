-- Bulk jobs (issue 17): a job's items cut into batches that workers claim with a lease
-- (SKIP LOCKED). A batch's effects, its failures and its DONE are one transaction, so no
-- batch is applied twice and none is lost when a process dies. Progress is summed from the
-- batches (a job row is never a hot spot that batches of one job queue behind).

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('IMPORT_TRACKERS', 'IMPORT_EXTERNAL_TRACKERS',
                                                    'ALLOCATE_TAGS', 'REEVALUATE_RUN')),
    client_id         uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    target_id         uuid NOT NULL,  -- the production run, or the client tags go to
    status            text NOT NULL CHECK (status IN ('RUNNING', 'PAUSED', 'SUCCEEDED', 'CANCELLED')),
    stage             text NOT NULL CHECK (stage IN ('PROCESSING', 'RETRYING', 'DONE')),
    items_per_second  double precision NOT NULL CHECK (items_per_second > 0),
    batch_size        integer NOT NULL CHECK (batch_size > 0),
    total_items       integer NOT NULL CHECK (total_items >= 0),
    retries           integer NOT NULL DEFAULT 0,
    creator           text NOT NULL DEFAULT '',
    next_batch_time   timestamptz NOT NULL,  -- the throttle: no batch claimed before it
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL
);
CREATE INDEX jobs_client_idx ON jobs (client_id, create_time DESC, id DESC);
CREATE INDEX jobs_create_idx ON jobs (create_time DESC, id DESC);
CREATE INDEX jobs_running_idx ON jobs (next_batch_time) WHERE status = 'RUNNING';

CREATE TABLE job_batches (
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 1),
    status       text NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'DONE', 'CANCELLED')),
    items        integer NOT NULL CHECK (items > 0),
    succeeded    integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    lease_owner  uuid,
    lease_until  timestamptz,
    update_time  timestamptz NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_batches_open_idx ON job_batches (job_id, seq)
    WHERE status IN ('PENDING', 'RUNNING');

-- The items of each batch; a re-run of failures copies them into new batches.
-- ``secret``: a private key, sealed on arrival (AES-GCM under ``secret_kek_id``).
CREATE TABLE job_items (
    job_id         uuid NOT NULL,
    seq            integer NOT NULL,
    line           integer NOT NULL,
    label          text NOT NULL,
    secret_kek_id  text NOT NULL DEFAULT '',
    secret         bytea NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq, line),
    FOREIGN KEY (job_id, seq) REFERENCES job_batches (job_id, seq) ON DELETE CASCADE
);

-- Failed items with the reason; batch 0 holds rows rejected while reading the file.
-- ``retried``: a later re-run took the item again (its outcome is in that batch).
CREATE TABLE job_failures (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    line       integer NOT NULL,
    label      text NOT NULL,
    reason     text NOT NULL,
    retryable  boolean NOT NULL,
    retried    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, line, seq)
);
CREATE INDEX job_failures_open_idx ON job_failures (job_id, line) WHERE NOT retried;
