-- A push that arrives while a job runs asks for one more run right after it (see Store::hasten_job).
ALTER TABLE jobs ADD COLUMN rerun_requested INTEGER NOT NULL DEFAULT 0;
