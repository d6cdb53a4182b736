-- Users, their client memberships and refresh tokens; locations carry their client for
-- tenant filtering (kept equal to their production run's by a composite foreign key).
CREATE TABLE users (
    id             uuid PRIMARY KEY,
    email          text NOT NULL CHECK (email = lower(email) AND length(email) <= 320),
    display_name   text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    password_hash  text NOT NULL,
    admin          boolean NOT NULL DEFAULT false,
    create_time    timestamptz NOT NULL,
    update_time    timestamptz NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE memberships (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('CLIENT_ADMIN', 'VIEWER')),
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX memberships_client_id_idx ON memberships (client_id, user_id);

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);

ALTER TABLE locations ADD COLUMN client_id uuid;
UPDATE locations l SET client_id = r.client_id FROM production_runs r
 WHERE r.id = l.production_run_id;
ALTER TABLE locations ALTER COLUMN client_id SET NOT NULL;
ALTER TABLE locations ADD FOREIGN KEY (production_run_id, client_id)
    REFERENCES production_runs (id, client_id);
CREATE INDEX locations_client_id_idx ON locations (client_id, id);
