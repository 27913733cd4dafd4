-- 1: the job table, attempts history, queue state, counters.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 20,
    errors TEXT NOT NULL DEFAULT '[]',
    scheduled_at REAL NOT NULL,
    inserted_at REAL NOT NULL,
    attempted_at REAL,
    completed_at REAL,
    cancelled_at REAL,
    discarded_at REAL,
    unique_key TEXT,
    unique_states INTEGER NOT NULL DEFAULT 0,
    partition TEXT,
    domain TEXT,
    actor TEXT,
    timeout REAL,
    lease_owner TEXT,
    lease_token INTEGER,
    lease_expires_at REAL
);
-- Uniqueness is the database's job: the key is set only while the job is in one of its unique states.
CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key) WHERE unique_key IS NOT NULL;
-- Claiming: available jobs of a queue (unrouted: partition IS NULL) in priority order.
CREATE INDEX jobs_fetch ON jobs(state, queue, partition, priority, scheduled_at);
-- Staging scheduled/retryable jobs whose time has come; lifeline over executing leases.
CREATE INDEX jobs_due ON jobs(state, scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX jobs_leases ON jobs(lease_expires_at) WHERE state = 'executing';
-- Pruning needs no index of its own: ids grow with insertion time, so it scans the oldest ids only.

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    node TEXT,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'timeout', 'lost', 'cancelled')),
    error TEXT,
    duration REAL NOT NULL
);
CREATE INDEX attempts_job ON attempts(job_id, attempt);
CREATE INDEX attempts_finished ON attempts(finished_at);

CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters(name, value) VALUES ('fencing_token', 0);
