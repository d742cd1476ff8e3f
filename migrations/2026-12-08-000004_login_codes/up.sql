-- One-time login codes: a printed login link carries a code, not a token, and a
-- POST to /login exchanges it for a browser session once. Only the code's
-- SHA-256 is stored. A used code keeps its row (used_at) until it is pruned a
-- day after it expired, so a second use can be told "already used" rather
-- than "unknown".
CREATE TABLE login_codes (
    hash TEXT PRIMARY KEY NOT NULL,
    token_id BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
