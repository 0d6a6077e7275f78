-- Audit trail (issue 4): append-only, hash-chained entries. See hub/src/audit/mod.rs.
-- Self-contained migration: touches no other table.

CREATE TABLE audit_log (
    seq              bigint      PRIMARY KEY,   -- 1-based, gapless; the chain position
    at               timestamptz NOT NULL,      -- microsecond precision, part of the hash
    user_id          bigint,
    role             text        NOT NULL,
    organisation     text,
    action           text        NOT NULL,
    subject          text,                      -- audit-key pseudonym, hex (never a BSN)
    subject_key_id   text,
    purpose          text,
    outcome          text        NOT NULL,
    checks           text        NOT NULL,      -- JSON array of strings
    break_glass      text,
    records_returned bigint      NOT NULL,
    client_addr      text,
    request_id       text        NOT NULL,
    refers_to        bigint,
    hash             text        NOT NULL       -- hex SHA-256(prev hash || canonical bytes)
);
CREATE INDEX audit_log_user ON audit_log (user_id, seq);
CREATE INDEX audit_log_organisation ON audit_log (organisation, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_refers_to ON audit_log (refers_to) WHERE refers_to IS NOT NULL;

-- The chain head. Every append transaction takes `SELECT ... FOR UPDATE` on this row, so
-- appends from several server instances are serialised in the database.
CREATE TABLE audit_head (
    id   smallint PRIMARY KEY CHECK (id = 1),
    seq  bigint   NOT NULL,
    hash text     NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The retention path: entries with seq < purge_below may be deleted while it is non-zero.
-- Only `purge_before` sets it, inside the purge transaction (invisible to other sessions
-- until commit), and resets it before commit.
CREATE TABLE audit_retention (
    id          smallint PRIMARY KEY CHECK (id = 1),
    purge_below bigint   NOT NULL DEFAULT 0
);
INSERT INTO audit_retention (id, purge_below) VALUES (1, 0);

-- Signed anchors written by each purge: the chain resumes at first_seq from prev_hash.
CREATE TABLE audit_anchors (
    first_seq bigint      PRIMARY KEY,
    prev_hash text        NOT NULL,
    purged_at timestamptz NOT NULL,
    key_id    text        NOT NULL,
    tag       text        NOT NULL
);

CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.seq < (SELECT purge_below FROM audit_retention WHERE id = 1) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused outside the retention path', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_append_only_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only_guard();
CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_append_only_guard();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only_guard();
