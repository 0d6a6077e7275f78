-- Audit trail (issue 4): append-only, hash-chained entries. See hub/src/audit/mod.rs.
-- Self-contained migration: touches no other table.

CREATE TABLE audit_log (
    seq              INTEGER PRIMARY KEY,   -- 1-based, gapless; the chain position
    at               TEXT    NOT NULL,      -- UTC, RFC 3339 with microseconds and `Z`
    user_id          INTEGER,
    role             TEXT    NOT NULL,
    organisation     TEXT,
    action           TEXT    NOT NULL,
    subject          TEXT,                  -- audit-key pseudonym, hex (never a BSN)
    subject_key_id   TEXT,
    purpose          TEXT,
    outcome          TEXT    NOT NULL,
    checks           TEXT    NOT NULL,      -- JSON array of strings
    break_glass      TEXT,
    records_returned INTEGER NOT NULL,
    client_addr      TEXT,
    request_id       TEXT    NOT NULL,
    refers_to        INTEGER,
    hash             TEXT    NOT NULL       -- hex SHA-256(prev hash || canonical bytes)
);
CREATE INDEX audit_log_user ON audit_log (user_id, seq);
CREATE INDEX audit_log_organisation ON audit_log (organisation, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_refers_to ON audit_log (refers_to) WHERE refers_to IS NOT NULL;

-- The chain head: the last seq and hash. Appenders take the write lock (BEGIN IMMEDIATE)
-- and read it, so appends from several processes are serialised by the database.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The retention path: entries with seq < purge_below may be deleted while it is non-zero.
-- Only `purge_before` sets it, inside the purge transaction, and resets it before commit.
CREATE TABLE audit_retention (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    purge_below INTEGER NOT NULL DEFAULT 0
);
INSERT INTO audit_retention (id, purge_below) VALUES (1, 0);

-- Signed anchors written by each purge: the chain resumes at first_seq from prev_hash.
CREATE TABLE audit_anchors (
    first_seq INTEGER PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    purged_at TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    tag       TEXT NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq >= (SELECT purge_below FROM audit_retention WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused outside the retention path');
END;

CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors is append-only: DELETE refused');
END;
