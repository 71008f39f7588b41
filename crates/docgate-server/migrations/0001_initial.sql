-- The schema as it stood before versioned migrations. Every statement is idempotent, so a
-- ledger created by an earlier docgate is adopted as version 1 unchanged.
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    prepared TEXT NOT NULL,
    documents TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    last_upstream_status BIGINT,
    last_error TEXT,
    provider_reference TEXT,
    problem TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    notify_state TEXT NOT NULL,
    notify_attempts BIGINT NOT NULL DEFAULT 0,
    notify_next_at BIGINT,
    spool_removed BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS uploads_idempotency ON uploads (tenant, idempotency_key);
CREATE INDEX IF NOT EXISTS uploads_due ON uploads (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS uploads_notify ON uploads (notify_state, notify_next_at);
CREATE TABLE IF NOT EXISTS upload_refs (
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    tenant TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    PRIMARY KEY (provider, reference, tenant)
);
CREATE TABLE IF NOT EXISTS provider_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
