-- Token revocation (issue 10): every password change or reset raises the user's token
-- version; access and service tokens carry the version they were issued under and are
-- refused once it is older. It only ever grows (the repository writes GREATEST).
ALTER TABLE users
    ADD COLUMN token_version integer NOT NULL DEFAULT 0 CHECK (token_version >= 0);
