-- 4: the notification outbox and its delivery history, trace summaries, poll-check failure streaks.

-- One row per notification; delivered by a job on queue "notifications" (job_id), put in the same
-- transaction as the change that caused it. status: pending (until every channel accepted it), sent, failed.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    actor TEXT,
    source TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER,
    created_at REAL NOT NULL,
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX notifications_status ON notifications(status, id);

-- Every try of one channel for one notification: the history behind `notifications list`.
CREATE TABLE notification_deliveries (
    id INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'failed')),
    code INTEGER,
    error TEXT,
    at REAL NOT NULL,
    duration REAL NOT NULL DEFAULT 0
);
CREATE INDEX notification_deliveries_notification ON notification_deliveries(notification_id, id);

-- Attempts rolled up per (task, queue, bucket start); a bucket is always rewritten whole, never added to.
CREATE TABLE trace_summaries (
    bucket REAL NOT NULL,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    count INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    lost INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    p50 REAL NOT NULL,
    p95 REAL NOT NULL,
    max_duration REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (bucket, task, queue)
);
CREATE TABLE trace_summary_state (
    name TEXT PRIMARY KEY,
    watermark REAL NOT NULL
);

-- Consecutive failures of each [[poll]] entry, and whether it has an alert raised.
CREATE TABLE poll_state (
    name TEXT PRIMARY KEY,
    partition TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    alerting INTEGER NOT NULL DEFAULT 0,
    last_outcome TEXT,
    last_error TEXT,
    last_job_id INTEGER,
    updated_at REAL NOT NULL
);
