-- The link's token, sealed with the server keyring (AES-256-GCM), so the
-- recruiter can copy the link again later. Lookups still go by token_digest;
-- the store never sees the token in clear.
ALTER TABLE scheduling_links ADD COLUMN token_sealed TEXT;
-- The meeting the link offers (kind, duration, buffers, location) as JSON,
-- fixed when the link is made: changing one's settings later does not change
-- what a candidate was already sent.
ALTER TABLE scheduling_links ADD COLUMN meeting TEXT;
