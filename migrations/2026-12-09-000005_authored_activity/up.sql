-- Who made each change, and the previous values of the fields it changed.
-- Both are NULL on changes committed before this migration: their author was
-- never recorded.
ALTER TABLE changes ADD COLUMN author TEXT;
ALTER TABLE changes ADD COLUMN prior TEXT;

-- A task's progress, 0 to 100, or NULL when nobody reported one.
ALTER TABLE tasks ADD COLUMN progress INTEGER;

-- Each task's activity: its changes and notes, kept as long as the task is,
-- whatever the change log's pruning does. `agent_id` is the author's agent,
-- for an agent's own history across tasks.
CREATE TABLE activity (
    seq INTEGER PRIMARY KEY NOT NULL,
    task_id BIGINT NOT NULL,
    agent_id BIGINT,
    kind TEXT NOT NULL,
    changed TEXT NOT NULL,
    prior TEXT,
    data TEXT NOT NULL,
    author TEXT,
    at TEXT NOT NULL
);
CREATE INDEX activity_task ON activity(task_id, seq);
CREATE INDEX activity_agent ON activity(agent_id, seq) WHERE agent_id IS NOT NULL;

-- What the change log still holds of existing tasks becomes their activity.
INSERT INTO activity (seq, task_id, agent_id, kind, changed, prior, data, author, at)
    SELECT c.seq, c.entity_id, NULL, c.kind, c.changed, NULL, c.data, NULL, c.at
    FROM changes c JOIN tasks t ON t.id = c.entity_id
    WHERE c.entity = 'task' AND c.kind IN ('created', 'updated')
    ORDER BY c.seq;
