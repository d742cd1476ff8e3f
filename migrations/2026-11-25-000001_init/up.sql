-- Entities, the durable change log, tokens, remembered op_ids and the epoch.
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    reported_status TEXT NOT NULL,
    current_task_id INTEGER,
    last_heartbeat_at TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    assignee_id INTEGER REFERENCES agents(id) ON DELETE SET NULL,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX tasks_assignee ON tasks(assignee_id);

CREATE TABLE changes (
    seq BIGINT PRIMARY KEY NOT NULL,
    entity TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    changed TEXT NOT NULL,
    data TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX changes_entity ON changes(entity, entity_id, seq);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    agent_id BIGINT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE ops (
    token_id BIGINT NOT NULL,
    op_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    reply TEXT NOT NULL,
    seq BIGINT,
    at TEXT NOT NULL,
    PRIMARY KEY (token_id, op_id)
);
CREATE INDEX ops_at ON ops(at);
