-- Matchpoint schema, SQLite: API users and the shielded-person flag.
-- Users of the lookup API. The token is stored only as its SHA-256 hash.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    organisation TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    token_hash BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

-- Persons whose involvements must never be answered through break-the-glass (e.g. a
-- protected address). Set by the mapping; 0 until a source delivers it.
ALTER TABLE involvements ADD COLUMN shielded INTEGER NOT NULL DEFAULT 0;
