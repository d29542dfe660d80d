-- Email & calendar authorization: the org's provider choice and app credentials,
-- each recruiter's grants (one per capability), and single-use OAuth states.
-- Secrets (client secret, access and refresh tokens, PKCE verifiers) are stored
-- sealed by the application (AES-256-GCM); this schema never sees plaintext.

CREATE TABLE provider_settings (
    org_id                INTEGER PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    provider              TEXT NOT NULL CHECK (provider IN ('microsoft', 'google', 'none')),
    client_id             TEXT NOT NULL DEFAULT '',
    client_secret_sealed  TEXT,
    tenant                TEXT,
    access_level          TEXT NOT NULL CHECK (access_level IN ('send_and_view', 'view_only', 'off')),
    consent_state         TEXT NOT NULL CHECK (consent_state IN ('recorded', 'not_required', 'unknown', 'needed')),
    consent_by            INTEGER REFERENCES users(id) ON DELETE SET NULL,
    consent_at            INTEGER,
    consent_detail        TEXT,
    purge_on_deauthorize  INTEGER NOT NULL DEFAULT 0 CHECK (purge_on_deauthorize IN (0, 1)),
    updated_at            INTEGER NOT NULL
);

CREATE TABLE grants (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id                INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id               INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    capability            TEXT NOT NULL CHECK (capability IN ('inbox', 'calendar')),
    provider              TEXT NOT NULL CHECK (provider IN ('microsoft', 'google')),
    status                TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth', 'waiting_admin')),
    status_reason         TEXT,
    account_address       TEXT,
    scopes                TEXT NOT NULL DEFAULT '',
    permission_version    INTEGER NOT NULL,
    legacy                INTEGER NOT NULL DEFAULT 0,
    access_token_sealed   TEXT,
    refresh_token_sealed  TEXT,
    access_expires_at     INTEGER,
    refresh_lease_until   INTEGER,
    refresh_lease_token   INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    UNIQUE (user_id, capability)
);
CREATE INDEX grants_org ON grants(org_id, user_id);

CREATE TABLE oauth_states (
    state_digest          BLOB PRIMARY KEY,
    user_id               INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_digest        BLOB NOT NULL,
    purpose               TEXT NOT NULL,
    pkce_verifier_sealed  TEXT,
    redirect_uri          TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    used_at               INTEGER
);
CREATE INDEX oauth_states_expiry ON oauth_states(expires_at);
