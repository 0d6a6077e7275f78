-- Matchpoint index schema, SQLite, version 1.
CREATE TABLE sources (
    name TEXT PRIMARY KEY,
    cursor TEXT,
    last_success_run INTEGER,
    last_success_at TEXT
) WITHOUT ROWID;

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    read INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    inserted INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    ended INTEGER NOT NULL DEFAULT 0,
    staged INTEGER NOT NULL DEFAULT 0,
    staged_full INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    pid INTEGER
);
CREATE INDEX runs_source ON runs (source, status);

-- Published involvements. "Last seen" is the source's last successful run: unchanged rows
-- are never rewritten.
CREATE TABLE involvements (
    source TEXT NOT NULL,
    source_record_id TEXT NOT NULL,
    person BLOB NOT NULL,
    key_id TEXT NOT NULL,
    organisation_code TEXT NOT NULL,
    organisation_name TEXT NOT NULL,
    team TEXT,
    life_domain TEXT NOT NULL,
    goal TEXT,
    contact_name TEXT NOT NULL,
    contact_role TEXT,
    contact_phone TEXT,
    contact_email TEXT,
    start_date TEXT NOT NULL,
    end_date TEXT,
    status TEXT NOT NULL,
    coordinator INTEGER NOT NULL,
    sensitive INTEGER NOT NULL,
    purge_after TEXT,
    content_hash BLOB NOT NULL,
    first_seen TEXT NOT NULL,
    changed_run INTEGER NOT NULL,
    ended_by_run INTEGER,
    PRIMARY KEY (source, source_record_id)
) WITHOUT ROWID;
-- The person index is created by the store (PERSON_INDEXES in sqlite.rs).

-- Relations between pseudonyms, with the record that delivered them.
CREATE TABLE relations (
    source TEXT NOT NULL,
    source_record_id TEXT NOT NULL,
    person BLOB NOT NULL,
    kind TEXT NOT NULL,
    other BLOB NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (source, source_record_id, kind, other)
) WITHOUT ROWID;
-- The relation index on other: PERSON_INDEXES in sqlite.rs. Relations from a person are
-- found through the person's involvements and the primary key.

-- Rejected records: reason in words (never a BSN or name); the raw record only sealed.
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    source_record_id TEXT,
    record_index INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    field TEXT,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    sealed_raw BLOB,
    sealed_key_id TEXT,
    sealed_expires_at TEXT,
    created_at TEXT NOT NULL,
    replay_of INTEGER,
    resolved_by_run INTEGER
);
CREATE INDEX quarantine_run ON quarantine (run_id, source_record_id);
CREATE INDEX quarantine_source ON quarantine (source, source_record_id);
