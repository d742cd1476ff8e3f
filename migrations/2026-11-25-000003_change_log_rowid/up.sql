-- The change log keyed by its rowid. `seq BIGINT PRIMARY KEY` was not a rowid
-- alias, so every change also went into a separate unique index; and the index
-- by entity put each write on its own random page. Both were pages written and
-- fdatasync'd on every commit. Reads of one entity's changes now scan the seq
-- range instead, which is bounded (see `changes_since`).
CREATE TABLE changes_by_seq (
    seq INTEGER PRIMARY KEY NOT NULL,
    entity TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    changed TEXT NOT NULL,
    data TEXT NOT NULL,
    at TEXT NOT NULL
);
INSERT INTO changes_by_seq (seq, entity, entity_id, kind, changed, data, at)
    SELECT seq, entity, entity_id, kind, changed, data, at FROM changes ORDER BY seq;
DROP TABLE changes;
ALTER TABLE changes_by_seq RENAME TO changes;
