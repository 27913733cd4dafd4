-- 5: the cluster. A snapshot of the scheduler's poller registry for `ashjobs peers` (other processes), the
-- counter of results refused for a stale fencing token.
CREATE TABLE peers (
    key TEXT PRIMARY KEY,  -- the node's name, or the address of a peer not reached yet
    node TEXT,
    address TEXT NOT NULL,
    partition TEXT,
    domains TEXT NOT NULL DEFAULT '[]',
    capacity INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    last_heartbeat REAL,
    source TEXT NOT NULL CHECK (source IN ('mdns', 'static', 'registered')),
    scheduler TEXT NOT NULL,  -- the node whose registry this row comes from
    updated_at REAL NOT NULL
);
INSERT INTO counters(name, value) VALUES ('stale_results_refused', 0);
