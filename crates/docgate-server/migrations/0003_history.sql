-- The history of each upload: what happened to it, in order (received, each attempt with
-- its time, duration, upstream status and error, the final outcome, and what operators
-- did: retried, canceled, erased).
CREATE TABLE upload_events (
    upload_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- JSON object: attempt, duration_ms, upstream_status, error, … (kind-specific)
    detail TEXT NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
-- The next event number of each upload (taken under the row's lock).
ALTER TABLE uploads ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
-- Erasure keeps a tombstone: when it happened.
ALTER TABLE uploads ADD COLUMN erased_at BIGINT;
-- A tenant's uploads, newest first, page by page.
CREATE INDEX uploads_listing ON uploads (tenant, created_at, id);
