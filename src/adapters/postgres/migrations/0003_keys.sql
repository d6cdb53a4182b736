-- Key batches made before manufacturing; each tag key's private half sealed (AES-GCM under a
-- KEK named by id). Tags are allocated to a client by MAC, then imported as trackers.
CREATE TABLE key_batches (
    id           uuid PRIMARY KEY,
    label        text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    size         integer NOT NULL CHECK (size > 0),
    kek_id       text NOT NULL,
    create_time  timestamptz NOT NULL
);

CREATE TABLE tag_keys (
    id                        uuid PRIMARY KEY,
    batch_id                  uuid NOT NULL REFERENCES key_batches (id),
    seq                       integer NOT NULL,
    mac_address               text NOT NULL,
    advertisement_key         bytea NOT NULL CHECK (length(advertisement_key) = 28),
    hashed_advertisement_key  bytea NOT NULL CHECK (length(hashed_advertisement_key) = 32),
    private_key_ciphertext    bytea NOT NULL,
    private_key_kek_id        text NOT NULL,
    client_id                 uuid REFERENCES clients (id),
    allocate_time             timestamptz,
    CONSTRAINT tag_keys_mac_address_key UNIQUE (mac_address),
    CONSTRAINT tag_keys_advertisement_key_key UNIQUE (advertisement_key),
    UNIQUE (batch_id, seq)
);
CREATE INDEX tag_keys_client_id_idx ON tag_keys (client_id);

-- A tracker's private key is either absent or sealed with its KEK id.
ALTER TABLE trackers ADD CHECK ((private_key_ciphertext IS NULL) = (private_key_kek_id IS NULL));
