-- Idempotent creates (issue 15, AIP-155): one row per request_id within its scope (the
-- caller and the RPC). While the first call runs, response is NULL and lease_until says how
-- long it holds the key; then the response is kept for retries until expire_time (24 hours,
-- domain/idempotency.IDEMPOTENCY_TTL). Expired rows never answer a retry; they are deleted
-- as creates come (usecases/idempotency: up to PURGE_BATCH every PURGE_EVERY first calls).
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    request_id   text        NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    fingerprint  bytea       NOT NULL,
    response     bytea,
    lease_until  timestamptz NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    expire_time  timestamptz NOT NULL,
    PRIMARY KEY (scope, request_id)
);
CREATE INDEX idempotency_keys_expire_time ON idempotency_keys (expire_time);
