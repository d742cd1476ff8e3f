-- Browser sessions made by /login: the cookie holds a random secret, only its
-- SHA-256 is stored; a session acts with the rights of the token it came from.
CREATE TABLE web_sessions (
    hash TEXT PRIMARY KEY NOT NULL,
    token_id BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX web_sessions_token ON web_sessions(token_id);
