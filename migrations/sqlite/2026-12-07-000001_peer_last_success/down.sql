ALTER TABLE peers DROP COLUMN last_success_time;
