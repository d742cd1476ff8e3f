CREATE TABLE changes_old (
    seq BIGINT PRIMARY KEY NOT NULL,
    entity TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    changed TEXT NOT NULL,
    data TEXT NOT NULL,
    at TEXT NOT NULL
);
INSERT INTO changes_old SELECT seq, entity, entity_id, kind, changed, data, at FROM changes ORDER BY seq;
DROP TABLE changes;
ALTER TABLE changes_old RENAME TO changes;
CREATE INDEX changes_entity ON changes(entity, entity_id, seq);
