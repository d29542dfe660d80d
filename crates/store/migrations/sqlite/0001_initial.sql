-- hirewire initial schema (SQLite). Instants are INTEGER unix milliseconds (UTC),
-- written by the application; the database clock is never used.
-- Case-insensitive keys (email_key, address_key, name_key) are computed in Rust.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE org_domains (
    org_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    domain  TEXT    NOT NULL,
    PRIMARY KEY (org_id, domain)
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email          TEXT    NOT NULL,
    email_key      TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'recruiter')),
    time_zone      TEXT    NOT NULL,
    password_hash  TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX users_org ON users(org_id, id);

CREATE TABLE sessions (
    token_digest  BLOB    PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    token_digest  BLOB    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens(user_id, id);

CREATE TABLE candidates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    name_key    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (id, org_id)
);
CREATE INDEX candidates_org ON candidates(org_id, id);

CREATE TABLE candidate_emails (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id  INTEGER NOT NULL,
    org_id        INTEGER NOT NULL,
    address       TEXT    NOT NULL,
    address_key   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    FOREIGN KEY (candidate_id, org_id) REFERENCES candidates(id, org_id) ON DELETE CASCADE,
    UNIQUE (org_id, address_key)
);
CREATE INDEX candidate_emails_candidate ON candidate_emails(candidate_id, id);

CREATE TABLE inmail_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL,
    candidate_id    INTEGER NOT NULL,
    author_user_id  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    body            TEXT    NOT NULL,
    sent_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    FOREIGN KEY (candidate_id, org_id) REFERENCES candidates(id, org_id) ON DELETE CASCADE
);
CREATE INDEX inmail_candidate ON inmail_messages(org_id, candidate_id, sent_at, id);

CREATE TABLE audit_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         INTEGER REFERENCES organizations(id) ON DELETE CASCADE,
    actor_user_id  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    action         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    ip             TEXT,
    at             INTEGER NOT NULL
);
CREATE INDEX audit_org ON audit_events(org_id, id);

CREATE TABLE idempotency_keys (
    user_id              INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key                  TEXT    NOT NULL,
    request_fingerprint  TEXT    NOT NULL,
    response_status      INTEGER,
    response_body        BLOB,
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_created ON idempotency_keys(created_at);

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    run_at         INTEGER NOT NULL,
    lease_until    INTEGER,
    lease_owner    TEXT,
    fencing_token  INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    dedupe_key     TEXT,
    created_at     INTEGER NOT NULL,
    finished_at    INTEGER
);
CREATE INDEX jobs_due ON jobs(status, run_at);
CREATE INDEX jobs_lease ON jobs(status, lease_until);
CREATE UNIQUE INDEX jobs_dedupe_unfinished ON jobs(dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
