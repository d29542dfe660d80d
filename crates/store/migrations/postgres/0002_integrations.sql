-- Email & calendar authorization: the org's provider choice and app credentials,
-- each recruiter's grants (one per capability), and single-use OAuth states.
-- Secrets (client secret, access and refresh tokens, PKCE verifiers) are stored
-- sealed by the application (AES-256-GCM); this schema never sees plaintext.

CREATE TABLE provider_settings (
    org_id                BIGINT PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    provider              TEXT NOT NULL CHECK (provider IN ('microsoft', 'google', 'none')),
    client_id             TEXT NOT NULL DEFAULT '',
    client_secret_sealed  TEXT,
    tenant                TEXT,
    access_level          TEXT NOT NULL CHECK (access_level IN ('send_and_view', 'view_only', 'off')),
    consent_state         TEXT NOT NULL CHECK (consent_state IN ('recorded', 'not_required', 'unknown', 'needed')),
    consent_by            BIGINT REFERENCES users(id) ON DELETE SET NULL,
    consent_at            BIGINT,
    consent_detail        TEXT,
    purge_on_deauthorize  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE grants (
    id                    BIGSERIAL PRIMARY KEY,
    org_id                BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id               BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    capability            TEXT NOT NULL CHECK (capability IN ('inbox', 'calendar')),
    provider              TEXT NOT NULL CHECK (provider IN ('microsoft', 'google')),
    status                TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth', 'waiting_admin')),
    status_reason         TEXT,
    account_address       TEXT,
    scopes                TEXT NOT NULL DEFAULT '',
    permission_version    BIGINT NOT NULL,
    legacy                BOOLEAN NOT NULL DEFAULT FALSE,
    access_token_sealed   TEXT,
    refresh_token_sealed  TEXT,
    access_expires_at     BIGINT,
    refresh_lease_until   BIGINT,
    refresh_lease_token   BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    UNIQUE (user_id, capability)
);
CREATE INDEX grants_org ON grants(org_id, user_id);

CREATE TABLE oauth_states (
    state_digest          BYTEA PRIMARY KEY,
    user_id               BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_digest        BYTEA NOT NULL,
    purpose               TEXT NOT NULL,
    pkce_verifier_sealed  TEXT,
    redirect_uri          TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    used_at               BIGINT
);
CREATE INDEX oauth_states_expiry ON oauth_states(expires_at);
