-- Email sync (SQLite): per-grant sync progress, recruiters' synced threads and
-- messages that involve candidates, and the message ↔ candidate links.
-- Independent of every other migration but 0001/0002 (organizations, users,
-- candidates, grants), so it applies whether or not 0003 exists yet.
--
-- Mail belongs to the recruiter whose mailbox it came from (owner_user_id).
-- mail_messages.grant_id is a plain column, not a foreign key: deauthorizing
-- (deleting the grant) keeps the mail unless the org purges it, and the purge
-- still finds it by grant id (ids are never reused).

CREATE TABLE mail_sync_state (
    grant_id            INTEGER PRIMARY KEY REFERENCES grants(id) ON DELETE CASCADE,
    phase               TEXT    NOT NULL CHECK (phase IN ('backfill', 'incremental', 'resync')),
    window_start        INTEGER NOT NULL,
    backfill_cursor     TEXT,
    incremental_cursor  TEXT,
    messages_seen       INTEGER NOT NULL DEFAULT 0,
    messages_stored     INTEGER NOT NULL DEFAULT 0,
    last_success_at     INTEGER,
    last_error          TEXT,
    last_error_at       INTEGER,
    version             INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE TABLE mail_threads (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    owner_user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    thread_key     TEXT    NOT NULL,
    subject        TEXT,
    latest_at      INTEGER NOT NULL,
    shared         INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1)),
    shared_by      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    shared_at      INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (owner_user_id, thread_key)
);
CREATE INDEX mail_threads_org_key ON mail_threads(org_id, thread_key);

CREATE TABLE mail_messages (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id               INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    thread_id            INTEGER NOT NULL REFERENCES mail_threads(id) ON DELETE CASCADE,
    owner_user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    grant_id             INTEGER NOT NULL,
    provider_message_id  TEXT    NOT NULL,
    message_id_header    TEXT,
    direction            TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_name            TEXT,
    from_address         TEXT    NOT NULL,
    to_json              TEXT    NOT NULL,
    cc_json              TEXT    NOT NULL,
    subject              TEXT,
    sent_at              INTEGER NOT NULL,
    snippet              TEXT    NOT NULL,
    body_html_sanitized  TEXT,
    body_text            TEXT,
    attachments_json     TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    UNIQUE (grant_id, provider_message_id)
);
CREATE INDEX mail_messages_thread ON mail_messages(thread_id, sent_at, id);
CREATE INDEX mail_messages_org_grant ON mail_messages(org_id, grant_id);

CREATE TABLE mail_message_candidates (
    message_id    INTEGER NOT NULL REFERENCES mail_messages(id) ON DELETE CASCADE,
    candidate_id  INTEGER NOT NULL,
    org_id        INTEGER NOT NULL,
    thread_id     INTEGER NOT NULL REFERENCES mail_threads(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, candidate_id),
    FOREIGN KEY (candidate_id, org_id) REFERENCES candidates(id, org_id) ON DELETE CASCADE
);
CREATE INDEX mail_message_candidates_candidate ON mail_message_candidates(org_id, candidate_id, thread_id);
CREATE INDEX mail_message_candidates_thread ON mail_message_candidates(thread_id);
