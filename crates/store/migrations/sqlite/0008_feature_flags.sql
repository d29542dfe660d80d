-- Feature flags (SQLite): who has a gradually rolled-out feature (Email Connect
-- first). One row per flag: mode 'off' (nobody), 'everyone', or 'targeted'
-- (allowlisted orgs and users, plus percent of the others by a stable hash
-- of the user id, computed by the server). An org may also be opted out
-- (enabled = 0): its users do not get the feature unless allowlisted
-- themselves. 'off' beats everything. version counts changes.
-- Independent of every migration but 0001 (organizations, users).

CREATE TABLE feature_flags (
    name        TEXT    PRIMARY KEY,
    mode        TEXT    NOT NULL CHECK (mode IN ('off', 'everyone', 'targeted')),
    percent     INTEGER NOT NULL DEFAULT 0 CHECK (percent BETWEEN 0 AND 100),
    version     INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER
);

CREATE TABLE feature_flag_orgs (
    flag     TEXT    NOT NULL REFERENCES feature_flags(name) ON DELETE CASCADE,
    org_id   INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    enabled  INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    PRIMARY KEY (flag, org_id)
);

CREATE TABLE feature_flag_users (
    flag     TEXT    NOT NULL REFERENCES feature_flags(name) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (flag, user_id)
);
CREATE INDEX feature_flag_users_user ON feature_flag_users(user_id);

-- A fresh install (and an upgrade) keeps Email Connect usable by everyone
-- until an operator narrows it (hirewire flags set email-connect ...).
INSERT INTO feature_flags (name, mode, percent, version) VALUES ('email_connect', 'everyone', 0, 0);
