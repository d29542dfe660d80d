-- Sync at scale (PostgreSQL): the provider's estimate of a backfill's size (for
-- "n of about m messages" and its ETA), and each inbox's push subscription
-- (Graph change-notification subscription or Gmail watch).
-- Independent of every migration but 0002 (grants).

CREATE TABLE mail_sync_estimates (
    grant_id        BIGINT  PRIMARY KEY REFERENCES grants(id) ON DELETE CASCADE,
    messages_total  BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

-- client_state_sealed: the Graph clientState, sealed with the keyring (Gmail: none).
-- subscription_id: Graph's subscription id; Gmail: the watched history id.
CREATE TABLE push_subscriptions (
    grant_id             BIGINT  PRIMARY KEY REFERENCES grants(id) ON DELETE CASCADE,
    provider             TEXT    NOT NULL CHECK (provider IN ('microsoft', 'google')),
    subscription_id      TEXT    NOT NULL,
    client_state_sealed  TEXT,
    expires_at           BIGINT  NOT NULL,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);
CREATE INDEX push_subscriptions_subscription ON push_subscriptions(subscription_id);
CREATE INDEX push_subscriptions_expiry ON push_subscriptions(expires_at);
