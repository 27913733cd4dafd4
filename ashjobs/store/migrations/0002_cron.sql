-- 2: durable cron slots. A slot (entry name, slot time) is recorded in the same transaction that inserts its
-- job, so a restart, a wall-clock step or a second loop never fires it twice (the primary key refuses it).
CREATE TABLE cron_slots (
    name TEXT NOT NULL,
    slot REAL NOT NULL,
    job_id INTEGER,
    fired_at REAL NOT NULL,
    -- 1 when the slot was fired late by the `missed` policy (catch-up after downtime).
    late INTEGER NOT NULL DEFAULT 0,
    -- 1 when the job insert hit the entry's uniqueness (unique_for) and job_id is the existing job.
    deduped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, slot)
) WITHOUT ROWID;
