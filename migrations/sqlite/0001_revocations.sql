-- The embedded revocation list (store.backend = "embedded"). Same entries and rules as the
-- DynamoDB table in ../dynamodb/; applied by `revokd migrate` and on first open.
CREATE TABLE revocations (
    session_id   TEXT PRIMARY KEY NOT NULL,
    type         TEXT NOT NULL CHECK (type IN ('MANUAL', 'AUTO', 'UNREVOKED', 'HELD')),
    reason       TEXT NOT NULL,
    score        REAL,
    -- JSON object: signal name -> value, as the detection query returned them.
    signals      TEXT NOT NULL DEFAULT '{}',
    first_seen   INTEGER NOT NULL,   -- epoch seconds
    last_updated INTEGER NOT NULL,   -- epoch seconds
    expires_at   INTEGER NOT NULL,   -- epoch seconds; past it the entry counts for nothing
    run_id       TEXT
) STRICT;

-- Listing what is revoked now is the enforcer's query of every run.
CREATE INDEX revocations_active ON revocations (expires_at) WHERE type IN ('MANUAL', 'AUTO');
