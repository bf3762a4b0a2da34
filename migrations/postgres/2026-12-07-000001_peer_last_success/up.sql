-- When a refresh of the peer last applied (Unix seconds); NULL until one
-- does. Kept apart from last_refresh_time, which a failed or refused
-- refresh moves too, so that the age of the cache survives failures.
ALTER TABLE peers ADD COLUMN last_success_time BIGINT;
-- The peers whose last refresh applied: that refresh is the last success.
UPDATE peers SET last_success_time = last_refresh_time WHERE last_refresh_outcome = 1;
