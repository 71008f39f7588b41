-- Upload sessions: a tenant's backend mints one for a browser, which holds only its token
-- (stored here as a SHA-256 hash, never in clear). The upload id is chosen at creation, so
-- every document received for the session is spooled under it from the first byte.
CREATE TABLE upload_sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    -- the tenant's fields (JSON object); the browser may add missing ones, never change them
    fields TEXT NOT NULL,
    -- the document slots expected (JSON array of names)
    slots TEXT NOT NULL,
    max_bytes BIGINT,
    origin TEXT,
    -- open | completing | accepted | revoked | expired
    state TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX upload_sessions_expiry ON upload_sessions (state, expires_at);

-- Resumable (tus) uploads: one document of a session, received in pieces. The PATCH lock
-- lives here, so it holds across replicas.
CREATE TABLE tus_uploads (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    -- NULL until the client says (Upload-Defer-Length)
    length BIGINT,
    received BIGINT NOT NULL,
    filename TEXT,
    filetype TEXT,
    -- committed pieces (JSON array of {key, len}), in order
    pieces TEXT NOT NULL,
    -- receiving | complete | terminated | refused
    state TEXT NOT NULL,
    -- the checked document (JSON), once complete
    meta TEXT,
    lock_owner TEXT,
    lock_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tus_uploads_session ON tus_uploads (session_id, slot);
