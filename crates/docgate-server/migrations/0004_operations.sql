-- Operators' controls over an upload (cancel, retry, erase).
-- A cancel that arrives while an attempt is in flight cannot stop it (the provider may be
-- receiving the documents right now): the flag tells the lease holder to record that attempt
-- and then stop instead of trying again.
ALTER TABLE uploads ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
-- When the current series of attempts began: creation, or the latest retry. The give-up age
-- counts from here, so a retried upload gets a full series and is not failed at once for
-- being old.
ALTER TABLE uploads ADD COLUMN series_started_at BIGINT;
