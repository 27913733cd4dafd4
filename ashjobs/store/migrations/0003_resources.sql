-- 3: resources (state machines) and triggers. Record tables are made from each resource's declaration
-- (ashjobs/store/resources.py); here live the tables every resource and trigger shares.

-- One row per state change of a record, written in the transaction that made it.
CREATE TABLE resource_history (
    id INTEGER PRIMARY KEY,
    resource TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    job_id INTEGER,
    at REAL NOT NULL,
    reason TEXT
);
CREATE INDEX resource_history_record ON resource_history(resource, record_id, id);

-- What `triggers list` shows about each trigger's last scheduler run and its workers' outcomes.
CREATE TABLE trigger_state (
    trigger TEXT PRIMARY KEY,
    last_fire_at REAL,
    last_matched INTEGER,
    last_enqueued INTEGER,
    last_outcome TEXT,
    last_error TEXT,
    workers_completed INTEGER NOT NULL DEFAULT 0,
    workers_cancelled INTEGER NOT NULL DEFAULT 0,
    workers_discarded INTEGER NOT NULL DEFAULT 0,
    last_worker_outcome TEXT,
    last_worker_at REAL
);
