-- Ownership: every identifier a provider hands out (an S3 key, an OST user id, a Sila
-- document id) has exactly one owning tenant, the first one. `upload_refs` allowed several
-- tenants per identifier, which let a second tenant take over another's OST user.
CREATE TABLE owned_refs (
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    tenant TEXT NOT NULL,
    -- the upload id, or what handed it out (`presigned-post`, `kyc-submit`)
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, kind, value)
);
CREATE INDEX owned_refs_tenant ON owned_refs (tenant, provider, kind);

-- OST users submitted by one tenant keep their owner. A user several tenants submitted for
-- under the old rule is owned by no real tenant (`-contested-`): nobody sees its events
-- until an operator assigns it, rather than the wrong tenant.
INSERT INTO owned_refs (provider, kind, value, tenant, source, created_at)
SELECT provider, 'user', substr(reference, 6),
       CASE WHEN COUNT(DISTINCT tenant) = 1 THEN MIN(tenant) ELSE '-contested-' END,
       'migrated', 0
FROM upload_refs
WHERE provider = 'ost' AND reference LIKE 'user:%'
GROUP BY provider, reference;

-- Other OST references are S3 keys (random per request, so never contested).
INSERT INTO owned_refs (provider, kind, value, tenant, source, created_at)
SELECT provider, 's3_key', reference, MIN(tenant), MIN(upload_id), 0
FROM upload_refs
WHERE provider = 'ost' AND reference NOT LIKE 'user:%' AND reference LIKE '%/%'
GROUP BY provider, reference;

DROP TABLE upload_refs;

-- What an event is about, so a tenant is shown only events about what it owns.
ALTER TABLE provider_events ADD COLUMN subject_kind TEXT;
ALTER TABLE provider_events ADD COLUMN subject TEXT;
CREATE INDEX provider_events_subject ON provider_events (provider, subject_kind, subject);
