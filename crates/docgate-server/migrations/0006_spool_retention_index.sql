-- Uploads whose spooled documents are still held, by age: the retention sweep (every few
-- seconds) reads only those that are due, instead of every finished upload ever recorded.
CREATE INDEX uploads_spool_held ON uploads (updated_at) WHERE spool_removed = 0;
