-- A session by the upload it became: an erasure redacts the session's fields and its
-- resumable uploads' names by `upload_id`, which without this index read every session ever
-- made (inside the SQLite writer's batch, holding up every upload's record meanwhile).
CREATE INDEX upload_sessions_upload ON upload_sessions (upload_id);

-- Erased uploads whose documents are still held (their erasure's removal failed): the
-- retention sweep takes them at once, reading only them.
CREATE INDEX uploads_erased_held ON uploads (updated_at)
    WHERE spool_removed = 0 AND erased_at IS NOT NULL;
